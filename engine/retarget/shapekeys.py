"""Drive a character's own shape keys: per-frame weights that make its mouth follow the motion.

Given key deltas ``D_k = key_k - Basis`` (absolute key positions minus the basis, as Blender
stores them) on the solve region (the mouth area of the fit) and the transferred motion
``d_t``, the weights of a whole clip are the minimiser of::

    sum_t |sum_k w_tk D_k - d_t|^2 + lam sum_t |w_t - w_(t-1)|^2 + mu sum_tk w_tk
    subject to  lo_k <= w_tk <= hi_k                                   (the keys' slider range)

a box-constrained, temporally smooth, L1-sparse least squares (with ``lo >= 0`` the L1 term is
linear).  It is solved for all frames at once by ADMM (Boyd et al. 2011, sec. 5: the box as the
second block, ``W = Z``).  The quadratic block has Kronecker structure -- the ``K x K`` Gram
matrix ``G = D D^T`` on the key axis, the path-graph Laplacian on the time axis -- so it is
solved exactly in the joint eigenbasis: ``G``'s eigenvectors on one side and the orthonormal
DCT-II (the eigenbasis of the path Laplacian with free ends) on the other, one elementwise
division per iteration.  Cost per iteration: two ``(T, K)`` DCTs and two ``(T, K) @ (K, K)``
products: thousands of frames per second for 52 keys (``python -m training.retarget_bench``).

Keys whose deltas do not touch the solve region (eyes, brows) and keys that do not move at all
are left alone: they get no weights (and no curves in Blender).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import dct, idct

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
                  iterations: int = 60, min_motion: float = 0.01) -> SolveResult:
    """``deltas``: name -> (R, 3) on the solve region; ``target``: (T, R, 3) motion there."""
    names_all = list(deltas)
    tgt = np.asarray(target, np.float32).reshape(len(target), -1)
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
    D = np.stack([np.asarray(deltas[n], np.float32).reshape(-1) for n in names])   # (K, 3R)
    G = (D.astype(np.float64) @ D.T.astype(np.float64))
    B = (tgt @ D.T).astype(np.float64)                                             # (T, K), one float32 GEMM
    scale = float(np.mean(np.diag(G)))
    lam = smooth * scale
    mu = sparsity * scale
    lo_v = np.array([float((lo or {}).get(n, 0.0)) for n in names])
    hi_v = np.array([float((hi or {}).get(n, 1.0)) for n in names])
    lam_g, Q = np.linalg.eigh(G)
    theta = 2.0 - 2.0 * np.cos(np.pi * np.arange(T) / T)          # path Laplacian eigenvalues
    rho = 2.0 * max(float(lam_g.mean()), 1e-12)
    denom = 2.0 * lam_g[None, :] + 2.0 * lam * theta[:, None] + rho  # (T, K)
    Z = np.clip(np.zeros((T, K)), lo_v, hi_v)
    U = np.zeros((T, K))
    base = 2.0 * B - mu
    for _ in range(iterations):
        rhs = base + rho * (Z - U)
        Wt = dct(rhs @ Q, type=2, norm="ortho", axis=0) / denom
        W = idct(Wt, type=2, norm="ortho", axis=0) @ Q.T
        Z = np.clip(W + U, lo_v, hi_v)
        U += W - Z
    W = Z
    # |W D - Y|^2 = tr(W G W^T) - 2 tr(W^T B) + |Y|^2, without forming W D
    yy = float(np.einsum("ij,ij->", tgt, tgt, dtype=np.float64))
    r2 = float(np.einsum("tk,kl,tl->", W, G, W) - 2.0 * np.einsum("tk,tk->", W, B) + yy)
    rel = float(np.sqrt(max(r2, 0.0) / yy)) if yy > 0 else 0.0
    return SolveResult(names, W.astype(np.float32), [n for n in names_all if n not in names], reasons, rel, iterations)
