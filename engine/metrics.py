"""Evaluation metrics for speech-driven face animation (all numpy; meshes in dataset units).

Names say exactly which published variant they compute, because the literature uses the
same name ("lip vertex error") for numbers that differ by a square root:

* ``lip_vertex_error_sq``      FaceFormer/CodeTalker/UniTalker: per frame the max over lip
                               vertices of the *squared* L2 error, averaged over frames.
                               Over a test set CodeTalker pools the frames of all clips
                               (``lip_vertex_error_sq_pooled``; :func:`pool_by_frames` from
                               per-clip values), not the mean of per-clip values.
* ``lip_vertex_error_l2``      Wu et al.: the same with the Euclidean distance.
* ``lip_vertex_error_l2_mean`` Euclidean, averaged over lip vertices and frames.
* ``fdd``                      CodeTalker's upper-face dynamics deviation (signed: gt - pred).
* ``lip_readability_percentage`` SelfTalk eq. 18: % of (frame, lip vertex) pairs closer than mu.
* ``f_dtw``                    Wu et al. (paper 003, ``dtw_error`` in the authors' code): frame
                               distance = mean over (masked) vertices of the Euclidean distance;
                               the *total* cost of the optimal DTW path (not length-normalised).
* ``dtw_per_step``             Parley's earlier variant: Euclidean distance of whole-frame
                               vectors, divided by the path length (not a published metric).
* ``bilabial_closure_rate``    fraction of /p b m/ midpoints where the inner lips touch.

Arrays are (T, V, 3); masks are integer vertex-index arrays.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BILABIALS",
    "bilabial_closure_rate",
    "dtw",
    "dtw_per_step",
    "evaluate_all",
    "f_dtw",
    "frame_distances",
    "fdd",
    "inner_lip_gap",
    "mouth_aperture_correlation",
    "lip_readability_percentage",
    "lip_vertex_error_l2",
    "lip_vertex_error_l2_mean",
    "lip_vertex_error_sq",
    "lip_vertex_error_sq_pooled",
    "mean_vertex_error",
    "pool_by_frames",
    "upper_face_error",
]

BILABIALS = frozenset({"p", "b", "m"})
DTW_MAX_CELLS = 60_000_000  # ~1.4 GB of DP tables; longer clips skip F-DTW in evaluate_all
DTW_MAX_WORK = 3e9          # frame pairs x vertices for the F-DTW distance table (~1 min); beyond: skipped


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim == 2:
        p = p.reshape(p.shape[0], -1, 3)
    if g.ndim == 2:
        g = g.reshape(g.shape[0], -1, 3)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} must have the same (T, V, 3) shape")
    if p.shape[0] == 0:
        raise ValueError("cannot evaluate an empty sequence")
    return p, g


def _idx(mask: Any, name: str) -> np.ndarray:
    m = np.asarray(mask, dtype=np.int64).reshape(-1)
    if m.size == 0:
        raise ValueError(f"mask {name!r} is empty")
    return m


def _sq_dist(pred, gt, mask=None, name="mask") -> np.ndarray:
    p, g = _pair(pred, gt)
    if mask is not None:
        m = _idx(mask, name)
        p, g = p[:, m], g[:, m]
    return ((p - g) ** 2).sum(-1)  # (T, V)


def lip_vertex_error_sq(pred, gt, lips) -> float:
    """Max over lip vertices of squared L2 error per frame, mean over frames (FaceFormer)."""
    return float(_sq_dist(pred, gt, lips, "lips").max(axis=1).mean())


def lip_vertex_error_sq_pooled(preds: Sequence, gts: Sequence, lips) -> float:
    """LVE as CodeTalker reports it for a test set: the per-frame max squared lip error of *every
    frame of every clip*, averaged once (a long clip weighs more than a short one)."""
    per_frame = [_sq_dist(p, g, lips, "lips").max(axis=1) for p, g in zip(preds, gts, strict=True)]
    if not per_frame:
        raise ValueError("no clips to evaluate")
    return float(np.concatenate(per_frame).mean())


def pool_by_frames(values: Sequence[float], frames: Sequence[float]) -> float:
    """A per-frame mean over all clips from per-clip means and frame counts (``sum v_i n_i / sum n_i``):
    pooling :func:`lip_vertex_error_sq` values this way gives :func:`lip_vertex_error_sq_pooled`."""
    v = np.asarray(values, dtype=np.float64)
    n = np.asarray(frames, dtype=np.float64)
    if v.shape != n.shape or v.size == 0 or n.sum() <= 0:
        raise ValueError("pool_by_frames needs one positive frame count per value")
    return float((v * n).sum() / n.sum())


def lip_vertex_error_l2(pred, gt, lips) -> float:
    """Max over lip vertices of Euclidean error per frame, mean over frames (Wu et al.)."""
    return float(np.sqrt(_sq_dist(pred, gt, lips, "lips")).max(axis=1).mean())


def lip_vertex_error_l2_mean(pred, gt, lips) -> float:
    """Euclidean error averaged over lip vertices and frames."""
    return float(np.sqrt(_sq_dist(pred, gt, lips, "lips")).mean())


def mean_vertex_error(pred, gt) -> float:
    """Euclidean error averaged over all vertices and frames."""
    return float(np.sqrt(_sq_dist(pred, gt)).mean())


def upper_face_error(pred, gt, upper_face) -> float:
    """Euclidean error averaged over upper-face vertices and frames (speech should barely move them)."""
    return float(np.sqrt(_sq_dist(pred, gt, upper_face, "upper_face")).mean())


def _motion_std(x: np.ndarray, template: np.ndarray, upper: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x.reshape(x.shape[0], -1, 3)
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    disp = ((x[:, upper] - t[upper][None]) ** 2).sum(-1)  # (T, Vu) squared displacement
    return float(disp.std(axis=0).mean())                 # std over time (ddof 0), mean over vertices


def fdd(preds, gts, templates, upper_face) -> float:
    """CodeTalker FDD: per sequence, mean over upper-face vertices of the std over time of the
    squared displacement from the template; gt value minus prediction value; mean over sequences.

    ``preds``/``gts`` are one (T,V,3) array or sequences of them; ``templates`` one (V,3) array
    (shared) or one per sequence.
    """
    if isinstance(preds, np.ndarray) and preds.ndim == 3:
        preds, gts = [preds], [gts]
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts) or not preds:
        raise ValueError(f"fdd needs equally many predictions and ground truths ({len(preds)} vs {len(gts)})")
    if isinstance(templates, np.ndarray) and templates.ndim <= 2:
        templates = [templates] * len(preds)
    templates = list(templates)
    upper = _idx(upper_face, "upper_face")
    diffs = [_motion_std(g, t, upper) - _motion_std(p, t, upper) for p, g, t in zip(preds, gts, templates)]
    return float(np.mean(diffs))


def lip_readability_percentage(pred, gt, lips, threshold: float) -> float:
    """SelfTalk LRP (eq. 18): 100 * mean over frames and lip vertices of [||pred - gt|| < threshold]."""
    if threshold is None or threshold <= 0:
        raise ValueError("LRP needs a positive distance threshold in the dataset's units")
    d = np.sqrt(_sq_dist(pred, gt, lips, "lips"))
    return float((d < threshold).mean() * 100.0)


def dtw(cost: np.ndarray, band: int | None = None) -> tuple[float, int]:
    """Dynamic time warping over a frame-distance matrix ``cost`` ``(Ta, Tb)``.

    ``D[i, j] = cost[i, j] + min(D[i-1, j], D[i, j-1], D[i-1, j-1])`` from ``D[0, 0] = cost[0, 0]``
    to ``D[Ta-1, Tb-1]``.  Returns (total cost of the optimal path, number of cells on it); ties
    prefer the diagonal.  ``band`` is a Sakoe-Chiba radius around the rescaled diagonal (None =
    unconstrained).  O(Ta*Tb) time and memory, vectorised per anti-diagonal.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.size == 0:
        raise ValueError("DTW needs non-empty sequences")
    n, m = cost.shape
    if n * m > DTW_MAX_CELLS:
        raise ValueError(f"DTW of {n} x {m} frames needs too much memory; evaluate shorter clips")
    if band is not None and n > 1 and m > 1:  # a single-frame side leaves only one possible path
        i = np.arange(n)[:, None]
        j = np.arange(m)[None, :]
        cost = np.where(np.abs(j - i * (m - 1) / (n - 1)) <= band, cost, np.inf)
    acc = np.full((n + 1, m + 1), np.inf)
    length = np.zeros((n + 1, m + 1), dtype=np.int64)
    acc[0, 0] = 0.0
    for k in range(2, n + m + 1):  # anti-diagonal i + j = k in the 1-based padded grid
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        cand = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])   # diagonal first: wins ties
        lens = np.stack([length[i - 1, j - 1], length[i - 1, j], length[i, j - 1]])
        best = np.argmin(cand, axis=0)
        cols = np.arange(len(i))
        acc[i, j] = cost[i - 1, j - 1] + cand[best, cols]
        length[i, j] = lens[best, cols] + 1
    total = float(acc[n, m])
    if not math.isfinite(total):
        raise ValueError(f"DTW band {band} is too narrow for sequences of {n} and {m} frames")
    return total, int(length[n, m])


def _masked_frames(x, mask) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(a.shape[0], -1, 3)
    return a[:, _idx(mask, "mask")] if mask is not None else a


def frame_distances(pred, gt, mask=None) -> np.ndarray:
    """``(Tp, Tg)``: entry ``(i, j)`` = mean over the (masked) vertices of ``||pred_i - gt_j||``."""
    p, g = _masked_frames(pred, mask), _masked_frames(gt, mask)
    if p.shape[1:] != g.shape[1:]:
        raise ValueError(f"prediction and ground truth frames differ: {p.shape[1:]} vs {g.shape[1:]}")
    if len(p) * len(g) > DTW_MAX_CELLS:
        raise ValueError(f"DTW of {len(p)} x {len(g)} frames needs too much memory; evaluate shorter clips")
    out = np.empty((len(p), len(g)))
    chunk = max(1, int(2e7 // max(1, g.size)))                              # ~160 MB of differences at a time
    for i in range(0, len(p), chunk):
        d = p[i:i + chunk, None] - g[None]                                  # (c, Tg, V, 3)
        out[i:i + chunk] = np.sqrt((d * d).sum(-1)).mean(-1)
    return out


def f_dtw(pred, gt, mask=None, band: int | None = None) -> float:
    """F-DTW of Wu et al.: total cost of the optimal DTW path where a frame pair costs the mean
    per-vertex Euclidean distance (over ``mask`` vertices if given).  Not normalised by length, so
    it grows with the clip: compare it between methods on the same clips only.  Lengths may differ.

    (The authors' release fills the first row of the accumulated-cost table with a loop bound to the
    wrong axis, which leaves ``D[0, j>0] = 0``; we use the standard recurrence it intends.)
    """
    return dtw(frame_distances(pred, gt, mask), band=band)[0]


def dtw_per_step(pred, gt, mask=None, band: int | None = None) -> float:
    """Parley's earlier DTW metric, kept under its own name: frame distance = Euclidean norm of the
    whole (masked) frame difference, total path cost divided by the path length."""
    p, g = _masked_frames(pred, mask), _masked_frames(gt, mask)
    a, b = p.reshape(len(p), -1), g.reshape(len(g), -1)
    if len(a) * len(b) > DTW_MAX_CELLS:
        raise ValueError(f"DTW of {len(a)} x {len(b)} frames needs too much memory; evaluate shorter clips")
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    total, steps = dtw(np.sqrt(np.maximum(sq, 0.0)), band=band)
    return total / steps


def inner_lip_gap(frames, upper_inner, lower_inner) -> np.ndarray:
    """(T,) per-frame median over paired indices of the distance upper_inner[i] <-> lower_inner[i]."""
    x = np.asarray(frames, dtype=np.float64)
    x = x.reshape(x.shape[0], -1, 3)
    up = _idx(upper_inner, "lip_upper_inner")
    lo = _idx(lower_inner, "lip_lower_inner")
    if len(up) != len(lo):
        raise ValueError(f"upper_inner ({len(up)}) and lower_inner ({len(lo)}) must be paired (same length)")
    return np.median(np.linalg.norm(x[:, up] - x[:, lo], axis=-1), axis=1)


def mouth_aperture_correlation(pred, gt, upper_inner, lower_inner) -> float:
    """Pearson correlation over time of the inner-lip gap of ``pred`` and ``gt``.

    Scale-free, so it says whether the mouth opens and closes *when* it should even if the
    amplitude is off (the question to ask of a model on real speech against pseudo ground truth).
    ``nan`` when either gap is constant (correlation undefined).
    """
    a = inner_lip_gap(pred, upper_inner, lower_inner).astype(np.float64)
    b = inner_lip_gap(gt, upper_inner, lower_inner).astype(np.float64)
    for x in (a, b):  # constant up to float32 rounding: correlation undefined
        if np.ptp(x) <= 1e-6 * max(1e-12, float(np.abs(x).max())):
            return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _phone_label(label: str) -> str:
    return str(label).strip().lower().rstrip("012")


def bilabial_frames(phones: Iterable[Sequence], fps: float, num_frames: int) -> np.ndarray:
    """Frame index (round(mid * fps), clipped to the clip) of every /p b m/ phone."""
    mids = [(float(s) + float(e)) / 2.0 for lab, s, e in (tuple(p)[:3] for p in phones) if _phone_label(lab) in BILABIALS]
    if not mids:
        return np.zeros(0, dtype=np.int64)
    return np.clip(np.rint(np.asarray(mids) * fps).astype(np.int64), 0, num_frames - 1)


def bilabial_closure_rate(frames, phones, fps, upper_inner, lower_inner, threshold) -> float:
    """Fraction of /p b m/ phone midpoints where the inner-lip gap is below ``threshold``.
    Returns NaN when the clip has no bilabial phones (nothing to measure)."""
    gap = inner_lip_gap(frames, upper_inner, lower_inner)
    idx = bilabial_frames(phones, fps, len(gap))
    if len(idx) == 0:
        return float("nan")
    return float((gap[idx] < threshold).mean())


def default_closure_threshold(template: np.ndarray, face_mask: Any | None = None) -> float:
    """0.5% of the face's bounding-box diagonal: ~1 mm on a 20 cm head, whatever the units."""
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    if face_mask is not None:
        t = t[np.asarray(face_mask, dtype=np.int64)]
    return float(0.005 * np.linalg.norm(t.max(0) - t.min(0)))


def evaluate_all(pred, gt, template, masks: Mapping[str, Any], phones=None, fps: float = 30.0,
                 lrp_threshold: float | None = None, closure_threshold: float | None = None,
                 dtw_band: int | None = None) -> dict[str, float]:
    """Every metric the inputs allow, as a flat ``{name: float}``.

    Metrics whose masks are missing are left out (never filled with a placeholder). If the
    two sequences differ in length by one frame they are trimmed to the shorter; a larger
    difference is an error (it would mean the two were made for different audio).
    LRP is reported only when ``lrp_threshold`` is given (its meaning depends on units).
    ``f_dtw`` (over the ``face`` mask, or all vertices) and ``f_dtw_lips`` cost O(T^2 V): they are
    left out for clips too long for :data:`DTW_MAX_CELLS` / :data:`DTW_MAX_WORK` (minutes of audio).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    p = p.reshape(p.shape[0], -1, 3)
    g = g.reshape(g.shape[0], -1, 3)
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"prediction has {p.shape[1]} vertices, ground truth {g.shape[1]}")
    if abs(len(p) - len(g)) > 1:
        raise ValueError(f"prediction has {len(p)} frames, ground truth {len(g)}: they differ by more than one "
                         "frame, so they do not belong to the same audio (or use different fps)")
    t = min(len(p), len(g))
    p, g = p[:t], g[:t]
    out: dict[str, float] = {"frames": float(t), "mve": mean_vertex_error(p, g)}
    face = masks.get("face")
    face = face if face is not None and len(face) else None
    n_face = len(face) if face is not None else p.shape[1]
    if t * t <= DTW_MAX_CELLS and t * t * n_face <= DTW_MAX_WORK:  # O(T^2 V): skipped (not faked) for long clips
        out["f_dtw"] = f_dtw(p, g, face, band=dtw_band)
    lips = masks.get("lips")
    if lips is not None and len(lips):
        out["lve_sq"] = lip_vertex_error_sq(p, g, lips)
        out["lve_l2"] = lip_vertex_error_l2(p, g, lips)
        out["lve_l2_mean"] = lip_vertex_error_l2_mean(p, g, lips)
        if t * t <= DTW_MAX_CELLS and t * t * len(lips) <= DTW_MAX_WORK:
            out["f_dtw_lips"] = f_dtw(p, g, lips, band=dtw_band)
        if lrp_threshold is not None:
            out["lrp"] = lip_readability_percentage(p, g, lips, lrp_threshold)
    upper = masks.get("upper_face")
    if upper is not None and len(upper):
        out["upper_face_error"] = upper_face_error(p, g, upper)
        out["fdd"] = fdd(p, g, np.asarray(template), upper)
    up, lo = masks.get("lip_upper_inner"), masks.get("lip_lower_inner")
    if up is not None and lo is not None and len(up) and t > 1:
        corr = mouth_aperture_correlation(p, g, up, lo)
        if not math.isnan(corr):
            out["aperture_corr"] = corr
    if phones and up is not None and lo is not None and len(up):
        thr = closure_threshold if closure_threshold is not None else default_closure_threshold(template, masks.get("face"))
        rate = bilabial_closure_rate(p, phones, fps, up, lo, thr)
        if not math.isnan(rate):
            out["bilabial_closure_rate"] = rate
            out["bilabial_closure_rate_gt"] = bilabial_closure_rate(g, phones, fps, up, lo, thr)
            out["bilabial_closure_threshold"] = thr
    return out


# --------------------------------------------------------------------------- lip contact metrics
# Per-phone measurements for the lip benchmark (training/benchmark.py).  Each ``*_per_phone``
# function returns one value per matching phone so a benchmark can pool phones across clips
# (a micro average: a clip with 12 bilabials weighs 12 times a clip with one).

LABIODENTALS = frozenset({"f", "v"})
ROUNDED = frozenset({"uw", "ow", "w"})
OPEN_VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ay"})


def phone_frame_spans(phones: Iterable[Sequence], labels: Iterable[str], fps: float,
                      num_frames: int) -> list[tuple[int, int, int]]:
    """``(first, mid, last)`` frame indices of every phone whose label is in ``labels``.

    Frame ``i`` shows time ``i / fps``.  ``mid = round(((start + end) / 2) * fps)`` (the same frame
    :func:`bilabial_frames` uses); ``first..last`` are the frames with ``start <= i / fps < end``,
    widened to include ``mid`` (a phone shorter than a frame still owns its nearest frame).  All
    indices are clipped to ``[0, num_frames - 1]``.  Stress digits are ignored (``AA1`` = ``aa``).
    """
    want = {str(x).lower() for x in labels}
    out = []
    for p in phones:
        lab, s, e = tuple(p)[:3]
        if _phone_label(lab) not in want:
            continue
        s, e = float(s), float(e)
        mid = int(np.clip(np.rint((s + e) / 2.0 * fps), 0, num_frames - 1))
        first = int(np.clip(math.ceil(s * fps - 1e-9), 0, num_frames - 1))
        last = int(np.clip(math.ceil(e * fps - 1e-9) - 1, 0, num_frames - 1))
        out.append((min(first, mid), mid, max(last, mid)))
    return out


def bilabial_gap_per_phone(frames, phones, fps, upper_inner, lower_inner) -> tuple[np.ndarray, np.ndarray]:
    """For every /p b m/ phone: (inner-lip gap at its midpoint frame, smallest gap over its frames).

    The gap is :func:`inner_lip_gap` (median over paired inner-lip vertices).  A lip that touches
    only briefly, or a little early or late, inside the phone counts in the second value but not
    the first.
    """
    gap = inner_lip_gap(frames, upper_inner, lower_inner)
    spans = phone_frame_spans(phones, BILABIALS, fps, len(gap))
    mid = np.array([gap[m] for _, m, _ in spans], dtype=np.float64)
    anywhere = np.array([gap[a:b + 1].min() for a, _, b in spans], dtype=np.float64)
    return mid, anywhere


def bilabial_closure_anywhere_rate(frames, phones, fps, upper_inner, lower_inner, threshold) -> float:
    """Fraction of /p b m/ phones during which the inner-lip gap drops below ``threshold`` on at
    least one frame inside the phone (see :func:`phone_frame_spans`); NaN without bilabials.
    The midpoint variant is :func:`bilabial_closure_rate`."""
    _, anywhere = bilabial_gap_per_phone(frames, phones, fps, upper_inner, lower_inner)
    return float((anywhere < threshold).mean()) if len(anywhere) else float("nan")


def labiodental_distance(frames, lower_lip, upper_teeth) -> np.ndarray:
    """(T,) smallest distance between any ``lower_lip`` vertex and any ``upper_teeth`` vertex:
    /f v/ press the lower lip against the upper incisors.  (The upper lip is not a target: the
    inner lips meet at the mouth corners, so their distance is ~0 on every frame.)"""
    x = np.asarray(frames, dtype=np.float64)
    x = x.reshape(x.shape[0], -1, 3)
    lo = _idx(lower_lip, "lower_lip")
    up = _idx(upper_teeth, "upper_teeth")
    d = np.linalg.norm(x[:, lo, None, :] - x[:, None, up, :], axis=-1)  # (T, L, U)
    return d.min(axis=(1, 2))


def labiodental_distance_per_phone(frames, phones, fps, lower_lip, upper_teeth) -> np.ndarray:
    """For every /f v/ phone: the smallest :func:`labiodental_distance` over the phone's frames."""
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1, 3)
    spans = phone_frame_spans(phones, LABIODENTALS, fps, len(x))
    if not spans:
        return np.zeros(0)
    d = labiodental_distance(x, lower_lip, upper_teeth)
    return np.array([d[a:b + 1].min() for a, _, b in spans], dtype=np.float64)


def mouth_width(frames, upper_inner, lower_inner, template) -> np.ndarray:
    """(T,) distance between the two inner-lip vertices that are farthest apart on ``template``
    (the mouth corners of the inner-lip contour): lip rounding narrows it."""
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    ring = np.unique(np.concatenate([_idx(upper_inner, "lip_upper_inner"), _idx(lower_inner, "lip_lower_inner")]))
    d = np.linalg.norm(t[ring, None] - t[None, ring], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1, 3)
    return np.linalg.norm(x[:, ring[i]] - x[:, ring[j]], axis=-1)


def rounding_per_phone(frames, phones, fps, upper_inner, lower_inner, lip_region, template,
                       forward) -> tuple[np.ndarray, np.ndarray]:
    """For every /uw ow w/ phone, at its midpoint frame: (narrowing, protrusion).

    narrowing  = template mouth width - mouth width (:func:`mouth_width`); > 0 when rounded.
    protrusion = mean over ``lip_region`` vertices of the displacement from the template along
                 the unit vector ``forward`` (out of the face); > 0 when the lips push out.
    """
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1, 3)
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(forward, dtype=np.float64).reshape(3)
    f = f / np.linalg.norm(f)
    spans = phone_frame_spans(phones, ROUNDED, fps, len(x))
    if not spans:
        return np.zeros(0), np.zeros(0)
    mids = np.array([m for _, m, _ in spans])
    w0 = mouth_width(t[None], upper_inner, lower_inner, t)[0]
    narrowing = w0 - mouth_width(x[mids], upper_inner, lower_inner, t)
    lips = _idx(lip_region, "lips")
    protrusion = ((x[mids][:, lips] - t[lips][None]) @ f).mean(axis=1)
    return narrowing, protrusion


def open_vowel_gap_per_phone(frames, phones, fps, upper_inner, lower_inner) -> np.ndarray:
    """Inner-lip gap at the midpoint frame of every open vowel (/aa ae ah ao aw ay/)."""
    gap = inner_lip_gap(frames, upper_inner, lower_inner)
    spans = phone_frame_spans(phones, OPEN_VOWELS, fps, len(gap))
    return np.array([gap[m] for _, m, _ in spans], dtype=np.float64)


__all__ += ["LABIODENTALS", "OPEN_VOWELS", "ROUNDED", "bilabial_closure_anywhere_rate", "bilabial_gap_per_phone",
            "labiodental_distance", "labiodental_distance_per_phone", "mouth_width", "open_vowel_gap_per_phone",
            "phone_frame_spans", "rounding_per_phone"]
