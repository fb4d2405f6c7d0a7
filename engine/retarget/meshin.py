"""The user's mesh as the fit sees it: read, checked, turned into the canonical frame, head found.

Canonical frame (the template's): Z up, the face looks toward -Y, +X is the character's left.
A user's mesh is mapped there by a pure rotation ``R`` (``canonical = R @ original``) chosen from
``up`` (``z``: Blender/Z-up files; ``y``: the OBJ convention, where a Blender export looks
toward +Z) and ``front`` (the direction the face looks, in the file's own axes).  Units are never
changed: the fit estimates a scale, and every output goes back through ``R.T`` into the file's
own axes and units.

Checks made here, each with a message that says what to do: empty mesh, non-finite values,
no triangles, inward-facing normals, several head-sized pieces (two heads).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["MeshInputError", "UserMesh", "axes_rotation", "find_head", "load_user_mesh", "read_vertex_group"]

AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1)}


class MeshInputError(ValueError):
    """The mesh cannot be fitted as given; the message names the fix."""


@dataclass
class UserMesh:
    vertices: np.ndarray      # (N, 3) float64, the file's own axes and units
    faces: np.ndarray         # (F, 3) int64
    path: str = ""

    def fingerprint(self) -> str:
        """Changes whenever vertex positions or faces change (a refit is needed then)."""
        import hashlib
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.vertices, dtype="<f4").tobytes())
        h.update(np.ascontiguousarray(self.faces, dtype="<i8").tobytes())
        return f"v{len(self.vertices)}-f{len(self.faces)}-{h.hexdigest()[:16]}"


def load_user_mesh(path: str | os.PathLike) -> UserMesh:
    """Read ``.obj``/``.ply`` (vertex order kept), or ``.npz`` with ``vertices`` and ``faces``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"mesh not found: {p}")
    if p.suffix.lower() == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if "vertices" not in z.files or "faces" not in z.files:
                raise MeshInputError(f"{p.name}: an .npz mesh needs 'vertices' (N,3) and 'faces' (F,3) arrays")
            v, f = z["vertices"], z["faces"]
    elif p.suffix.lower() in (".obj", ".ply"):
        import trimesh
        try:
            m = trimesh.load(str(p), process=False, maintain_order=True, force="mesh")
        except Exception as exc:  # noqa: BLE001 - trimesh raises many types
            raise MeshInputError(f"cannot read mesh {p}: {exc}") from None
        v = np.asarray(getattr(m, "vertices", np.zeros((0, 3))))
        f = np.asarray(getattr(m, "faces", np.zeros((0, 3))))
    else:
        raise MeshInputError(f"unsupported mesh file {p.name}: use .obj, .ply or .npz")
    return check_mesh(v, f, str(p))


def check_mesh(v: np.ndarray, f: np.ndarray, name: str = "mesh") -> UserMesh:
    v = np.asarray(v, np.float64).reshape(-1, 3) if np.size(v) else np.zeros((0, 3))
    f = np.asarray(f, np.int64).reshape(-1, 3) if np.size(f) else np.zeros((0, 3), np.int64)
    if len(v) == 0 or len(f) == 0:
        raise MeshInputError(f"{name} is empty ({len(v)} vertices, {len(f)} triangles): export the head mesh "
                             "itself (with its faces), not an empty object or a point cloud")
    if not np.isfinite(v).all():
        raise MeshInputError(f"{name} has NaN or infinite vertex coordinates: fix or re-export the mesh")
    if f.min() < 0 or f.max() >= len(v):
        raise MeshInputError(f"{name}: faces reference vertices that do not exist")
    return UserMesh(v, f, name)


def axes_rotation(up: str, front: str | None = None) -> np.ndarray:
    """Rotation ``R`` (rows = canonical axes in file coordinates) for ``up`` in {y, z} (or
    +x/-x/...) and ``front`` (the file direction the face looks; default -y for Z-up files, +z
    for Y-up files)."""
    up_key = {"z": "+z", "y": "+y", "x": "+x"}.get(up, up)
    if up_key not in AXES:
        raise MeshInputError(f"--up must be one of y, z, +x, -x, +y, -y, +z, -z; got {up!r}")
    if front is None:
        front = "-y" if up_key in ("+z", "-z") else "+z"
    if front not in AXES:
        raise MeshInputError(f"--front must be one of {sorted(AXES)}; got {front!r}")
    u, fr = np.array(AXES[up_key], float), np.array(AXES[front], float)
    if abs(u @ fr) > 0.5:
        raise MeshInputError(f"--front {front} is parallel to --up {up}: the face must look sideways")
    ey = -fr
    ex = np.cross(ey, u)
    return np.stack([ex, ey, u])


def read_vertex_group(path: str | os.PathLike, num_vertices: int) -> np.ndarray:
    """Vertex indices of the head from JSON: ``[i, ...]``, ``{"indices": [...]}`` or
    ``{"name": [...]}`` with a single group."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"vertex group file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise MeshInputError(f"{p}: invalid JSON ({exc})") from None
    if isinstance(data, dict):
        if "indices" in data:
            data = data["indices"]
        elif len(data) == 1:
            data = next(iter(data.values()))
        else:
            raise MeshInputError(f"{p}: expected a list of vertex indices or {{'indices': [...]}}")
    idx = np.asarray(data)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise MeshInputError(f"{p}: the vertex group must be a non-empty list of integer vertex indices")
    if idx.min() < 0 or idx.max() >= num_vertices:
        raise MeshInputError(f"{p}: vertex indices outside 0..{num_vertices - 1}: the group belongs to another mesh")
    return np.unique(idx.astype(np.int64))


def components(num_vertices: int, f: np.ndarray) -> np.ndarray:
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    A = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_vertices, num_vertices))
    return connected_components(A, directed=False)[1]


def check_orientation(v: np.ndarray, f: np.ndarray, name: str) -> None:
    """Refuse meshes whose normals point inward (signed volume of the big pieces < 0)."""
    tri = v[f]
    c = v[np.unique(f)].mean(0)
    vol = np.einsum("ij,ij->i", tri[:, 0] - c, np.cross(tri[:, 1] - c, tri[:, 2] - c)).sum() / 6.0
    if vol < 0:
        raise MeshInputError(f"{name}: the normals point inward (flipped faces); recalculate them to point "
                             "outside (Blender: Edit Mode > Mesh > Normals > Recalculate Outside) and export again")


def find_head(v_canon: np.ndarray, f: np.ndarray, name: str = "mesh") -> np.ndarray:
    """Indices of the head vertices of a mesh in the canonical frame.

    Connected pieces whose bounding boxes overlap form one object (a head with separate eyes and
    teeth, a body with a separate head).  Two or more objects of similar size side by side are
    refused (two heads / two characters).  A tall object (height > 1.8 x its width, a whole
    body) is cut at the neck: the narrowest horizontal slice below the widest part of the top
    35% of the mesh (the neck itself goes with the body: a body's neck rarely moves with speech).
    """
    comp = components(len(v_canon), f)
    labels = np.unique(comp[np.unique(f)])
    lo = np.array([v_canon[comp == lab].min(0) for lab in labels])
    hi = np.array([v_canon[comp == lab].max(0) for lab in labels])
    pad = 0.02 * float(np.linalg.norm(hi.max(0) - lo.min(0)))
    parent = list(range(len(labels)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(labels)):
        overlap = np.all((lo[i] - pad <= hi) & (lo <= hi[i] + pad), axis=1)
        for j in np.nonzero(overlap)[0]:
            parent[root(int(j))] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(labels)):
        groups.setdefault(root(i), []).append(i)
    sizes = {g: float(np.linalg.norm(hi[m].max(0) - lo[m].min(0))) for g, m in groups.items()}
    biggest = max(sizes.values())
    bigs = [g for g, s in sizes.items() if s > 0.6 * biggest]
    if len(bigs) > 1:
        raise MeshInputError(f"{name} has {len(bigs)} separate head-sized pieces (two heads?): fit one "
                             "character at a time, or pass --vertex-group-file with the head's vertex indices")
    idx = np.nonzero(np.isin(comp, labels[groups[bigs[0]]]))[0]
    ex = np.ptp(v_canon[idx], axis=0)
    if ex[2] > 1.8 * max(ex[0], ex[1]):
        idx = _cut_at_neck(v_canon, idx)
    return idx


def _cut_at_neck(v: np.ndarray, idx: np.ndarray) -> np.ndarray:
    p = v[idx]
    z_lo, z_hi = p[:, 2].min(), p[:, 2].max()
    H = z_hi - z_lo
    nb = 120
    edges = np.linspace(z_hi - 0.35 * H, z_hi, nb + 1)
    width = np.full(nb, np.nan)
    for i in range(nb):
        s = (p[:, 2] >= edges[i]) & (p[:, 2] < edges[i + 1])
        if s.sum() >= 3:
            width[i] = np.ptp(p[s, 0])
    top = np.nanargmax(np.where(np.arange(nb) > nb // 3, width, np.nan))  # widest part of the head
    below = width[:top]
    if not np.isfinite(below).any():
        return idx
    neck = int(np.nanargmin(below))
    z_cut = edges[neck]
    return idx[p[:, 2] >= z_cut]
