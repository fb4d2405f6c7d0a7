"""The distance threshold ``mu`` of SelfTalk's lip readability percentage (LRP, paper 002 eq. 18).

The paper does not state ``mu``, and any value is tied to the data's units, so we fix one rule,
chosen once for SynthTalk before looking at any model's results and used for every method:

    mu = 1% of the bounding-box diagonal of the face region of the template

On the SynthTalk head (face diagonal 0.233 m) that is 2.33 mm -- twice the inner-lip gap under
which a bilabial counts as closed (:func:`engine.metrics.default_closure_threshold`, 0.5%): a
lip vertex within ``mu`` of the truth is close enough that an open/closed or rounded/spread mouth
shape cannot be mistaken for the other.  Being relative to the face size, the rule means the same
on a mesh in metres or millimetres.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LRP_FACE_FRACTION", "lrp_threshold"]

LRP_FACE_FRACTION = 0.01


def lrp_threshold(template: np.ndarray, face_mask: Any | None = None) -> float:
    """``mu`` for :func:`engine.metrics.lip_readability_percentage`, in the template's units."""
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    if face_mask is not None:
        idx = np.asarray(face_mask, dtype=np.int64)
        if idx.size == 0:
            raise ValueError("the face mask is empty; cannot size the LRP threshold")
        t = t[idx]
    return float(LRP_FACE_FRACTION * np.linalg.norm(t.max(0) - t.min(0)))
