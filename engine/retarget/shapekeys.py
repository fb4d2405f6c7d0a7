"""Drive a character's own shape keys: per-frame weights that make its mouth follow the motion.

Given key deltas ``D_k = key_k - Basis`` (absolute key positions minus the basis, as Blender
stores them) on the solve region (the mouth area of the fit) and the transferred motion
``d_t``, the weights of a whole clip are the minimiser of::

    sum_t |sum_k w_tk D_k - d_t|^2 + lam sum_t |w_t - w_(t-1)|^2 + mu sum_tk w_tk
    subject to  lo_k <= w_tk <= hi_k                                   (the keys' slider range)

a box-constrained, temporally smooth, L1-sparse least squares (with ``lo >= 0`` the L1 term is
linear).  It is solved for all frames at once by FISTA (Beck & Teboulle 2009) on the ``K x K``
Gram matrix, so the cost per iteration is one ``(T, K) @ (K, K)`` product: thousands of frames
per second for 52 keys (see ``python -m engine.retarget.bench``).

Keys whose deltas do not touch the solve region (eyes, brows) and keys that do not move at all
are left alone: they get no weights (and no curves in Blender).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SolveResult", "solve_weights"]


@dataclass
class SolveResult:
    names: list[str]              # driven keys, in the caller's order
    weights: np.ndarray           # (T, len(names)) float32
    left_alone: list[str]         # keys given but not driven (and why: see reasons)
    reasons: dict[str, str]
    relative_error: float         # |D w - d| / |d| over the solve region and clip
    iterations: int


def solve_weights(deltas: dict[str, np.ndarray], target: np.ndarray, lo: dict[str, float] | None = None,
                  hi: dict[str, float] | None = None, smooth: float = 0.05, sparsity: float = 0.002,
                  iterations: int = 300, min_motion: float = 0.01) -> SolveResult:
    """``deltas``: name -> (R, 3) on the solve region; ``target``: (T, R, 3) motion there."""
    names_all = list(deltas)
    tgt = np.asarray(target, np.float64).reshape(len(target), -1)
    T = len(tgt)
    mags = {n: float(np.abs(deltas[n]).max()) if np.size(deltas[n]) else 0.0 for n in names_all}
    ref = max(mags.values(), default=0.0)
    reasons = {}
    names = []
    for n in names_all:
        if ref == 0 or mags[n] < min_motion * ref:
            reasons[n] = "does not move the mouth"
        else:
            names.append(n)
    K = len(names)
    if K == 0:
        return SolveResult([], np.zeros((T, 0), np.float32), names_all, reasons, float("nan"), 0)
    D = np.stack([np.asarray(deltas[n], np.float64).reshape(-1) for n in names])   # (K, 3R)
    G = D @ D.T
    B = tgt @ D.T                                                                  # (T, K)
    scale = float(np.mean(np.diag(G)))
    lam = smooth * scale
    mu = sparsity * scale
    lo_v = np.array([float((lo or {}).get(n, 0.0)) for n in names])
    hi_v = np.array([float((hi or {}).get(n, 1.0)) for n in names])
    Lc = 2.0 * (float(np.linalg.eigvalsh(G)[-1]) + 4.0 * lam)
    W = np.clip(np.zeros((T, K)), lo_v, hi_v)
    Y = W.copy()
    tk = 1.0
    for _ in range(iterations):
        lap = np.zeros_like(Y)
        if T > 1:
            diff = np.diff(Y, axis=0)
            lap[:-1] -= diff
            lap[1:] += diff
        grad = 2.0 * (Y @ G - B) + 2.0 * lam * lap + mu
        W_new = np.clip(Y - grad / Lc, lo_v, hi_v)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
        Y = W_new + ((tk - 1.0) / t_new) * (W_new - W)
        W, tk = W_new, t_new
    resid = W @ D - tgt
    denom = float(np.linalg.norm(tgt))
    rel = float(np.linalg.norm(resid) / denom) if denom > 0 else 0.0
    return SolveResult(names, W.astype(np.float32), [n for n in names_all if n not in names], reasons, rel, iterations)
