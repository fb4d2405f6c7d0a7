"""Facial landmarks on a head mesh from geometric cues, plus the manual override file.

How (all in the canonical frame: Z up, face toward -Y, see :mod:`engine.retarget.meshin`):

1. **Symmetry plane** (:func:`find_face`).  Area-uniform surface samples are mirrored across
   vertical planes every 6 degrees of azimuth (refined to 1.5) and a few offsets; the plane
   whose mirror image lies closest to the surface (median nearest-sample distance) is the
   mid-sagittal plane.
2. **Facing.** Of the two horizontal directions in that plane, the face is the side whose
   mid-line profile has the sharpest protrusion (the nose) above a smoothed profile; it must
   protrude at least twice as much as the other side (the back of the skull), the shape must be
   mirror-symmetric, and taller than wide -- a cube or a head lying on its side is no face.
   Nose tip = the most protruding mid-line point in the middle band.
3. **Mouth** (:func:`refine_mouth`), searched near where a coarse fit of the template put it:
   densely re-sampled mid-line profile; the stomion is the strongest concave kink (or the gap
   of an open mouth) within 40% of a mouth half-width, the lips the most protruding points
   just above and below it.
4. **Mouth corners** (:func:`_slit_corners`): the two ends of the slit -- where points facing
   each other across the lip line stop being far apart along the surface.  The pairs across the
   slit also give its line and, when the mid-line profile's strongest kink is off the slit (a
   mouth without interior is a hole there), the stomion.  Profiles of thin vertical slices
   walking outward along the groove are the fallback for a mesh without a slit.

Why not a 2-D face-landmark model on a rendering: the offline mediapipe face mesh
(``mediapipe==0.10.14``) would add jax, OpenCV and protobuf to the engine's dependencies; the
geometric cues need none and are exact on meshes (no rendering, no camera).  Robustness
(measured on the test characters of ``training/characters.py``; README): human-like heads with
or without neck, mouth interior, teeth, eyes, any vertex density, lips closed or ~5 mm apart,
exaggerated lips and jaw, facing up to ~35 degrees off the expected front.  It fails (and says
so, asking for a landmarks file) on non-human proportions, on heads turned further, and on
meshes that are not heads.

The override is a JSON object ``{"nose_tip": 123, "mouth_corner_l": 456, ...}`` of named
landmarks -> vertex indices of the user's mesh (all of :data:`REQUIRED` must be present;
``mouth_corner_l`` is the character's left, +X in Blender's front view).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from engine.retarget.geometry import edge_graph

__all__ = ["REQUIRED", "FaceFrame", "LandmarkError", "Landmarks", "find_face", "load_landmarks_json", "refine_mouth", "surface_samples"]

# mouth_corner_l is the character's left (+X in the canonical frame)
REQUIRED = ("nose_tip", "upper_lip", "mouth_centre", "lower_lip", "mouth_corner_l", "mouth_corner_r")
MAX_FACING_DEG = 35.0


class LandmarkError(ValueError):
    """Landmarks could not be found / read; the message says what the user should do."""


@dataclass
class Landmarks:
    """Named 3-D points in the canonical frame + how they were found."""
    points: dict[str, np.ndarray]
    source: str                       # "auto" | "file"
    facing_deg: float = 0.0           # azimuth of the detected face direction from -Y (auto only)
    symmetry_error: float = 0.0       # median mirror distance / head height (auto only)
    slit: np.ndarray | None = None    # (n, 3) points along the lip line, corner to corner (auto only)

    def array(self, names: tuple[str, ...] = REQUIRED) -> np.ndarray:
        return np.stack([self.points[n] for n in names])


def surface_samples(v: np.ndarray, f: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly distributed over the surface area (deterministic)."""
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise LandmarkError("the mesh has no surface area (all triangles are degenerate)")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    a, b, c = 1 - s, s * (1 - r2), s * r2
    t = tri[idx]
    return a[:, None] * t[:, 0] + b[:, None] * t[:, 1] + c[:, None] * t[:, 2]


def _symmetry(P: np.ndarray, height: float) -> tuple[np.ndarray, float, float]:
    """Lateral unit normal (horizontal), plane offset along it, median mirror error / height."""
    tree = cKDTree(P[:: max(1, len(P) // 8000)])
    sub = P[:: max(1, len(P) // 800)]
    cap = 0.05 * height

    def mirror_err(m: np.ndarray) -> float:
        d = tree.query(m, distance_upper_bound=cap)[0]
        return float(np.median(np.minimum(d, cap)))

    c = P.mean(0)
    best: tuple[float, np.ndarray, float] = (np.inf, np.array([1.0, 0.0, 0.0]), 0.0)
    for phi in np.deg2rad(np.arange(0.0, 180.0, 6.0)):
        n = np.array([np.cos(phi), np.sin(phi), 0.0])
        for off in (-0.03, 0.0, 0.03):
            d = (sub - c) @ n - off * height
            m = sub - 2 * d[:, None] * n
            err = mirror_err(m)
            if err < best[0]:
                best = (err, n, off)
    err, n, off = best
    # refine the azimuth and offset locally
    phi0 = np.arctan2(n[1], n[0])
    for phi in phi0 + np.deg2rad(np.arange(-6.0, 6.01, 1.5)):
        nn = np.array([np.cos(phi), np.sin(phi), 0.0])
        for o in off + np.arange(-0.03, 0.031, 0.01):
            d = (sub - c) @ nn - o * height
            e = mirror_err(sub - 2 * d[:, None] * nn)
            if e < err:
                err, n, off = e, nn, o
    return n, float(c @ n + off * height), err / height


def _profile(y: np.ndarray, z: np.ndarray, z0: float, z1: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Front-most (minimum) y per z bin; empty bins interpolated."""
    edges = np.arange(z0, z1 + step, step)
    k = np.clip(((z - z0) / step).astype(int), 0, len(edges) - 2)
    ok = (z >= z0) & (z <= z1)
    prof = np.full(len(edges) - 1, np.inf)
    np.minimum.at(prof, k[ok], y[ok])
    zc = edges[:-1] + step / 2
    fin = np.isfinite(prof)
    if fin.sum() < 2:
        return zc, np.full_like(zc, np.nan)
    prof[~fin] = np.interp(zc[~fin], zc[fin], prof[fin])
    # a bin that happened to get no sample on the front surface reads as a deep notch: despike
    # (only toward the back, so real protrusions are never flattened)
    med = median_filter(prof, size=5, mode="nearest")
    spike = prof - med > 4 * step
    prof[spike] = med[spike]
    return zc, prof


@dataclass
class FaceFrame:
    """What :func:`find_face` learns about a head: where it looks and where its nose is."""
    lateral: np.ndarray        # unit, toward the character's left
    front: np.ndarray          # unit, the direction the face looks
    plane_offset: float        # mid-sagittal plane: x . lateral = plane_offset
    nose_tip: np.ndarray       # canonical coordinates
    height: float              # z extent of the mesh
    facing_deg: float
    symmetry_error: float
    samples: np.ndarray        # surface samples used (for the profile searches)
    mesh: tuple[np.ndarray, np.ndarray] | None = None   # (vertices, faces) in the canonical frame

    def local(self, P: np.ndarray) -> np.ndarray:
        """Canonical -> face-local coordinates (x lateral from the mid-plane, y depth with the
        front at -y, z up)."""
        return np.stack([P @ self.lateral - self.plane_offset, -(P @ self.front), P[:, 2]], 1)

    def canonical(self, Q: np.ndarray) -> np.ndarray:
        basis = np.stack([self.lateral, -self.front, np.array([0.0, 0.0, 1.0])])
        return self.lateral * self.plane_offset + np.asarray(Q) @ basis


def find_face(v: np.ndarray, f: np.ndarray, num_samples: int = 40000) -> FaceFrame:
    """Steps 1-2 of the module docstring plus the nose tip.  Raises :class:`LandmarkError` when
    the mesh shows no face or looks the wrong way."""
    v = np.asarray(v, np.float64)
    P = np.concatenate([surface_samples(v, f, num_samples), v[np.unique(f)]])
    z_lo, z_hi = float(P[:, 2].min()), float(P[:, 2].max())
    H = z_hi - z_lo
    if H <= 0:
        raise LandmarkError("the mesh is flat; no face can be found")
    n_lat, d_lat, sym_err = _symmetry(P, H)
    up = np.array([0.0, 0.0, 1.0])
    front_a = np.cross(n_lat, up)
    near = np.abs(P @ n_lat - d_lat) < 0.02 * H
    step = 0.005 * H
    scores = []
    for fdir in (front_a, -front_a):
        y = -(P[near] @ fdir)
        zc, prof = _profile(y, P[near, 2], z_lo, z_hi, step)
        band = (zc > z_lo + 0.2 * H) & (zc < z_hi - 0.1 * H)
        smooth = uniform_filter1d(prof, size=max(3, int(0.12 * H / step)), mode="nearest")
        scores.append(float(np.max((smooth - prof)[band])) if band.any() else 0.0)
    fdir = front_a if scores[0] >= scores[1] else -front_a
    lateral_extent = float(np.ptp(P @ n_lat))
    # a face: one side (the nose) protrudes much more than the other (the back of the skull), the
    # shape is mirror-symmetric, and a head is taller than it is wide (a cube or a head lying on
    # its side fails one of these)
    if (max(scores) < 0.01 * H or max(scores) < 2.0 * min(scores) or sym_err > 0.02
            or H < 1.0 * lateral_extent):
        raise LandmarkError("no face found: the mesh has no nose-like protrusion on a left/right symmetric "
                            "shape (a human-like head is expected; if it is one, pass --landmarks lm.json "
                            "with vertex indices for " + ", ".join(REQUIRED) + ")")
    facing = float(np.degrees(np.arctan2(fdir[0], -fdir[1])))  # 0 = facing -Y, +90 = facing +X
    if abs(facing) > MAX_FACING_DEG:
        names = {90: "+X", -90: "-X", 180: "+Y", -180: "+Y"}
        near_axis = min(names, key=lambda a: abs(a - facing))
        raise LandmarkError(
            f"the face looks toward {names[near_axis]} in the canonical frame (about {facing:.0f} degrees from "
            "the expected front); the fit expects the face toward -Y with Z up (Blender's front view), i.e. "
            "toward +Z in a Y-up OBJ: rotate the mesh, or pass --front with the direction the face looks "
            "(e.g. --front +x)")
    lat = np.cross(up, fdir)
    lat /= np.linalg.norm(lat)
    off = d_lat * float(lat @ n_lat)
    frame = FaceFrame(lat, fdir, off, np.zeros(3), H, facing, sym_err, P, (v, np.asarray(f)))
    X = frame.local(P)
    mid = np.abs(X[:, 0]) < 0.015 * H
    zc, prof = _profile(X[mid, 1], X[mid, 2], z_lo, z_hi, step)
    band = (zc > z_lo + 0.2 * H) & (zc < z_hi - 0.1 * H)
    i_nose = int(np.argmin(np.where(band, prof, np.inf)))
    frame.nose_tip = frame.canonical(np.array([0.0, prof[i_nose], zc[i_nose]]))
    return frame


def refine_mouth(frame: FaceFrame, guess: np.ndarray, mouth_halfwidth: float) -> Landmarks:
    """Step 3-4 near a guess of the mouth centre (canonical; from the coarse template fit):
    the stomion is the strongest concave kink (or the gap of an open mouth) of the mid-line
    profile within +-40% of the mouth half-width of the guess; the corners are the slit's ends
    (traced along the groove on a mesh without a slit).  Returns all :data:`REQUIRED` landmarks (upper/lower lip: the profile's most
    protruding points just above/below the stomion)."""
    H = frame.height
    g_c = np.asarray(guess, np.float64)
    g = frame.local(g_c[None])[0]
    # dense samples on the triangles around the mouth only (the whole-head samples are too sparse
    # to resolve a closed lip line)
    P = frame.samples
    if frame.mesh is not None:
        mv, mf = frame.mesh
        cen = mv[mf].mean(1)
        box = np.all(np.abs(cen - g_c) < np.array([2.5, 2.5, 2.5]) * mouth_halfwidth, axis=1)
        if box.sum() >= 10:
            P = np.concatenate([surface_samples(mv, mf[box], 60000, seed=1), mv[np.unique(mf[box])]])
    X = frame.local(P)
    step = 0.0025 * H
    win = 0.4 * mouth_halfwidth
    mid = np.abs(X[:, 0]) < 0.01 * H
    zc, prof = _profile(X[mid, 1], X[mid, 2], g[2] - 2.5 * win, g[2] + 2.5 * win, step)
    if np.isnan(prof).any():
        raise LandmarkError("no surface around the expected mouth; place landmarks with --landmarks lm.json")
    k = max(1, round(0.004 * H / step))
    kink = np.full_like(prof, -np.inf)
    kink[k:-k] = prof[k:-k] - 0.5 * (prof[:-2 * k] + prof[2 * k:])
    inwin = np.abs(zc - g[2]) <= win
    i_st = int(np.argmax(np.where(inwin, kink, -np.inf)))
    if kink[i_st] <= 0:
        raise LandmarkError("could not find the lip line near the expected mouth; place landmarks with "
                            "--landmarks lm.json (vertex indices for " + ", ".join(REQUIRED) + ")")
    span = round(1.2 * win / step)
    i_ul = i_st + 1 + int(np.argmin(prof[i_st + 1:i_st + 1 + span]))
    i_ll = max(0, i_st - span) + int(np.argmin(prof[max(0, i_st - span):i_st]))
    depth_c = prof[i_st] - max(prof[i_ul], prof[i_ll])
    pts = {"upper_lip": np.array([0.0, prof[i_ul], zc[i_ul]]),
           "lower_lip": np.array([0.0, prof[i_ll], zc[i_ll]]),
           "mouth_centre": np.array([0.0, 0.5 * (prof[i_ul] + prof[i_ll]), zc[i_st]])}
    lip_h = max(zc[i_ul] - zc[i_ll], 4 * step)
    slit: list[np.ndarray] = [pts["mouth_centre"]]
    traced: dict[str, tuple[np.ndarray | None, list[np.ndarray]]] = {}
    for side, name in ((1.0, "mouth_corner_l"), (-1.0, "mouth_corner_r")):
        z_prev, last, path = zc[i_st], None, []
        dx = 0.08 * mouth_halfwidth
        for kk in range(1, 60):
            xs = side * kk * dx
            sl = (np.abs(X[:, 0] - xs) < dx) & (np.abs(X[:, 2] - z_prev) < 1.5 * lip_h)
            if sl.sum() < 8:
                break
            zz, pp = _profile(X[sl, 1], X[sl, 2], z_prev - 1.5 * lip_h, z_prev + 1.5 * lip_h, step)
            if np.isnan(pp).any():
                break
            j0 = int(np.argmin(np.abs(zz - z_prev)))
            r = max(1, int(0.35 * lip_h / step))
            lo_, hi_ = max(k, j0 - r), min(len(zz) - k, j0 + r + 1)
            if hi_ <= lo_:
                break
            kk_ = pp[lo_:hi_] - 0.5 * (pp[lo_ - k:hi_ - k] + pp[lo_ + k:hi_ + k])
            j = lo_ + int(np.argmax(kk_))
            depth = pp[j] - max(pp[j:].min(), pp[:j + 1].min())
            if depth < 0.25 * depth_c or kk_.max() <= 0:
                break
            z_prev = zz[j]
            last = np.array([xs, max(pp[j:].min(), pp[:j + 1].min()), zz[j]])
            path.append(last)
        traced[name] = (last, path)
    cut = _slit_corners(frame, X, frame.canonical(np.stack([pts["upper_lip"], pts["lower_lip"]])),
                        zc[i_st], mouth_halfwidth)
    if cut is not None and abs(cut["stomion_z"] - zc[i_st]) > 0.25 * lip_h:
        # the strongest kink is not on the slit (a mouth without interior is a hole there, which
        # the front-most profile reads as flat): the stomion is where the slit crosses the mid-line
        i_st = int(np.argmin(np.abs(zc - cut["stomion_z"])))
        i_ul = i_st + 1 + int(np.argmin(prof[i_st + 1:i_st + 1 + span]))
        i_ll = max(0, i_st - span) + int(np.argmin(prof[max(0, i_st - span):i_st]))
        pts.update({"upper_lip": np.array([0.0, prof[i_ul], zc[i_ul]]),
                    "lower_lip": np.array([0.0, prof[i_ll], zc[i_ll]]),
                    "mouth_centre": np.array([0.0, 0.5 * (prof[i_ul] + prof[i_ll]), zc[i_st]])})
        slit = [pts["mouth_centre"]]
    for side, name in ((1.0, "mouth_corner_l"), (-1.0, "mouth_corner_r")):
        last, path = traced[name]
        if cut is not None:
            # the slit's own end wins over the groove trace (see _slit_corners), and the slit's
            # line is where the pairs across it are
            last = cut[name]
            path = [q for q in cut["line"] if side * q[0] > 0 and side * q[0] < side * last[0]] + [last]
        if last is None:
            raise LandmarkError("could not trace the lip line to the mouth corners; place landmarks: "
                                "pass --landmarks lm.json with vertex indices for " + ", ".join(REQUIRED))
        pts[name] = last
        slit = (path[::-1] + slit) if side < 0 else (slit + path)
    out = {k: frame.canonical(q) for k, q in pts.items()}
    out["nose_tip"] = frame.nose_tip
    return Landmarks(points=out, source="auto", facing_deg=frame.facing_deg,
                     symmetry_error=frame.symmetry_error, slit=frame.canonical(np.stack(slit)))


def _slit_corners(frame: FaceFrame, samples_local: np.ndarray, lips: np.ndarray, z_st: float,
                  mouth_halfwidth: float) -> dict[str, Any] | None:
    """The mouth corners as the two ends of the slit, in face-local coordinates, plus the slit's
    line (``line``, points outward from the middle) and its height on the mid-line
    (``stomion_z``); ``None`` when the mesh shows no slit, e.g. lips modelled fused.

    A mouth that can open is cut between the corners: two surface points facing each other across
    the lip line are close in space but far apart along the surface (the path goes around a
    corner, or through the mouth bag), while past the corners the skin is one piece and the two
    distances agree.  So: geodesic (edge-path) distances from the upper-lip and the lower-lip
    landmark; pairs of front-visible vertices within 0.35 mouth half-widths of each other whose
    distances to the two landmarks differ by more than 2.5x their spacing are "across the slit";
    the corners lie just beyond the outermost such pairs on each side (at least 3 pairs agreeing
    within 5% of a half-width, so one odd pair cannot move a corner): a pair ``delta`` short of
    the corner is ~``2 delta`` apart along each lip's distance field (the path goes around the
    corner), so the corner is ~jump/4 beyond it (median over the outermost five pairs).  The groove trace this replaces stopped
    where the groove became shallower than a quarter of its depth at the centre: where the lips
    press together the centre groove is well under a millimetre, as shallow as the faceting noise
    of a remeshed head, and the trace stopped anywhere from 3 mm to 45 mm from the centre.
    """
    if frame.mesh is None:
        return None
    mv, mf = frame.mesh
    hw = mouth_halfwidth
    L = frame.local(mv)
    used = np.unique(mf)
    near = used[(np.abs(L[used, 0]) < 2.5 * hw) & (np.abs(L[used, 2] - z_st) < 0.8 * hw)]
    if len(near) < 10:
        return None
    # front-visible: within 2 mm-ish (0.1 half-widths) of the front-most surface sample in its
    # (x, z) cell -- the teeth and the mouth bag behind closed lips are not candidates
    cell = 0.08 * hw
    S = samples_local[(np.abs(samples_local[:, 0]) < 2.6 * hw) & (np.abs(samples_local[:, 2] - z_st) < 0.9 * hw)]
    key = lambda Q: (np.floor(Q[:, 0] / cell).astype(np.int64) * 100003 + np.floor(Q[:, 2] / cell).astype(np.int64))
    ks, inv = np.unique(key(S), return_inverse=True)
    front = np.full(len(ks), np.inf)
    np.minimum.at(front, inv, S[:, 1])
    pos = np.searchsorted(ks, key(L[near]))
    known = (pos < len(ks)) & (ks[np.minimum(pos, len(ks) - 1)] == key(L[near]))
    vis = known & (L[near, 1] <= front[np.minimum(pos, len(ks) - 1)] + 0.1 * hw)
    cand = near[vis]
    if len(cand) < 10:
        return None
    G = edge_graph(mv, mf)
    src = [int(used[np.argmin(np.linalg.norm(mv[used] - p, axis=1))]) for p in lips]
    D = dijkstra(G, directed=False, indices=src, limit=8.0 * hw)[:, cand]       # (2, C)
    pairs = cKDTree(L[cand]).query_pairs(0.35 * hw, output_type="ndarray")
    if len(pairs) == 0:
        return None
    a, b = pairs[:, 0], pairs[:, 1]
    ok = np.isfinite(D[:, a]).all(0) & np.isfinite(D[:, b]).all(0)
    a, b = a[ok], b[ok]
    spacing = np.linalg.norm(mv[cand[a]] - mv[cand[b]], axis=1)
    jump = np.abs(D[:, a] - D[:, b]).sum(0)
    across = jump > 2 * 2.5 * np.maximum(spacing, 1e-12)
    mids = 0.5 * (L[cand[a[across]]] + L[cand[b[across]]])
    reach = jump[across] / 4.0
    out = {}
    for side, name in ((1.0, "mouth_corner_l"), (-1.0, "mouth_corner_r")):
        on = side * mids[:, 0] > 0
        m, r = mids[on], reach[on]
        order = np.argsort(-side * m[:, 0])
        xs = side * m[order, 0]
        i0 = next((i for i in range(len(xs) - 2) if xs[i] - xs[i + 2] < 0.05 * hw), None)
        if i0 is None:
            return None
        # a pair delta short of the corner is ~2 delta apart around it, along each of the two
        # lips' distance fields: the corner is ~jump/4 beyond the pair (the outermost five)
        top = order[i0:i0 + 5]
        xc = float(np.median(side * m[top, 0] + r[top]))
        zc_ = float(np.median(m[top, 2]))
        k = np.searchsorted(ks, key(np.array([[side * xc, 0.0, zc_]])))[0]
        hit = k < len(ks) and ks[k] == key(np.array([[side * xc, 0.0, zc_]]))[0]
        depth = float(front[k]) if hit else float(np.median(m[top, 1]))
        out[name] = np.array([side * xc, depth, zc_])
    # the slit's line: median pair midpoint per 10 %-of-a-half-width column, outward from the middle
    col = np.round(mids[:, 0] / (0.1 * hw)).astype(np.int64)
    line = [np.median(mids[col == c_], axis=0) for c_ in np.unique(col)]
    out["line"] = sorted(line, key=lambda q: abs(q[0]))
    centre = np.abs(mids[:, 0]) < 0.2 * hw
    out["stomion_z"] = float(np.median(mids[centre, 2])) if centre.any() else float(z_st)
    return out


def load_landmarks_json(path: str | os.PathLike, num_vertices: int) -> dict[str, int]:
    """Read ``{"name": vertex_index}``; every name in :data:`REQUIRED` must be there."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"landmarks file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise LandmarkError(f"{p}: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LandmarkError(f"{p}: expected a JSON object of landmark name -> vertex index")
    data = data.get("landmarks", data)
    unknown = sorted(set(data) - set(REQUIRED))
    if unknown:
        raise LandmarkError(f"{p}: unknown landmark names {unknown}; valid names: {list(REQUIRED)}")
    missing = [n for n in REQUIRED if n not in data]
    if missing:
        raise LandmarkError(f"{p} names {len(data)} of the {len(REQUIRED)} landmarks the fit needs; "
                            f"add vertex indices for {missing}")
    out = {}
    for k, idx in data.items():
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < num_vertices:
            raise LandmarkError(f"{p}: landmark {k!r} must be a vertex index in 0..{num_vertices - 1}, got {idx!r}")
        out[k] = idx
    return out
