"""Keyframe reduction for shape-key weight curves (no ``bpy``: unit-tested under plain Python).

Why: the engine returns one weight per frame per key. Dense curves (one key per frame) are
exact but an animator cannot edit them; a few keys per syllable can be. The reduction is
Ramer-Douglas-Peucker (Ramer 1972; Douglas & Peucker 1973) on each curve with the *vertical*
distance (the weight error at that frame), not the perpendicular one: time and weight have
different units, and what matters on screen is the weight at each frame.

RDP bounds the error of straight segments between keys. Blender then draws Bezier curves with
auto-clamped handles through the kept keys, which can overshoot a straight segment a little,
so :func:`refine_keys` adds the worst frame of every segment still off by more than the
tolerance once the real curve has been evaluated (``bake`` side, with ``FCurve.evaluate``);
repeated until the written curve itself is within tolerance.
"""
from __future__ import annotations

import numpy as np

__all__ = ["rdp_keys", "refine_keys", "reduction_error"]


def rdp_keys(values: np.ndarray, tol: float) -> np.ndarray:
    """Indices (sorted, first and last always) of the frames to key so that linear
    interpolation between them is within ``tol`` of ``values`` at every frame."""
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(y)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if tol < 0 or not np.isfinite(tol):
        raise ValueError(f"tolerance must be a finite value >= 0, got {tol}")
    if not np.all(np.isfinite(y)):
        raise ValueError("the curve has non-finite values")
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        t = np.arange(a + 1, b)
        line = y[a] + (y[b] - y[a]) * (t - a) / (b - a)
        err = np.abs(y[a + 1:b] - line)
        k = int(np.argmax(err))
        if err[k] > tol:
            m = a + 1 + k
            keep[m] = True
            stack.append((a, m))
            stack.append((m, b))
    return np.nonzero(keep)[0]


def refine_keys(keys: np.ndarray, error: np.ndarray, tol: float) -> np.ndarray:
    """``keys`` plus, for every segment between two keys where ``error`` (per frame, of the
    curve as drawn) exceeds ``tol``, the frame where it is largest. Returns ``keys`` unchanged
    (same values) when nothing exceeds ``tol``."""
    keys = np.asarray(keys, dtype=np.int64)
    err = np.abs(np.asarray(error, dtype=np.float64).reshape(-1))
    bad = err > tol
    bad[keys] = False  # a keyed frame is exact (or cannot be improved by keying it again)
    if not bad.any():
        return keys
    seg = np.searchsorted(keys, np.nonzero(bad)[0])  # segment index of each bad frame
    add = []
    frames = np.nonzero(bad)[0]
    for s in np.unique(seg):
        f = frames[seg == s]
        add.append(int(f[np.argmax(err[f])]))
    return np.union1d(keys, np.asarray(add, dtype=np.int64))


def reduction_error(values: np.ndarray, keys: np.ndarray) -> float:
    """Largest weight error of linear interpolation through ``keys`` (for reports and tests)."""
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        return 0.0
    t = np.arange(len(y))
    return float(np.max(np.abs(np.interp(t, keys, y[keys]) - y)))
