"""Fit: register the model's template to a user's head of any topology (``python -m engine fit``).

Stages (each named so a failure says where it failed):

1. **read & check** (:mod:`engine.retarget.meshin`): canonical axes from ``up``/``front``; empty,
   non-finite, inward-facing, two-head meshes refused; the head found in a body (or given by a
   vertex group).
2. **landmarks** (:mod:`engine.retarget.landmarks`): symmetry plane, facing and nose tip on the
   user's head (or the user's landmark file).
3. **similarity**: rotation about Z from the facing, scale from nose-to-crown height, then
   scaled ICP (Umeyama on trimmed, normal-compatible closest points).
4. **coarse non-rigid** (:mod:`engine.retarget.nricp`, stiff levels), then the mouth landmarks
   (stomion, lips, corners) are searched near the coarse fit's mouth.
5. **landmark-guided non-rigid ICP** with the template's own detected landmarks pulled onto
   the user's.
6. **correspondence** both ways (closest points, lips matched side by side so an upper lip
   never takes a lower lip's motion), the user's own inner-lip contact rows, motion weights
   (face mask with a soft border times a distance falloff) and local scale.
7. **quality gate**: RMS distance of the fitted face to the user's surface, landmark error
   and coverage; above the thresholds the fit is refused with a message to place landmarks.

The result (:class:`Fit`) is saved as an ``.npz`` of plain arrays (``allow_pickle=False``) with a
JSON metadata string (mesh fingerprint, residuals, axes) so a changed mesh invalidates it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.fileio import atomic_path
from engine.retarget.geometry import (
    SurfaceIndex,
    closest_points,
    edge_graph,
    mesh_laplacian,
    umeyama,
    vertex_normals,
)
from engine.retarget.landmarks import (
    REQUIRED,
    LandmarkError,
    Landmarks,
    find_face,
    load_landmarks_json,
    refine_mouth,
)
from engine.retarget.meshin import (
    MeshInputError,
    UserMesh,
    axes_rotation,
    check_orientation,
    find_head,
    read_vertex_group,
)
from engine.retarget.nricp import NricpConfig, nricp

__all__ = ["Fit", "FitConfig", "FitError", "fit_mesh", "load_fit", "template_landmarks"]

FIT_VERSION = 2   # 2: mouth corners at the slit ends (fits made before put some corner vertices on the wrong lip)
LOWER_LIP_SHARE = 0.65   # share of a closing lip gap travelled by the lower lip (as the SynthTalk rig)
_NO_DATA_MASKS = ("teeth", "mouth_interior", "eyeballs")


class FitError(ValueError):
    """The fit is refused; the message says what to do (usually: place landmarks)."""


@dataclass
class FitConfig:
    max_residual: float = 0.02        # RMS distance fitted face -> user surface / face size
    max_landmark_error: float = 0.05  # worst landmark distance / face size
    min_coverage: float = 0.75        # share of template face vertices with a compatible match
    nricp: NricpConfig = field(default_factory=NricpConfig)
    motion_falloff: float = 0.04      # user vertices farther than this (x face size) from the fitted face fade out


@dataclass
class Fit:
    """Dense correspondence between a template topology and one user mesh (see module doc)."""
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    # convenient views
    def __getattr__(self, name: str) -> Any:
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def residual(self) -> float:
        return float(self.meta["residual"])

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise ValueError(f"fit files are .npz, got {path.name}")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(self.meta)), **self.arrays)
        return path

    def check_mesh(self, mesh: UserMesh) -> None:
        if mesh.fingerprint() != self.meta["mesh_fingerprint"]:
            raise FitError(f"the fit was made for another mesh (fingerprint {self.meta['mesh_fingerprint']}, "
                           f"this mesh {mesh.fingerprint()}): the mesh changed since it was fitted; fit it again "
                           "(python -m engine fit --mesh ... --out ...)")

    def check_template(self, topology: Any) -> None:
        if topology.fingerprint() != self.meta["template_fingerprint"]:
            raise FitError(f"the fit was made for template topology {self.meta['template_fingerprint']} but this "
                           f"checkpoint animates {topology.fingerprint()}: fit the mesh again for this checkpoint")


def load_fit(path: str | os.PathLike) -> Fit:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"fit file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
    except (ValueError, KeyError, OSError) as exc:
        raise FitError(f"{p} is not a Parley fit file ({exc}); make one with python -m engine fit") from None
    if meta.get("version") != FIT_VERSION:
        raise FitError(f"{p}: fit file version {meta.get('version')} is not {FIT_VERSION}; fit the mesh again")
    return Fit(arrays, meta)


# --------------------------------------------------------------------------- template side
_TEMPLATE_CACHE: dict[str, dict[str, Any]] = {}


def template_landmarks(topology: Any) -> dict[str, Any]:
    """The template's own landmarks, found by the same detector as the user's (so detector biases
    cancel), snapped to template vertices; cached per topology."""
    key = topology.fingerprint() + str(hash(topology.vertices.tobytes()))
    if key in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE[key]
    v = topology.vertices.astype(np.float64)
    f = topology.faces
    m = topology.masks
    for need in ("lip_upper_inner", "lip_lower_inner", "face"):
        if need not in m:
            raise FitError(f"the checkpoint's topology has no {need!r} mask; it cannot be retargeted")
    up, lo = m["lip_upper_inner"], m["lip_lower_inner"]
    mc = 0.5 * (v[up].mean(0) + v[lo].mean(0))
    hw = 0.5 * float(np.ptp(v[up][:, 0]))
    frame = find_face(v, f)
    lms = refine_mouth(frame, mc, hw)
    no_data = np.zeros(len(v), bool)
    for k in _NO_DATA_MASKS:
        if k in m:
            no_data[m[k]] = True
    outer = ~no_data
    idx = {}
    for name, p in lms.points.items():
        cand = np.nonzero(outer)[0]
        idx[name] = int(cand[np.argmin(np.linalg.norm(v[cand] - p, axis=1))])
    face = m["face"]
    out = {"points": lms.points, "index": idx, "frame": frame, "mouth_halfwidth": hw,
           "face_size": float(np.linalg.norm(np.ptp(v[face], axis=0))), "data_mask": outer,
           "side": _geodesic_sides(v, f, up, lo, _sides(v, f, np.concatenate([v[up], v[lo]]), lip_height=0.5 * hw),
                                   limit=3.0 * hw)}
    _TEMPLATE_CACHE[key] = out
    return out


def _geodesic_sides(v: np.ndarray, f: np.ndarray, upper_rows: np.ndarray, lower_rows: np.ndarray,
                    fallback: np.ndarray, limit: float) -> np.ndarray:
    """+1 for vertices nearer (along the mesh) to the upper contact row than to the lower one, -1
    the other way; ``fallback`` where neither is within ``limit``.  Along the surface the upper
    teeth are next to the upper lip even where they hang below the lip line, and the two lips
    only meet at the corners, so this is right where "above/below the line" is not."""
    from scipy.sparse.csgraph import dijkstra
    G = edge_graph(v, f)
    du = dijkstra(G, directed=False, indices=np.unique(upper_rows), min_only=True, limit=limit)
    dl = dijkstra(G, directed=False, indices=np.unique(lower_rows), min_only=True, limit=limit)
    side = fallback.astype(np.int8).copy()
    reach = np.isfinite(du) | np.isfinite(dl)
    side[reach] = np.where(du[reach] < dl[reach], 1, -1)
    return side


def _sides(v: np.ndarray, f: np.ndarray, slit_pts: np.ndarray, lip_height: float) -> np.ndarray:
    """+1 above the lip line, -1 below (canonical frame).  Near the line (within 15% of the lip
    height) the vertex normal decides: the upper lip's underside looks down, the lower lip's top
    looks up -- so lips that touch are still told apart."""
    s = slit_pts[np.argsort(slit_pts[:, 0])]
    zline = np.interp(v[:, 0], s[:, 0], s[:, 2])
    dz = v[:, 2] - zline
    side = np.where(dz >= 0, 1, -1).astype(np.int8)
    n = vertex_normals(v, f)
    band = (np.abs(dz) < 0.15 * lip_height) & (np.abs(v[:, 0]) <= np.abs(s[:, 0]).max() * 1.1) & (np.abs(n[:, 2]) > 0.3)
    side[band] = np.where(n[band, 2] < 0, 1, -1)
    return side


# --------------------------------------------------------------------------- stages
def _initial_similarity(tl: dict[str, Any], frame_c: Any, vt: np.ndarray, vc: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    ft = tl["frame"]
    ang = np.deg2rad(frame_c.facing_deg - ft.facing_deg)
    c, s_ = np.cos(ang), np.sin(ang)
    R = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])
    crown_t = vt[:, 2].max() - ft.nose_tip[2]
    crown_c = vc[:, 2].max() - frame_c.nose_tip[2]
    s = float(crown_c / crown_t) if crown_t > 0 and crown_c > 0 else 1.0
    t = frame_c.nose_tip - s * R @ ft.nose_tip
    return s, R, t


def _scaled_icp(vt: np.ndarray, ft_: np.ndarray, data: np.ndarray, vc: np.ndarray, fc: np.ndarray,
                s: float, R: np.ndarray, t: np.ndarray, iters: int = 12) -> tuple[float, np.ndarray, np.ndarray]:
    src_idx = np.nonzero(data)[0][::3]
    nt = vertex_normals(vt, ft_)[src_idx]
    nc_all = vertex_normals(vc, fc)
    index = SurfaceIndex(vc, fc)
    for _ in range(iters):
        X = s * vt[src_idx] @ R.T + t
        fi, bary, d = index.query(X)
        cn = np.einsum("ij,ijk->ik", bary, nc_all[fc[fi]])
        ok = ((nt @ R.T) * cn).sum(1) > 0.5
        if ok.sum() < 20:
            break
        keep = ok & (d <= np.quantile(d[ok], 0.7))
        C = np.einsum("ij,ijk->ik", bary, vc[fc[fi]])
        s, R, t = umeyama(vt[src_idx][keep], C[keep])
    return s, R, t


def _landmarks_from_file(path: str, mesh_v_canon: np.ndarray) -> Landmarks:
    idx = load_landmarks_json(path, len(mesh_v_canon))
    pts = {k: mesh_v_canon[i] for k, i in idx.items()}
    slit = np.stack([pts["mouth_corner_r"], pts["mouth_centre"], pts["mouth_corner_l"]])
    return Landmarks(points=pts, source="file", slit=slit)


def fit_mesh(mesh: UserMesh, topology: Any, up: str = "z", front: str | None = None,
             landmarks_file: str | None = None, vertex_group_file: str | None = None,
             cfg: FitConfig | None = None, progress: Any = None) -> Fit:
    """Register ``topology`` (the model's template) to ``mesh``; see the module docstring."""
    cfg = cfg or FitConfig()
    t_start = time.perf_counter()
    say = progress or (lambda stage, frac: None)
    R_axes = axes_rotation(up, front)
    V = mesh.vertices @ R_axes.T                              # canonical axes, user's units
    if vertex_group_file:
        head = read_vertex_group(vertex_group_file, len(V))
    else:
        head = find_head(V, mesh.faces, mesh.path or "mesh")
    in_head = np.zeros(len(V), bool)
    in_head[head] = True
    hf = mesh.faces[in_head[mesh.faces].all(1)]
    if len(hf) == 0:
        raise MeshInputError("the head part of the mesh has no triangles: check --vertex-group-file")
    check_orientation(V, hf, mesh.path or "mesh")
    say("fit", 0.05)
    tl = template_landmarks(topology)
    vt = topology.vertices.astype(np.float64)
    ft_ = topology.faces
    # landmarks and similarity
    if landmarks_file:
        lm_user = _landmarks_from_file(landmarks_file, V)
        names = [n for n in REQUIRED]
        src = np.stack([tl["points"][n] for n in names])
        dst = np.stack([lm_user.points[n] for n in names])
        s, R, t = umeyama(src, dst)
        frame_c = None
    else:
        frame_c = find_face(V, hf)
        s, R, t = _initial_similarity(tl, frame_c, vt, V[head])
    s, R, t = _scaled_icp(vt, ft_, tl["data_mask"], V, hf, s, R, t)
    say("fit", 0.3)
    face_size = s * tl["face_size"]
    X0 = s * vt @ R.T + t
    coarse = NricpConfig(stiffness=cfg.nricp.stiffness[:2], iterations=2, trust=(cfg.nricp.trust[0],) * 2)
    Xc, _ = nricp(X0, ft_, V, hf, tl["data_mask"], face_size, cfg=coarse)
    say("fit", 0.55)
    if frame_c is not None:
        up_i, lo_i = topology.masks["lip_upper_inner"], topology.masks["lip_lower_inner"]
        guess = 0.5 * (Xc[up_i].mean(0) + Xc[lo_i].mean(0))
        hw = s * tl["mouth_halfwidth"]
        try:
            lm_user = refine_mouth(frame_c, guess, hw)
        except LandmarkError as exc:
            raise FitError(f"{exc}") from None
    names = list(REQUIRED)
    lm_t_idx = np.array([tl["index"][n] for n in names])
    lm_pos = np.stack([lm_user.points[n] for n in names])
    X, _ = nricp(Xc, ft_, V, hf, tl["data_mask"], face_size, landmarks=(lm_t_idx, lm_pos), cfg=cfg.nricp)
    say("fit", 0.85)
    arrays, quality = _correspondence(topology, tl, X, V, mesh.faces, hf, head, lm_user, s, cfg, face_size)
    lm_err = float(np.max(np.linalg.norm(X[lm_t_idx] - lm_pos, axis=1)) / face_size)
    quality["landmark_error"] = lm_err
    R_total = R_axes.T @ R                                   # template axes -> file axes
    arrays.update({
        "axes": R_axes, "rotation": R_total, "scale": np.asarray(s, np.float64),
        "fitted_template": (X @ R_axes),                   # file axes
        "landmarks": (lm_pos @ R_axes),
    })
    meta = {
        "version": FIT_VERSION, "mesh_fingerprint": mesh.fingerprint(), "mesh": os.path.basename(mesh.path),
        "num_vertices": len(V), "template_fingerprint": topology.fingerprint(),
        "template_vertices": int(topology.num_vertices), "up": up, "front": front,
        "landmark_source": lm_user.source, "landmark_names": names,
        "residual": quality["residual"], "landmark_error": lm_err, "coverage": quality["coverage"],
        "scale": float(s), "mouth_halfwidth": float(s * tl["mouth_halfwidth"]), "head_vertices": len(head), "lip_pairs": len(arrays["lip_upper"]),
        "seconds": round(time.perf_counter() - t_start, 3),
        "thresholds": {"residual": cfg.max_residual, "landmark_error": cfg.max_landmark_error,
                       "coverage": cfg.min_coverage},
    }
    fit = Fit(arrays, meta)
    problems = []
    if quality["residual"] > cfg.max_residual:
        problems.append(f"surface residual {quality['residual']:.4f} of the face size > {cfg.max_residual}")
    if lm_err > cfg.max_landmark_error:
        problems.append(f"landmark error {lm_err:.4f} of the face size > {cfg.max_landmark_error}")
    if quality["coverage"] < cfg.min_coverage:
        problems.append(f"only {quality['coverage']:.0%} of the template face found a matching surface "
                        f"(< {cfg.min_coverage:.0%})")
    if problems:
        hint = ("place landmarks: pass --landmarks lm.json with vertex indices for " + ", ".join(REQUIRED)
                if lm_user.source == "auto" else "check the landmark indices in the landmarks file")
        raise FitError("the fit is not good enough (" + "; ".join(problems) + "): " + hint
                       + "; or make sure --up/--front describe the mesh and the head is human-like")
    say("fit", 1.0)
    return fit


def _correspondence(topology: Any, tl: dict[str, Any], X: np.ndarray, V: np.ndarray, faces: np.ndarray,
                    hf: np.ndarray, head: np.ndarray, lm: Landmarks, s: float, cfg: FitConfig,
                    face_size: float) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    m = topology.masks
    vt = topology.vertices.astype(np.float64)
    ft_ = topology.faces
    up_i, lo_i = m["lip_upper_inner"], m["lip_lower_inner"]
    # template -> user (residual, coverage, preview)
    fi, bary, d = closest_points(X, V, hf)
    face_mask = np.zeros(len(vt), bool)
    face_mask[m["face"]] = True
    face_outer = face_mask & tl["data_mask"]
    nX = vertex_normals(X, ft_)
    nV = vertex_normals(V, hf)
    cn = np.einsum("ij,ijk->ik", bary, nV[hf[fi]])
    compatible = ((nX * cn).sum(1) > 0.5) & (d < 0.05 * face_size)
    residual = float(np.sqrt(np.mean(d[face_outer] ** 2)) / face_size)
    coverage = float(compatible[face_outer].mean())
    # user -> template, lips side by side
    hw = s * tl["mouth_halfwidth"]
    t_side = tl["side"]
    user_slit = lm.slit if lm.slit is not None else np.stack([lm.points["mouth_corner_r"], lm.points["mouth_centre"],
                                                              lm.points["mouth_corner_l"]])
    Vh = V[head]
    # the mouth's middle and half-width from its corners (the slit's points are not spread evenly:
    # their mean can sit a centimetre off to one side)
    c_l, c_r = lm.points["mouth_corner_l"], lm.points["mouth_corner_r"]
    ctr = np.array([0.5 * (c_l[0] + c_r[0]), lm.points["mouth_centre"][1], lm.points["mouth_centre"][2]])
    half = max(0.5 * abs(float(c_l[0] - c_r[0])), 0.5 * hw)
    u_side = _sides_user(Vh, V, faces, head, user_slit, hw)
    mouth_zone = (np.abs(Vh[:, 0] - ctr[0]) < 1.6 * max(hw, half)) & (np.abs(Vh[:, 2] - ctr[2]) < 1.2 * hw)
    # the user's inner-lip contact rows: per template pair, the user vertex on the right side of
    # the lip line nearest to the fitted template's row vertex
    upper_rows: list[int] = []
    lower_rows: list[int] = []
    in_zone = np.nonzero(mouth_zone)[0]
    for j in range(len(up_i)):
        for rows, sgn, tv in ((upper_rows, 1, X[up_i[j]]), (lower_rows, -1, X[lo_i[j]])):
            cand = in_zone[u_side[in_zone] == sgn]
            if len(cand) == 0:
                raise FitError("no lips found on the mesh around the mouth: place landmarks with --landmarks lm.json")
            rows.append(head[cand[np.argmin(np.linalg.norm(Vh[cand] - tv, axis=1))]])
    # coarse meshes: several template pairs can pick the same vertex; keep each vertex in one pair
    # (the first, walking corner to corner), so a contact correction moves it exactly once
    pair_t, seen_u, seen_l = [], set(), set()
    for j, (a, b) in enumerate(zip(upper_rows, lower_rows)):
        if a in seen_u or b in seen_l:
            continue
        seen_u.add(a)
        seen_l.add(b)
        pair_t.append(j)
    upper_rows = [upper_rows[j] for j in pair_t]
    lower_rows = [lower_rows[j] for j in pair_t]
    # then sides along the surface from those rows (teeth and inner lips included)
    pos = -np.ones(len(V), np.int64)
    pos[head] = np.arange(len(head))
    hfl = pos[hf]
    u_side = _geodesic_sides(Vh, hfl, pos[np.asarray(upper_rows)], pos[np.asarray(lower_rows)], u_side, limit=3.0 * hw)
    cf = np.empty(len(head), np.int64)
    cb = np.empty((len(head), 3))
    cd = np.empty(len(head))
    # lips are matched side by side only between the corners and in front (beyond the corners
    # the two sides meet, and there the plain closest point is right)
    sided = (np.abs(Vh[:, 0] - ctr[0]) < half) & (np.abs(Vh[:, 2] - ctr[2]) < 1.2 * hw) & \
            (Vh[:, 1] - ctr[1] < 2.2 * hw)
    nh = vertex_normals(V, faces)[head]
    cf[:], cb[:], cd[:] = closest_points(Vh, X, ft_, normals=nh)
    for sgn in (1, -1):
        q = np.nonzero(sided & (u_side == sgn))[0]
        if len(q):
            allowed = (t_side[ft_] == sgn).all(1)
            f_s, b_s, d_s = closest_points(Vh[q], X, ft_, allowed_faces=allowed, normals=nh[q])
            # the own lip's surface wins where it is about as near as the plain closest point (lips
            # that touch: the other lip is as near); a much farther one means the two side maps
            # disagree there (around the corners, where the lips meet), and the surface itself
            # is then the better guide
            take = d_s <= cd[q] + 0.1 * hw
            q = q[take]
            cf[q], cb[q], cd[q] = f_s[take], b_s[take], d_s[take]
    # motion weights: template face mask with a soft border, times a distance falloff
    L = mesh_laplacian(len(vt), ft_)
    wf = face_mask.astype(float)
    for _ in range(12):
        wf = wf - 0.5 * (L @ wf)
    wf = np.clip(wf, 0.0, 1.0)
    wf[face_mask] = np.maximum(wf[face_mask], 0.0)
    w_user = np.einsum("ij,ij->i", cb, wf[ft_[cf]]) * np.exp(-(cd / (cfg.motion_falloff * face_size)) ** 2)
    # local scale: how much bigger the user's face is around each template vertex than the template
    area_t = _vertex_area(vt, ft_)
    area_x = _vertex_area(X, ft_) / (s * s)
    ls = np.sqrt(np.clip(area_x / np.maximum(area_t, 1e-30), 0.36, 3.24))
    for _ in range(8):
        ls = ls - 0.5 * (L @ ls)
    local = np.einsum("ij,ij->i", cb, ls[ft_[cf]])
    arrays = {
        "head_index": head.astype(np.int64),
        "c2t_face": cf, "c2t_bary": cb.astype(np.float32), "c2t_dist": cd.astype(np.float32),
        "t2c_face": fi, "t2c_bary": bary.astype(np.float32),
        "weight": w_user.astype(np.float32), "local_scale": local.astype(np.float32),
        "lip_upper": np.asarray(upper_rows, np.int64), "lip_lower": np.asarray(lower_rows, np.int64),
        "lip_pair_template": np.asarray(pair_t, np.int64),
        "user_side": u_side.astype(np.int8),
    }
    return arrays, {"residual": residual, "coverage": coverage}


def _sides_user(Vh: np.ndarray, V: np.ndarray, faces: np.ndarray, head: np.ndarray, slit: np.ndarray,
                hw: float) -> np.ndarray:
    n_all = vertex_normals(V, faces)
    s = slit[np.argsort(slit[:, 0])]
    zline = np.interp(Vh[:, 0], s[:, 0], s[:, 2])
    dz = Vh[:, 2] - zline
    side = np.where(dz >= 0, 1, -1).astype(np.int8)
    n = n_all[head]
    band = (np.abs(dz) < 0.075 * hw) & (np.abs(Vh[:, 0] - s[:, 0].mean()) <= 1.1 * 0.5 * np.ptp(s[:, 0])) \
        & (np.abs(n[:, 2]) > 0.3)
    side[band] = np.where(n[band, 2] < 0, 1, -1)
    return side


def _vertex_area(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    a = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    out = np.zeros(len(v))
    for k in range(3):
        np.add.at(out, f[:, k], a / 3.0)
    return out
