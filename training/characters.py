"""Test characters for retargeting, built by code from the SynthTalk head generator + trimesh.

Every character differs from the model's template in vertex order and sampling (a voxel
vertex-clustering remesh, Rossignac & Borrel 1993: vertices of a once-subdivided head are merged
per voxel cell, the cell index also keyed by which lip a vertex belongs to so the mouth slit
survives, then the vertex order is shuffled).  Each comes with what a test needs to judge a
retarget without the fit: ``source`` = the SynthTalk head it was made from and, per character
vertex, the triangle + barycentrics on that head it came from (``gt_face``, ``gt_bary``), so the
ground truth of any template animation is that animation "projected onto it".

Characters (``build(name)``):

* ``remeshed``   - the template's own identity (SynthTalk 10), remeshed: ground truth is exact.
* ``cm_yup``     - another identity (3) in centimetres, Y-up (OBJ convention, face toward +Z).
* ``stylised``   - exaggerated lips, wide jaw and chin (identity params at the edge of their
                   range) modelled with the lips ~5 mm apart (jaw slightly open in its rest pose).
* ``no_interior``- identity 1 without mouth interior, teeth and eyeballs (the slit is a hole).
* ``arkit``      - ``remeshed`` plus shape keys with ARKit names (``jawOpen``, ``mouthSmile_L``...;
                   mixed naming variants), made from SynthTalk rig poses.
* ``rhubarb``    - identity 5 with Preston-Blair / Rhubarb mouth shapes A-H, X.
* ``body``       - identity 2 on a simple torso (one mesh): the fit must find the head.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from training.synthtalk.head import IdentityParams, build_head, identity
from training.synthtalk.rig import Rig

__all__ = ["CHARACTERS", "Character", "build", "remesh", "write_obj"]

CHARACTERS = ("remeshed", "cm_yup", "stylised", "no_interior", "arkit", "rhubarb", "body")
Y_UP = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])   # Z-up/-Y front -> Y-up/+Z front


@dataclass
class Character:
    name: str
    vertices: np.ndarray                 # (N, 3) in the character's own axes and units
    faces: np.ndarray
    up: str                              # "z" or "y"
    unit_scale: float                    # character units per metre
    source_vertices: np.ndarray          # neutral SynthTalk head it was made from (metres, Z up)
    source_faces: np.ndarray
    gt_face: np.ndarray                  # (N,) triangle of the source head (-1: not on the head)
    gt_bary: np.ndarray                  # (N, 3)
    head_index: np.ndarray               # character vertices that belong to the head
    shapes: dict[str, np.ndarray] = field(default_factory=dict)   # absolute key positions (N, 3)
    rig_weights: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> rig controls
    identity: int = 10

    def to_canonical(self, x: np.ndarray) -> np.ndarray:
        """Character axes/units -> metres, Z up (the source head's frame)."""
        x = np.asarray(x, np.float64) / self.unit_scale
        return x @ Y_UP if self.up == "y" else x

    def from_canonical(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        x = x @ Y_UP.T if self.up == "y" else x
        return x * self.unit_scale

    def project(self, frames: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Ground truth: template animation ``frames`` (T, S, 3) on the source head's topology,
        carried to this character's vertices as displacements at the points they came from."""
        d = np.asarray(frames, np.float64) - np.asarray(rest, np.float64)[None]
        out = np.zeros((len(d), len(self.vertices), 3))
        on = self.gt_face >= 0
        tri = self.source_faces[self.gt_face[on]]
        disp = np.einsum("nk,tnkc->tnc", self.gt_bary[on], d[:, tri])
        out[:, on] = disp
        return self.vertices[None] + self.from_canonical(out.reshape(-1, 3)).reshape(out.shape) * 1.0


def _subdivide(v: np.ndarray, f: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One 1-to-4 split; returns vertices, faces, labels and each new vertex's source triangle +
    barycentrics on the original mesh."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(e, axis=0, return_inverse=True)
    mid = len(v) + np.arange(len(uniq))
    m = mid[inv.reshape(3, -1).T]        # (F, 3) midpoints of edges 01, 12, 20
    nv = np.concatenate([v, 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]])])
    la, lb = label[uniq[:, 0]], label[uniq[:, 1]]
    nl = np.concatenate([label, np.where(la != 0, la, lb)])
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    m01, m12, m20 = m[:, 0], m[:, 1], m[:, 2]
    nf = np.concatenate([np.stack([a, m01, m20], 1), np.stack([b, m12, m01], 1),
                         np.stack([c, m20, m12], 1), np.stack([m01, m12, m20], 1)])
    # provenance: original vertices -> any incident face; midpoints -> a face holding the edge
    src_face = np.zeros(len(nv), np.int64)
    src_bary = np.zeros((len(nv), 3))
    for k in range(3):
        src_face[f[:, k]] = np.arange(len(f))
        src_bary[f[:, k]] = np.eye(3)[k]
    pairs = ((0, 1, m01), (1, 2, m12), (2, 0, m20))
    for i, j, mm in pairs:
        src_face[mm] = np.arange(len(f))
        bb = np.zeros((len(f), 3))
        bb[:, i] = 0.5
        bb[:, j] = 0.5
        src_bary[mm] = bb
    return nv, nf, nl, src_face, src_bary


def remesh(v: np.ndarray, f: np.ndarray, label: np.ndarray, cell: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Voxel vertex clustering of the once-subdivided mesh (cells keyed by ``label`` too), with
    shuffled vertex order.  Returns vertices, faces and per-vertex provenance on ``(v, f)``."""
    sv, sf, sl, src_f, src_b = _subdivide(np.asarray(v, np.float64), np.asarray(f, np.int64), label)
    key = np.concatenate([np.floor(sv / cell).astype(np.int64), sl[:, None].astype(np.int64)], 1)
    _, cl, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    cl = cl.reshape(-1)
    n = len(counts)
    pos = np.zeros((n, 3))
    np.add.at(pos, cl, sv)
    pos /= counts[:, None]
    # representative (source) of each cluster: the member closest to the cluster mean
    d = np.linalg.norm(sv - pos[cl], axis=1)
    order = np.lexsort((d, cl))
    first = order[np.r_[0, np.nonzero(np.diff(cl[order]))[0] + 1]]
    rep = np.empty(n, np.int64)
    rep[cl[first]] = first
    nf = cl[sf]
    ok = (nf[:, 0] != nf[:, 1]) & (nf[:, 1] != nf[:, 2]) & (nf[:, 0] != nf[:, 2])
    nf = nf[ok]
    nf = np.unique(np.sort(nf, axis=1), axis=0, return_index=True)[1]
    nf = cl[sf][ok][np.sort(nf)]
    used = np.unique(nf)
    remap = -np.ones(n, np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(used))
    remap[used] = perm
    out_v = np.empty((len(used), 3))
    out_v[perm] = pos[used]
    src_vert = np.empty(len(used), np.int64)
    src_vert[perm] = rep[used]
    # snap each cluster to its representative's position on the original surface (keeps the
    # surface exactly on the source head, so provenance is exact)
    gt_face = src_f[src_vert]
    tri = np.asarray(f)[gt_face]
    gt_bary = src_b[src_vert]
    out_v = np.einsum("nk,nkc->nc", gt_bary, np.asarray(v, np.float64)[tri])
    return {"vertices": out_v, "faces": remap[nf], "gt_face": gt_face, "gt_bary": gt_bary}


def _labels(head: Any) -> np.ndarray:
    info = head.info
    return (info["kind"].astype(np.int64) * 3 + info["mouth_side"].astype(np.int64) + 1)


def _from_head(name: str, head: Any, cell: float, posed: np.ndarray | None = None, seed: int = 0,
               drop: np.ndarray | None = None) -> dict[str, Any]:
    v = head.vertices.astype(np.float64) if posed is None else posed
    f = head.faces
    if drop is not None:
        keep_f = ~np.isin(f, drop).any(1)
        f_used = f[keep_f]
        face_ids = np.nonzero(keep_f)[0]
    else:
        f_used, face_ids = f, np.arange(len(f))
    r = remesh(v, f_used, _labels(head), cell, seed=seed)
    r["gt_face"] = face_ids[r["gt_face"]]
    return r


ARKIT_FROM_RIG: dict[str, dict[str, float]] = {
    "jawOpen": {"jaw_open": 1.0},
    "mouthClose": {"lips_close": 1.0, "jaw_open": 0.3},
    "mouthPucker": {"pucker": 1.0},
    "mouthFunnel": {"funnel": 1.0},
    "mouthSmile_L": {"smile": 1.0},          # split into halves below
    "mouthSmile_R": {"smile": 1.0},
    "mouthStretchLeft": {"stretch": 1.0},
    "mouthStretchRight": {"stretch": 1.0},
    "MouthPressLeft": {"lips_press": 1.0},
    "MouthPressRight": {"lips_press": 1.0},
    "mouthRollLower": {"lower_lip_tuck": 1.0},
    "mouthUpperUp_L": {"upper_lip_raise": 1.0},
    "mouthUpperUp_R": {"upper_lip_raise": 1.0},
    "browInnerUp": {"brow_raise": 1.0},
    "eyeBlinkLeft": {"blink_l": 1.0},
    "eyeBlinkRight": {"blink_r": 1.0},
    "cheekPuff": {},                          # no rig equivalent: an unmoving key the solve must leave alone
}
RHUBARB_FROM_RIG: dict[str, dict[str, float]] = {
    "mouth_A": {"lips_close": 1.0, "lips_press": 0.6},
    "mouth_B": {"jaw_open": 0.12, "stretch": 0.4},
    "mouth_C": {"jaw_open": 0.35, "stretch": 0.2},
    "mouth_D": {"jaw_open": 0.75},
    "mouth_E": {"jaw_open": 0.3, "funnel": 0.6},
    "mouth_F": {"pucker": 0.9, "jaw_open": 0.08},
    "mouth_G": {"lower_lip_tuck": 0.8, "jaw_open": 0.1},
    "mouth_H": {"jaw_open": 0.4, "upper_lip_raise": 0.3},
    "mouth_X": {},
}


def _side_split(name: str, disp: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Left keys move only the character's left (+X) half, smoothly blended at the mid-line."""
    low = name.lower()
    if low.endswith(("_l", "left")):
        w = np.clip(0.5 + x / 0.02, 0.0, 1.0)
    elif low.endswith(("_r", "right")):
        w = np.clip(0.5 - x / 0.02, 0.0, 1.0)
    else:
        return disp
    return disp * w[:, None]


def _shape_keys(ch: Character, rig: Rig, table: dict[str, dict[str, float]]) -> None:
    rest = rig.template
    for key, controls in table.items():
        posed = rig.pose({k: np.array([v]) for k, v in controls.items()})[0] if controls else rest
        d = _side_split(key, posed.astype(np.float64) - rest, rest[:, 0])
        on = ch.gt_face >= 0
        disp = np.zeros((len(ch.vertices), 3))
        tri = ch.source_faces[ch.gt_face[on]]
        disp[on] = np.einsum("nk,nkc->nc", ch.gt_bary[on], d[tri])
        ch.shapes[key] = ch.vertices + ch.from_canonical(disp)
        ch.rig_weights[key] = dict(controls)


def _torso(cell: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed, outward-facing capsule-ish torso with shoulders, below the neck (metres, Z up)."""
    import trimesh
    body = trimesh.creation.capsule(height=0.55, radius=0.17, count=[24, 24])
    body.apply_scale([1.35, 0.7, 1.0])
    body.apply_translation([0.0, 0.0, -0.19 - 0.02 - 0.55 / 2 - 0.17 + 0.05])
    return np.asarray(body.vertices, np.float64), np.asarray(body.faces, np.int64)


@cache
def _build_cached(name: str, cell: float) -> Character:
    if name not in CHARACTERS:
        raise ValueError(f"unknown character {name!r}; choose from {CHARACTERS}")
    ident = {"remeshed": 10, "arkit": 10, "cm_yup": 3, "stylised": 6, "no_interior": 1, "rhubarb": 5, "body": 2}[name]
    params = identity(ident)
    if name == "stylised":
        params = IdentityParams(**{**params.__dict__, "name": "stylised", "lip_thickness": 1.6, "mouth_width": 1.3,
                                   "jaw_width": 1.3, "chin": 1.5, "nose_projection": 1.2})
    head = build_head(params)
    rig = Rig(head)
    posed = None
    if name == "stylised":   # modelled with the lips apart
        posed = rig.pose({"jaw_open": np.array([0.14])})[0].astype(np.float64)
    drop = None
    if name == "no_interior":
        m = head.topology.masks
        drop = np.concatenate([m["teeth"], m["mouth_interior"], m["eyeballs"]])
    r = _from_head(name, head, cell, posed=posed, seed=zlib.crc32(name.encode()) % 1000, drop=drop)
    src_v = head.vertices.astype(np.float64) if posed is None else posed
    up, unit = ("y", 100.0) if name == "cm_yup" else ("z", 1.0)
    verts = r["vertices"]
    faces = r["faces"]
    gt_face, gt_bary = r["gt_face"], r["gt_bary"]
    head_index = np.arange(len(verts))
    if name == "body":
        bv, bf = _torso(cell)
        faces = np.concatenate([faces, bf + len(verts)])
        head_index = np.arange(len(verts))
        verts = np.concatenate([verts, bv])
        gt_face = np.concatenate([gt_face, -np.ones(len(bv), np.int64)])
        gt_bary = np.concatenate([gt_bary, np.zeros((len(bv), 3))])
    ch = Character(name, verts, faces, up, unit, src_v, head.faces, gt_face, gt_bary, head_index, identity=ident)
    if up == "y" or unit != 1.0:
        ch.vertices = ch.from_canonical(verts)
    if name == "arkit":
        _shape_keys(ch, rig, ARKIT_FROM_RIG)
    if name == "rhubarb":
        _shape_keys(ch, rig, RHUBARB_FROM_RIG)
    return ch


def build(name: str, cell: float = 0.003) -> Character:
    """The named test character (cached); ``cell`` is the remesh voxel size in metres
    (0.003 -> ~6-7k vertices; 0.0017 -> ~20k for the speed benchmark)."""
    return _build_cached(name, float(cell))


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Plain OBJ (vertex order kept), written atomically."""
    from engine.fileio import atomic_write
    path = Path(path)
    with atomic_write(path, "w") as fh:
        fh.write("".join(f"v {x:.7g} {y:.7g} {z:.7g}\n" for x, y, z in vertices))
        fh.write("".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))
    return path


def rig_speech(fps: float = 30.0) -> tuple[np.ndarray, list[list[Any]], np.ndarray]:
    """A scripted "utterance" on the template (SynthTalk identity 10 = the engine's template):
    0.6 s silence, 8 syllables alternating open vowels (jaw, stretch or pucker) with bilabial
    closures (lips_close + lips_press), 0.6 s silence.  Returns ``(frames (T, S, 3), phones,
    rest (S, 3))`` with /m p b/ phones centred on the closures -- ground truth for closure tests
    without running a model."""
    from training.synthtalk.rig import CONTROLS

    head = build_head(identity(10))
    rig = Rig(head)
    T = round(4.0 * fps)
    t = np.arange(T) / fps
    W = {k: np.zeros(T) for k in CONTROLS}
    phones: list[list[Any]] = [["sil", 0.0, 0.6]]
    s0, syl = 0.6, 0.35
    bil = ["M", "P", "B", "M", "P", "B", "M", "P"]
    for i in range(8):
        a = s0 + i * syl
        vowel = (t >= a) & (t < a + 0.22)
        env = np.sin(np.clip((t - a) / 0.22, 0, 1) * np.pi) * vowel
        W["jaw_open"] += (0.35 + 0.1 * (i % 3)) * env
        W["stretch" if i % 2 else "pucker"] += 0.6 * env
        c = a + 0.22 + 0.065
        close = np.exp(-0.5 * ((t - c) / 0.035) ** 2)
        W["lips_close"] = np.maximum(W["lips_close"], close)
        W["lips_press"] = np.maximum(W["lips_press"], 0.5 * close)
        phones += [["AA", a, a + 0.22], [bil[i], c - 0.05, c + 0.05]]
    phones.append(["sil", s0 + 8 * syl, 4.0])
    frames = rig.pose({k: np.clip(v, 0, 1) for k, v in W.items()})
    return frames, phones, head.vertices.astype(np.float32)
