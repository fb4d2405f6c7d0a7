"""Training objectives.

Eq. 4 of Wu et al.: ``L = L_l2 + beta * ||W||_1`` with ``beta = 1e-4``.

The paper writes ``L_l2 = sum_i ||S_hat_i - S_i||_2``.  We follow the authors' released
training code, which is the *squared* error summed over all ``3N`` coordinates of a frame and
averaged over frames (and batch items), computed in the model's normalised vertex units (see
:mod:`engine.models.composite_regional`): the squared form has the usual well-behaved gradient at
zero error, and the per-frame *sum* over vertices is what balances the ``beta ||W||_1`` term the
way the paper's ``beta = 1e-4`` was tuned for.  ``reconstruction_loss(..., squared=False)`` gives
the literal Euclidean-norm variant.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["reconstruction_loss", "sparsity_loss", "composite_regional_loss", "LossTerms"]


@dataclass
class LossTerms:
    total: Tensor
    l2: Tensor
    reg: Tensor

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "l2": float(self.l2.detach()), "reg": float(self.reg.detach())}


def reconstruction_loss(pred: Tensor, target: Tensor, scale: Tensor | float = 1.0,
                        mask: Tensor | None = None, squared: bool = True) -> Tensor:
    """Per-frame l2 between ``(B, T, V, 3)`` sequences, averaged over frames.

    ``scale`` divides both sequences first (the model's ``coord_scale``) so the loss does not
    depend on the dataset's units.  ``mask`` ``(B, T)`` (1 = real frame) excludes padding.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    diff = (pred - target) / scale
    per_frame = diff.pow(2).sum(dim=(-1, -2))                 # squared norm over all 3N coordinates
    if not squared:
        per_frame = torch.sqrt(per_frame + 1e-12)
    if mask is None:
        return per_frame.mean()
    mask = mask.to(per_frame.dtype)
    return (per_frame * mask).sum() / mask.sum().clamp_min(1.0)


def sparsity_loss(W: Tensor) -> Tensor:
    """``||W||_1`` (eq. 4's regulariser)."""
    return W.abs().sum()


def composite_regional_loss(model, pred: Tensor, target: Tensor, beta: float = 1e-4,
                            mask: Tensor | None = None, squared: bool = True) -> LossTerms:
    """Eq. 4 for :class:`~engine.models.composite_regional.CompositeRegionalModel`."""
    l2 = reconstruction_loss(pred, target, model.coord_scale, mask=mask, squared=squared)
    reg = sparsity_loss(model.W)
    return LossTerms(total=l2 + beta * reg, l2=l2, reg=reg)
