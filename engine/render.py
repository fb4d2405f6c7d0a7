"""Software rendering of vertex sequences: frames, contact sheets and MP4s.

Why a renderer of our own: the visual checks of the data and of model output must run
headless on a CPU-only machine (CI, training jobs) without Blender or OpenGL. A small
vectorised numpy z-buffer rasteriser is enough for a 256-pixel face and is fast enough
for a few hundred frames (see ``tests/test_render.py`` for the timing budget).

Conventions (Blender-friendly, the same as the SynthTalk heads): Z is up and the face
looks toward -Y. The "front" camera sits on the -Y side looking toward +Y; the
"three_quarter" camera is the front camera turned 35 degrees about Z so that the
character's left cheek (+X side) is visible. Projection is orthographic and the framing
is computed once per sequence (from all frames) so the head does not jitter.

Colours: pass a :class:`engine.topology.Topology` (or anything with ``faces`` and
``masks``) as ``faces`` and regions named ``mouth_interior``, ``teeth``, ``vermilion``,
``eyeballs``, ``iris`` and ``brows`` get their own colours, so an open mouth shows as a
dark opening. Otherwise pass ``vertex_colors`` (V,3) in [0,1] or get uniform skin.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.fileio import atomic_path
from engine.metrics import inner_lip_gap

__all__ = [
    "FFmpegNotFound",
    "contact_sheet",
    "default_vertex_colors",
    "find_ffmpeg",
    "render_camera",
    "render_frames",
    "write_video",
]

SKIN = np.array([0.86, 0.68, 0.58])
REGION_COLORS: dict[str, tuple[float, float, float]] = {
    # applied in this order: later regions win where masks overlap
    "vermilion": (0.74, 0.42, 0.42),
    "brows": (0.55, 0.40, 0.33),
    "mouth_interior": (0.22, 0.06, 0.07),
    "teeth": (0.93, 0.90, 0.82),
    "eyeballs": (0.95, 0.95, 0.93),
    "iris": (0.25, 0.17, 0.10),
}
BACKGROUND = (0.93, 0.94, 0.96)
VIEW_YAW_DEG = {"front": 0.0, "three_quarter": 35.0}


class FFmpegNotFound(RuntimeError):
    """No ffmpeg executable: the message says how to get one."""


# --------------------------------------------------------------------------- inputs
def _split_faces(faces: Any) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Accept a (F,3) index array or a Topology-like object; return (faces, masks|None)."""
    if hasattr(faces, "faces") and hasattr(faces, "masks"):
        return np.asarray(faces.faces, dtype=np.int64), dict(faces.masks)
    arr = np.asarray(faces)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"faces must be an (F, 3) triangle index array, got shape {arr.shape}")
    return arr.astype(np.int64), None


def _check_frames(frames: np.ndarray, faces: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim == 2:
        if frames.shape[1] == 3:
            frames = frames[None]
        elif frames.shape[1] % 3 == 0:  # FaceFormer-style (T, V*3)
            frames = frames.reshape(frames.shape[0], -1, 3)
    if frames.ndim != 3 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (T, V, 3) or (T, V*3); got shape {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T = 0): nothing to render")
    if faces.size and (faces.min() < 0 or faces.max() >= frames.shape[1]):
        raise ValueError(
            f"faces index vertices up to {faces.max()} but frames have {frames.shape[1]} vertices: "
            "frames and faces come from different topologies")
    if not np.all(np.isfinite(frames)):
        raise ValueError("frames contain NaN or inf values")
    return frames


def default_vertex_colors(num_vertices: int, masks: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Skin everywhere, region colours where the topology names the region."""
    col = np.tile(SKIN, (num_vertices, 1))
    if masks:
        for name, rgb in REGION_COLORS.items():
            idx = masks.get(name)
            if idx is not None and len(idx):
                col[np.asarray(idx, dtype=np.int64)] = rgb
    return col


# --------------------------------------------------------------------------- camera
def _rotate_view(frames: np.ndarray, view: str) -> np.ndarray:
    if view not in VIEW_YAW_DEG:
        raise ValueError(f"view must be one of {sorted(VIEW_YAW_DEG)}, got {view!r}")
    a = np.deg2rad(VIEW_YAW_DEG[view])
    if a == 0.0:
        return frames
    c, s = np.cos(a), np.sin(a)
    # rotate the mesh about Z so that the camera, still on -Y, sees it as if it had moved
    # toward +X: the nose (at -Y) moves to the image's left, the +X cheek faces the camera
    x, y = frames[..., 0], frames[..., 1]
    out = frames.copy()
    out[..., 0] = c * x + s * y
    out[..., 1] = -s * x + c * y
    return out


def _framing(rot: np.ndarray, size: int, margin: float = 0.06,
             focus: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Centre (u, v) and pixels-per-unit that fit every frame of the sequence.

    ``focus`` (vertex indices, e.g. the topology's ``face`` mask) frames that region
    instead of the whole mesh, so a head with a long neck still shows a large face.
    """
    if focus is not None and len(focus):
        rot = rot[:, np.asarray(focus, dtype=np.int64)]
    u = rot[..., 0]
    v = rot[..., 2]
    lo = np.array([u.min(), v.min()])
    hi = np.array([u.max(), v.max()])
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1], 1e-9))
    scale = size * (1.0 - 2 * margin) / extent
    return (lo + hi) / 2.0, scale


def _focus(masks: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """Region to frame: the topology's ``face`` mask when it has one."""
    if masks and "face" in masks and len(masks["face"]):
        return np.asarray(masks["face"], dtype=np.int64)
    return None


# --------------------------------------------------------------------------- shading
def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted
    vn = np.zeros_like(verts)
    for k in range(3):
        for d in range(3):
            vn[:, d] += np.bincount(faces[:, k], weights=fn[:, d], minlength=len(verts))
    n = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.maximum(n, 1e-20)


KEY_LIGHT = (-0.45, -0.7, 0.55)          # from the upper left, in front of the face
LIGHT_WEIGHTS = (0.22, 0.50, 0.38, 0.10)  # ambient, headlight, key light, specular


def _shade(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray,
           key_light: Sequence[float] = KEY_LIGHT, weights: Sequence[float] = LIGHT_WEIGHTS) -> np.ndarray:
    """Per-vertex Lambert: headlight + a key light (default from the upper left) + ambient."""
    n = _vertex_normals(verts, faces)
    to_cam = np.array([0.0, -1.0, 0.0])
    key = np.asarray(key_light, dtype=np.float64)
    key = key / np.linalg.norm(key)
    head = np.clip(n @ to_cam, 0.0, 1.0)
    keyl = np.clip(n @ key, 0.0, 1.0)
    amb, w_head, w_key, w_spec = weights
    inten = amb + w_head * head + w_key * keyl
    spec = w_spec * head ** 24
    return np.clip(colors * inten[:, None] + spec[:, None], 0.0, 1.0)


# --------------------------------------------------------------------------- raster
def _rasterize(px: np.ndarray, depth: np.ndarray, vcol: np.ndarray, faces: np.ndarray,
               width: int, height: int, background: Sequence[float]) -> np.ndarray:
    """Z-buffer rasterisation of one frame, vectorised over all triangles with scanlines.

    px: (V,2) pixel coordinates (x right, y down); depth: (V,) smaller is nearer.
    For every pixel row a triangle spans, the covered x-interval follows in closed form
    from its three edge functions, so the work is proportional to rows + covered pixels
    (no wasted bounding-box tests). Colours are interpolated barycentrically (Gouraud).
    """
    tri = px[faces]  # (F,3,2)
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    # y points down on screen, so a counter-clockwise (front-facing) triangle has area < 0
    ymin = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2) - 0.5), 0).astype(np.int64)
    ymax = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2) - 0.5), height - 1).astype(np.int64)
    xmin = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2) - 0.5), 0)
    xmax = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2) - 0.5), width - 1)
    keep = (area < -1e-12) & (ymax >= ymin) & (xmax >= xmin)
    img = np.empty((height * width, 3))
    img[:] = background
    t_ids = np.nonzero(keep)[0]
    if not len(t_ids):
        return img.reshape(height, width, 3)
    inv = 1.0 / area[t_ids]
    # barycentric w_i = alpha_i * x + beta_i * y + gamma_i  (edge functions / area)
    alpha = np.stack([(y1 - y2)[t_ids], (y2 - y0)[t_ids], (y0 - y1)[t_ids]], axis=1) * inv[:, None]
    beta = np.stack([(x2 - x1)[t_ids], (x0 - x2)[t_ids], (x1 - x0)[t_ids]], axis=1) * inv[:, None]
    gamma = np.stack([(x1 * y2 - x2 * y1)[t_ids], (x2 * y0 - x0 * y2)[t_ids],
                      (x0 * y1 - x1 * y0)[t_ids]], axis=1) * inv[:, None]
    nrows = ymax[t_ids] - ymin[t_ids] + 1
    row_t = np.repeat(np.arange(len(t_ids)), nrows)
    starts = np.cumsum(nrows) - nrows
    row_y = ymin[t_ids][row_t] + (np.arange(len(row_t)) - starts[row_t])
    cy = row_y + 0.5
    k = beta[row_t] * cy[:, None] + gamma[row_t]          # (R,3): w_i = alpha_i*x + k_i
    al = alpha[row_t]
    eps = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = -k / al
    lo = np.where(al > eps, bound, -np.inf).max(axis=1)
    hi = np.where(al < -eps, bound, np.inf).min(axis=1)
    flat_ok = np.all((np.abs(al) > eps) | (k >= -1e-9), axis=1)
    i0 = np.maximum(np.ceil(np.maximum(lo, xmin[t_ids][row_t] + 0.5 - 1e-9) - 0.5), 0)
    i1 = np.minimum(np.floor(np.minimum(hi, xmax[t_ids][row_t] + 0.5 + 1e-9) - 0.5), width - 1)
    cnt = np.where(flat_ok & (i1 >= i0), i1 - i0 + 1, 0).astype(np.int64)
    if cnt.sum() == 0:
        return img.reshape(height, width, 3)
    pr = np.repeat(np.arange(len(row_t)), cnt)
    pstart = np.cumsum(cnt) - cnt
    qx = i0.astype(np.int64)[pr] + (np.arange(len(pr)) - pstart[pr])
    cx = qx + 0.5
    bary = np.clip(al[pr] * cx[:, None] + k[pr], 0.0, 1.0)
    bary /= np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)
    f = faces[t_ids[row_t[pr]]]
    dep = (bary * depth[f]).sum(axis=1)
    pix = row_y[pr] * width + qx
    order = np.lexsort((dep, pix))
    pix_s = pix[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = pix_s[1:] != pix_s[:-1]
    win = order[first]
    fw = f[win]
    bw = bary[win]
    img[pix[win]] = (bw[:, 0:1] * vcol[fw[:, 0]] + bw[:, 1:2] * vcol[fw[:, 1]] + bw[:, 2:3] * vcol[fw[:, 2]])
    return img.reshape(height, width, 3)


def render_frames(frames: np.ndarray, faces: Any, size: int = 256, view: str = "front",
                  vertex_colors: np.ndarray | None = None, supersample: int = 1,
                  background: Sequence[float] = BACKGROUND) -> np.ndarray:
    """Render a vertex sequence to uint8 images (T, size, size, 3).

    ``faces`` is an (F,3) array or a Topology (its masks then colour lips, mouth interior,
    teeth, eyes and brows). ``supersample`` renders at k x size and box-filters down
    (anti-aliasing; costs k^2).
    """
    tri, masks = _split_faces(faces)
    frames = _check_frames(frames, tri)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    ss = int(supersample)
    if ss < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    V = frames.shape[1]
    if vertex_colors is None:
        vcol = default_vertex_colors(V, masks)
    else:
        vcol = np.asarray(vertex_colors, dtype=np.float64)
        if vcol.shape != (V, 3):
            raise ValueError(f"vertex_colors must be ({V}, 3), got {vcol.shape}")
    big = size * ss
    centre, scale = _framing(_rotate_view(frames, view), big, focus=_focus(masks))
    return _render_core(frames, tri, vcol, size, ss, view, centre, scale, background)


def render_camera(frames: np.ndarray, faces: np.ndarray, vertex_colors: np.ndarray, *, size: int,
                  centre: Sequence[float], scale: float, supersample: int = 1,
                  background: Sequence[float] = BACKGROUND, key_light: Sequence[float] = KEY_LIGHT,
                  light_weights: Sequence[float] = LIGHT_WEIGHTS) -> np.ndarray:
    """Render with an explicit camera and light: uint8 ``(T, size, size, 3)``.

    For image datasets that need one fixed framing across identities and sequences (e.g. a mouth
    crop) and their own lighting: ``centre`` is the (x, z) point at the image centre, ``scale``
    pixels per unit in the final image, the camera looks along +Y (orthographic). ``faces`` may
    be any subset of the mesh's triangles (only what the crop shows, which is faster).
    """
    tri = np.asarray(faces, dtype=np.int64)
    frames = _check_frames(frames, tri)
    vcol = np.asarray(vertex_colors, dtype=np.float64)
    if vcol.shape != (frames.shape[1], 3):
        raise ValueError(f"vertex_colors must be ({frames.shape[1]}, 3), got {vcol.shape}")
    ss = int(supersample)
    if size < 8 or ss < 1:
        raise ValueError(f"size must be >= 8 and supersample >= 1, got {size}, {supersample}")
    return _render_core(frames, tri, vcol, size, ss, "front", np.asarray(centre, dtype=np.float64),
                        float(scale) * ss, background, key_light, light_weights)


def _render_core(frames: np.ndarray, tri: np.ndarray, vcol: np.ndarray, size: int, ss: int,
                 view: str, centre: np.ndarray, scale: float,
                 background: Sequence[float] = BACKGROUND, key_light: Sequence[float] = KEY_LIGHT,
                 light_weights: Sequence[float] = LIGHT_WEIGHTS) -> np.ndarray:
    """Rasterise every frame with a fixed camera (centre, scale are in the supersampled image)."""
    V = frames.shape[1]
    rot = _rotate_view(frames, view)
    big = size * ss
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    for t in range(frames.shape[0]):
        v = rot[t]
        px = np.empty((V, 2))
        px[:, 0] = (v[:, 0] - centre[0]) * scale + big / 2.0
        px[:, 1] = big / 2.0 - (v[:, 2] - centre[1]) * scale
        img = _rasterize(px, v[:, 1], _shade(v, tri, vcol, key_light, light_weights), tri, big, big, background)
        if ss > 1:
            img = img.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
        out[t] = np.clip(np.round(np.power(img, 1 / 1.1) * 255.0), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- contact sheet
_PHONE_CLASS = {
    **{p: "bilabial" for p in ("p", "b", "m")},
    **{p: "labiodental" for p in ("f", "v")},
    **{p: "rounded" for p in ("uw", "uh", "ow", "ao", "oy", "w")},
    **{p: "open" for p in ("aa", "ae", "ah", "aw", "ay", "eh", "er", "ey", "ih", "iy")},
    "sil": "silence", "sp": "silence", "": "silence",
}
_CLASS_COLOR = {
    "bilabial": "#d62728", "labiodental": "#ff7f0e", "rounded": "#9467bd",
    "open": "#1f77b4", "silence": "#dddddd", "other": "#2ca02c",
}


def _phone_at(phones: Sequence[Sequence[Any]] | None, t: float) -> str:
    if not phones:
        return ""
    for lab, s, e in phones:
        if float(s) <= t < float(e):
            return str(lab)
    return ""


def _atomic_savefig(fig: Any, out_path: str | os.PathLike, dpi: int) -> None:
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def contact_sheet(frames: np.ndarray, faces: Any, out_png: str | os.PathLike, fps: float,
                  phones: Sequence[Sequence[Any]] | None = None,
                  upper_inner: np.ndarray | None = None, lower_inner: np.ndarray | None = None,
                  n: int = 12, title: str = "", size: int = 256, view: str = "front",
                  cols: int = 6, supersample: int = 2,
                  vertex_colors: np.ndarray | None = None,
                  frame_indices: Sequence[int] | None = None, marked: Sequence[int] | None = None) -> str:
    """PNG with n evenly spaced frames (labelled time + phone), a phone timeline and the
    mouth-aperture curve with markers at the sampled frames. Returns the output path.

    ``frame_indices`` picks the frames instead (e.g. every /p b m/); frames in ``marked`` get a red
    border, their inner-lip gap in the label and red markers on the gap curve.

    Paired inner-lip indices default to the topology's ``lip_upper_inner`` /
    ``lip_lower_inner`` masks when ``faces`` is a Topology.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    tri, masks = _split_faces(faces)
    frames = _check_frames(frames, tri)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    T = frames.shape[0]
    n = max(1, min(int(n), T))
    if upper_inner is None and masks and "lip_upper_inner" in masks and "lip_lower_inner" in masks:
        upper_inner, lower_inner = masks["lip_upper_inner"], masks["lip_lower_inner"]
    if frame_indices is not None:
        idx = np.unique(np.clip(np.asarray(frame_indices, dtype=np.int64), 0, T - 1))
    else:
        idx = np.unique(np.round(np.linspace(0, T - 1, n)).astype(np.int64))
    mark = set(int(i) for i in (marked if marked is not None else []))
    imgs = render_frames(frames[idx], faces, size=size, view=view, supersample=supersample,
                         vertex_colors=vertex_colors)
    # framing must match the whole sequence, so re-render with the full-sequence framing
    # only when the sampled subset could frame differently (cheap: n frames)
    cols = max(1, min(cols, len(idx)))
    rows = int(np.ceil(len(idx) / cols))
    has_gap = upper_inner is not None and lower_inner is not None
    gap = np.asarray(inner_lip_gap(frames, upper_inner, lower_inner), dtype=np.float64) if has_gap else None
    extent = float(np.ptp(frames[0], axis=0).max())
    unit, mul = ("mm", 1000.0) if extent < 2.0 else ("units", 1.0)
    n_plots = 1 + int(has_gap)
    cell = 2.0
    fig = Figure(figsize=(cols * cell, rows * (cell + 0.25) + 1.3 * n_plots + 0.5))
    heights = [cell + 0.25] * rows + [1.1] * n_plots
    gs = fig.add_gridspec(rows + n_plots, cols, height_ratios=heights, hspace=0.35, wspace=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    for k, fi in enumerate(idx):
        ax = fig.add_subplot(gs[k // cols, k % cols])
        ax.imshow(imgs[k])
        ax.set_xticks([])
        ax.set_yticks([])
        t = fi / fps
        ph = _phone_at(phones, t + 0.5 / fps)
        if int(fi) in mark:
            note = f"  gap {gap[fi] * mul:.1f}" if gap is not None else ""
            ax.set_title(f"{t:.2f}s  {ph}{note}", fontsize=8, color="#d62728")
            for sp in ax.spines.values():
                sp.set_color("#d62728")
                sp.set_linewidth(2.0)
        else:
            ax.set_title(f"{t:.2f}s  {ph}", fontsize=8)
    duration = T / fps
    times = np.arange(T) / fps
    ax_ph = fig.add_subplot(gs[rows, :])
    ax_ph.set_xlim(0, duration)
    ax_ph.set_ylim(0, 1)
    ax_ph.set_yticks([])
    ax_ph.set_ylabel("phones", fontsize=8)
    if phones:
        for lab, s, e in phones:
            lab = str(lab)
            cls = _PHONE_CLASS.get(lab.lower().rstrip("012"), "other")
            ax_ph.axvspan(float(s), float(e), ymin=0.15, ymax=0.85, color=_CLASS_COLOR[cls], alpha=0.8)
            if float(e) - float(s) > duration / 120:
                ax_ph.text((float(s) + float(e)) / 2, 0.5, lab, ha="center", va="center", fontsize=6)
    else:
        ax_ph.text(duration / 2, 0.5, "(no phone timings)", ha="center", va="center", fontsize=8)
    for fi in idx:
        ax_ph.axvline(fi / fps, color="k", lw=0.5, alpha=0.5)
    ax_ph.tick_params(labelsize=7)
    if gap is not None:
        ax_g = fig.add_subplot(gs[rows + 1, :], sharex=ax_ph)
        ax_g.plot(times, gap * mul, color="#333333", lw=1.0)
        plain = np.array([i for i in idx if int(i) not in mark], dtype=np.int64)
        red = np.array([i for i in idx if int(i) in mark], dtype=np.int64)
        ax_g.plot(plain / fps, gap[plain] * mul, "o", color="#777777", ms=3)
        ax_g.plot(red / fps, gap[red] * mul, "o", color="#d62728", ms=4)
        ax_g.set_ylabel(f"lip gap ({unit})", fontsize=8)
        ax_g.set_xlabel("time (s)", fontsize=8)
        ax_g.tick_params(labelsize=7)
        ax_g.set_xlim(0, duration)
    else:
        ax_ph.set_xlabel("time (s)", fontsize=8)
    _atomic_savefig(fig, out_png, dpi=100)
    plt.close("all")
    return os.fspath(out_png)


# --------------------------------------------------------------------------- video
def find_ffmpeg() -> str:
    """System ffmpeg first, then the binary shipped by imageio-ffmpeg."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg  # type: ignore

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.exists(exe):
            return exe
    except (ImportError, OSError, RuntimeError):  # not installed, or its binary is missing
        exe = None
    raise FFmpegNotFound(
        "write_video needs ffmpeg: install it with `apt-get install ffmpeg` (Debian/Ubuntu), "
        "`brew install ffmpeg` (macOS) or `pip install imageio-ffmpeg`, or render a contact sheet instead")


def write_video(frames: np.ndarray, faces: Any, out_mp4: str | os.PathLike, fps: float,
                audio_wav: str | os.PathLike | None = None, size: int = 256, view: str = "front",
                vertex_colors: np.ndarray | None = None, chunk: int = 64) -> str:
    """Encode the rendered sequence as H.264 MP4 (with the audio muxed if given). Atomic."""
    tri, masks = _split_faces(faces)
    frames = _check_frames(frames, tri)
    V = frames.shape[1]
    vcol = default_vertex_colors(V, masks) if vertex_colors is None else np.asarray(vertex_colors, float)
    if vcol.shape != (V, 3):
        raise ValueError(f"vertex_colors must be ({V}, 3), got {vcol.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if size % 2:
        raise ValueError(f"size must be even for H.264 (yuv420p), got {size}")
    if audio_wav is not None and not os.path.isfile(audio_wav):
        raise FileNotFoundError(f"audio file not found: {audio_wav}")
    exe = find_ffmpeg()
    out_mp4 = os.fspath(out_mp4)
    # render once with whole-sequence framing, then stream chunks to ffmpeg's stdin
    rot_all = _rotate_view(frames, view)
    centre, scale = _framing(rot_all, size, focus=_focus(masks))
    with atomic_path(out_mp4) as tmp:
        cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{size}x{size}", "-r", f"{fps:g}", "-i", "-"]
        if audio_wav is not None:
            cmd += ["-i", os.fspath(audio_wav)]
        cmd += ["-map", "0:v:0"]
        if audio_wav is not None:
            cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                "-movflags", "+faststart", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdin is not None
            for s in range(0, frames.shape[0], chunk):
                imgs = _render_core(frames[s:s + chunk], tri, vcol, size, 1, view, centre, scale)
                proc.stdin.write(np.ascontiguousarray(imgs).tobytes())
            proc.stdin.close()
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            rc = proc.wait()
            if rc != 0:
                raise RuntimeError(f"ffmpeg failed (exit {rc}): {err.strip()[-2000:]}")
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
    return out_mp4
