"""Small geometry kernels the fit and the transfer share (numpy/scipy only).

* :class:`SurfaceIndex` / :func:`closest_points` -- exact closest point on a triangle mesh for
  many queries, with the triangle and barycentric coordinates (the dense correspondence).
  Candidates are the triangles with the nearest centroids (a KD-tree), optionally only those
  facing the query's way; no BVH package is needed (trimesh's proximity queries want ``rtree``,
  which Parley does not ship).
* :func:`umeyama` -- least-squares similarity (scale, rotation, translation) between point sets.
* :func:`edge_graph` -- the mesh's edges weighted by length, for geodesic (edge-path) distances.
* :func:`graph_laplacian` -- ``D - A``, the non-rigid ICP's membrane (smoothness) term;
  :func:`mesh_laplacian` -- ``I - D^-1 A``, used to soften the face mask and the local scale.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

__all__ = ["SurfaceIndex", "closest_points", "edge_graph", "face_normals", "graph_laplacian", "mesh_laplacian", "umeyama", "vertex_normals"]


def face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (zero for isolated vertices)."""
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v, dtype=np.float64)
    for k in range(3):
        np.add.at(out, f[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)


def edge_graph(v: np.ndarray, f: np.ndarray) -> sp.csr_matrix:
    """Symmetric ``(V, V)`` matrix of edge lengths, each edge once.  (Listing every face's three
    edges straight into a sparse matrix sums the duplicates: interior edges, shared by two faces,
    would weigh twice their length and boundary edges once, so paths along a hole -- the slit of a
    mouth without interior -- would look half as long as they are.)"""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1) + 1e-12
    return sp.csr_matrix((np.concatenate([w, w]), (np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]]))),
                         shape=(len(v), len(v)))


def graph_laplacian(num_vertices: int, f: np.ndarray) -> sp.csr_matrix:
    """Combinatorial Laplacian ``K = D - A``: ``x^T K x`` = sum over edges of ``|x_i - x_j|^2``."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    A = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices, num_vertices))
    A.data[:] = 1.0
    return (sp.diags(np.asarray(A.sum(1)).ravel()) - A).tocsr()


def mesh_laplacian(num_vertices: int, f: np.ndarray) -> sp.csr_matrix:
    """Uniform graph Laplacian ``L = I - D^-1 A`` (rows of isolated vertices are zero)."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    A = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices, num_vertices))
    A.data[:] = 1.0
    deg = np.asarray(A.sum(1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    return (sp.diags((deg > 0).astype(float)) - sp.diags(inv) @ A).tocsr()


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (..., 3) of the closest point to ``p`` on triangles abc
    (Ericson, *Real-Time Collision Detection* 5.1.5, vectorised)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    eps = 1e-30
    out = np.zeros(p.shape[:-1] + (3,))
    denom = va + vb + vc
    v = vb / np.where(np.abs(denom) < eps, eps, denom)
    w = vc / np.where(np.abs(denom) < eps, eps, denom)
    out[..., 0], out[..., 1], out[..., 2] = 1 - v - w, v, w  # interior
    # edge regions (later assignments win: vertices override edges, as in Ericson's order)
    bc_ = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    t = (d4 - d3) / np.maximum((d4 - d3) + (d5 - d6), eps)
    out[bc_] = np.stack([np.zeros_like(t), 1 - t, t], -1)[bc_]
    ac_ = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    t = d2 / np.maximum(d2 - d6, eps)
    out[ac_] = np.stack([1 - t, np.zeros_like(t), t], -1)[ac_]
    ab_ = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    t = d1 / np.maximum(d1 - d3, eps)
    out[ab_] = np.stack([1 - t, t, np.zeros_like(t)], -1)[ab_]
    one = np.ones_like(d1)
    zero = np.zeros_like(d1)
    out[(d6 >= 0) & (d5 <= d6)] = np.stack([zero, zero, one], -1)[(d6 >= 0) & (d5 <= d6)]
    out[(d3 >= 0) & (d4 <= d3)] = np.stack([zero, one, zero], -1)[(d3 >= 0) & (d4 <= d3)]
    out[(d1 <= 0) & (d2 <= 0)] = np.stack([one, zero, zero], -1)[(d1 <= 0) & (d2 <= 0)]
    return out


class SurfaceIndex:
    """Closest-point queries on one fixed triangle mesh (build once, query many times).

    Candidates are the ``k`` triangles whose centroids are nearest to the query; the exact
    point-triangle distance then picks the best.  On the fairly uniform meshes heads are made of
    the true closest triangle is among them; on meshes with long thin triangles a slightly
    farther one can be picked, which only matters far from the surface.
    """

    def __init__(self, v: np.ndarray, f: np.ndarray, allowed_faces: np.ndarray | None = None, k: int = 16) -> None:
        self.v = np.asarray(v, np.float64)
        self.f = np.asarray(f, np.int64)
        self.f_idx = np.nonzero(allowed_faces)[0] if allowed_faces is not None else np.arange(len(self.f))
        if len(self.f_idx) == 0:
            raise ValueError("no triangles to search")
        self.sub = self.f[self.f_idx]
        self.normals = face_normals(self.v, self.sub)
        self.tree = cKDTree(self.v[self.sub].mean(1))
        self.k = min(k, len(self.f_idx))

    def query(self, query: np.ndarray, chunk: int = 4096, normals: np.ndarray | None = None,
              min_cos: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(face index (Q,), barycentrics (Q, 3), distance (Q,))`` for every query point.

        With ``normals`` (Q, 3), candidate triangles facing away (cosine below ``min_cos``) are
        only taken when no candidate faces the same way: where two surfaces nearly touch (the
        lips at a mouth corner) a point then matches the surface it belongs to."""
        q = np.asarray(query, np.float64)
        out_f = np.empty(len(q), np.int64)
        out_b = np.empty((len(q), 3))
        out_d = np.empty(len(q))
        v = self.v
        for s in range(0, len(q), chunk):
            qq = q[s:s + chunk]
            _, nn = self.tree.query(qq, k=self.k)
            nn = np.asarray(nn).reshape(len(qq), self.k)
            tri = self.sub[nn]                                   # (n, k, 3)
            a, b, c = v[tri[..., 0]], v[tri[..., 1]], v[tri[..., 2]]
            P = np.broadcast_to(qq[:, None, :], a.shape)
            bary = _closest_on_triangles(P, a, b, c)
            pt = bary[..., :1] * a + bary[..., 1:2] * b + bary[..., 2:] * c
            d = np.linalg.norm(pt - P, axis=-1)
            if normals is not None:
                cos = np.einsum("nkc,nc->nk", self.normals[nn], normals[s:s + chunk])
                j = np.argmin(d + (cos < min_cos) * 1e30, axis=1)
            else:
                j = np.argmin(d, axis=1)
            r = np.arange(len(qq))
            out_f[s:s + chunk] = self.f_idx[nn[r, j]]
            out_b[s:s + chunk] = bary[r, j]
            out_d[s:s + chunk] = d[r, j]
        return out_f, out_b, out_d


def closest_points(query: np.ndarray, v: np.ndarray, f: np.ndarray, allowed_faces: np.ndarray | None = None,
                   k: int = 16, normals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-off :meth:`SurfaceIndex.query`."""
    return SurfaceIndex(v, f, allowed_faces, k).query(query, normals=normals)


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimising ``sum w |s R src + t - dst|^2`` (Umeyama 1991), proper rotation."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var_s = float((w * (xs ** 2).sum(1)).sum())
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t
