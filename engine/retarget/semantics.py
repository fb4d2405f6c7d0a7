"""The model's motion in words: mouth measures on the template's output mapped to ARKit, VRM and
Rhubarb channels -- the path for a rig that has only named keys and no fit.

Measures per frame (template units, divided by the template's mouth width ``W`` so they are
scale-free), all from the model-agnostic ``(T, V, 3)`` output and the topology's masks:

* ``open``    inner-lip gap (median over the contact pairs) / (0.75 W)   -- ~1 at a wide-open jaw
* ``jaw``     drop of the lower contact row's centre / (0.75 W)
* ``width``   change of the mouth-corner distance / (0.15 W)            -- + stretched, - narrowed
* ``protrude``forward motion of both contact rows / (0.08 W)
* ``raise``   upward motion of the upper contact row / (0.08 W)
* ``contact`` the contact gate of :func:`engine.retarget.transfer.contact_gate`

The ARKit map follows Apple's channel descriptions (jawOpen, mouthClose = lips together while
the jaw is open, mouthFunnel/mouthPucker = rounding open/closed, mouthStretch, mouthPress,
mouthUpperUp, mouthLowerDown).  Rhubarb's nine shapes are scored by distance to a prototype
in measure space (a soft arg-min, so at most two shapes are active at a time).  These maps are
hand-set, not learned: they say "more open" or "rounder" correctly, but amplitudes are only
roughly calibrated (see the README's limits).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from engine.retarget.names import map_names

__all__ = ["channel_weights", "mouth_measures"]


def mouth_measures(frames: np.ndarray, topology: Any, fps: float) -> dict[str, np.ndarray]:
    from engine.metrics import default_closure_threshold, inner_lip_gap
    from engine.retarget.transfer import contact_gate

    F = np.asarray(frames, np.float64)
    rest = np.asarray(topology.vertices, np.float64)
    m = topology.masks
    up, lo = m["lip_upper_inner"], m["lip_lower_inner"]
    c_l, c_r = up[np.argmax(rest[up, 0])], up[np.argmin(rest[up, 0])]
    W = float(rest[c_l, 0] - rest[c_r, 0])
    gap = inner_lip_gap(F, up, lo)
    rest_gap = float(inner_lip_gap(rest[None], up, lo)[0])
    mid = len(lo) // 2
    d = F - rest[None]
    width = np.linalg.norm(F[:, c_l] - F[:, c_r], axis=1) - np.linalg.norm(rest[c_l] - rest[c_r])
    thr = default_closure_threshold(rest, m.get("face"))
    return {
        "open": np.clip((gap - rest_gap) / (0.75 * W), 0, None),
        "jaw": np.clip(-d[:, lo[max(0, mid - 2):mid + 3], 2].mean(1) / (0.75 * W), 0, None),
        "width": width / (0.15 * W),
        "protrude": -d[:, np.concatenate([up, lo]), 1].mean(1) / (0.08 * W),
        "raise": d[:, up, 2].mean(1) / (0.08 * W),
        "contact": contact_gate(gap, thr, fps),
    }


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


def _arkit(ms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    o, j, w, p, r, c = (ms[k] for k in ("open", "jaw", "width", "protrude", "raise", "contact"))
    jaw = _clip(np.maximum(j, o))
    rounding = _clip(-w) * 0.5 + _clip(p) * 0.5
    out = {
        "jawOpen": jaw,
        "mouthClose": _clip(j - o) * (1 - _clip(o * 4)),
        "mouthFunnel": _clip(rounding * _clip(o * 3)),
        "mouthPucker": _clip(rounding * (1 - _clip(o * 3))),
        "mouthPressLeft": 0.6 * c, "mouthPressRight": 0.6 * c,
        "mouthStretchLeft": _clip(w * 0.6), "mouthStretchRight": _clip(w * 0.6),
        "mouthUpperUpLeft": _clip(r * 0.7), "mouthUpperUpRight": _clip(r * 0.7),
        "mouthLowerDownLeft": _clip((o - j) * 2), "mouthLowerDownRight": _clip((o - j) * 2),
    }
    return out


def _vrm(ms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    o, w, p = ms["open"], ms["width"], ms["protrude"]
    rnd = _clip(0.5 * _clip(-w) + 0.5 * _clip(p))
    return {"aa": _clip(o * 1.5) * (1 - rnd), "oh": _clip(o * 1.5) * rnd, "ou": rnd * (1 - _clip(o * 3)),
            "ee": _clip(w) * (1 - rnd) * _clip(o * 4 + 0.2), "ih": _clip(w * 0.5) * (1 - _clip(o * 2)) * (1 - rnd)}


# Rhubarb prototypes in (open, width, round, contact)
_RHUBARB_PROTO = {"A": (0.0, 0.0, 0.0, 1.0), "B": (0.08, 0.6, 0.0, 0.0), "C": (0.3, 0.3, 0.0, 0.0),
                  "D": (0.7, 0.2, 0.0, 0.0), "E": (0.25, -0.2, 0.6, 0.0), "F": (0.05, -0.6, 1.0, 0.0),
                  "G": (0.05, 0.0, 0.0, 0.0), "H": (0.35, 0.1, 0.0, 0.0), "X": (0.0, 0.0, 0.0, 0.0)}


def _rhubarb(ms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rnd = _clip(0.5 * _clip(-ms["width"]) + 0.5 * _clip(ms["protrude"]))
    x = np.stack([ms["open"], np.clip(ms["width"], -1, 1), rnd, ms["contact"]], 1)
    names = [k for k in _RHUBARB_PROTO if k != "G"]      # G (F/V) cannot be told from the measures
    P = np.array([_RHUBARB_PROTO[k] for k in names])
    d2 = ((x[:, None, :] - P[None]) ** 2).sum(-1)
    z = np.exp(-(d2 - d2.min(1, keepdims=True)) / 0.01)
    z[z < 0.1] = 0.0
    z /= z.sum(1, keepdims=True)
    return {k: z[:, i] for i, k in enumerate(names)}


def channel_weights(frames: np.ndarray, topology: Any, fps: float, key_names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Weights per key name (only keys whose names map), and the reason each other key is left alone."""
    ms = mouth_measures(frames, topology, fps)
    mapping = map_names(key_names)
    fams = {"arkit": _arkit(ms), "vrm": _vrm(ms), "rhubarb": _rhubarb(ms)}
    out, reasons = {}, {}
    for n in key_names:
        if n not in mapping:
            reasons[n] = "name not recognised (ARKit, VRM or Rhubarb)"
            continue
        fam, ch = mapping[n]
        w = fams[fam].get(ch)
        if w is None:
            reasons[n] = f"{fam} channel {ch} is not driven by speech"
            continue
        out[n] = np.asarray(w, np.float32)
    return out, reasons
