"""Optional post-processing: close the lips on /p b m/ heard in the audio (``lipclose``).

Off by default and never part of a model's own numbers: the benchmark reports it in separate rows
(``<model>+lipclose``).  Why it exists: models trained with an L2 loss know *where* bilabials are
(the predicted inner-lip gap dips there) but average the brief closure with the open vowels around
it, so the dip stops a few millimetres short of contact and the animation mumbles on b, p and m.

Evidence used (all available at inference, from the audio alone):

1. **Which frames are bilabial** -- hama's 50 Hz phoneme posteriors (see
   :mod:`engine.encoders.hama_features`).  hama is a CTC recogniser, so a phone shows up as a
   one- or two-frame spike among ``<blank>`` frames.  ``bilabial_evidence`` renormalises each frame
   over the non-blank tokens and sums the bilabial ones (IPA p, pʰ, p͈, b, m, ɓ, ʙ): a per-frame
   probability that *if* a phone is emitted here it is bilabial, weighted by ``1 - P(blank)``.
2. **Exactly when inside it** -- the model's own inner-lip gap: around each spike the closure is
   centred on the frame where the predicted gap is smallest (within ``search_s``).

Stage (:func:`close_lips`): for each event a time weight ``w(t)`` that is 1 for ``hold_frames``
frames either side of the centre and falls to 0 over ``ramp_frames`` with a raised cosine; at
weight 1 every paired upper/lower inner-lip vertex moves half of its gap toward the other (they
meet in the middle).  Other vertices near the mouth follow the nearest inner-lip vertex on their
side of the lip line with a Gaussian fall-off (``radius`` in mesh units), so the lips stay smooth.
Nothing else (upper face, eyes) moves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LipCloseConfig", "BILABIAL_IPA", "bilabial_evidence", "closure_events", "closure_weights",
           "close_lips", "lipclose"]

BILABIAL_IPA = ("p", "pʰ", "p͈", "b", "m", "ɓ", "ʙ")
_NON_PHONE = ("<pad>", "<sos>", "<eos>", "<unk>", " ", "<wb>", "<blank>", "%", ",")


@dataclass
class LipCloseConfig:
    threshold: float = 0.1       # bilabial evidence that makes a frame an event (chosen on SynthTalk val, see tune_lipclose)
    search_s: float = 0.1        # look this far either side of an event for the predicted gap's minimum
    hold_frames: int = 1         # frames either side of the centre at full closure
    ramp_frames: int = 2         # raised-cosine ramp length (frames) on each side
    radius: float = 0.012        # Gaussian fall-off of the deformation around the lips (mesh units: 1.2 cm)
    max_gap: float = 0.015       # do not force shut a mouth open wider than this (mesh units: 15 mm)


def bilabial_evidence(log_posteriors: np.ndarray, tokens: list[str]) -> np.ndarray:
    """(T50,) from hama (T50, K) log-posteriors: ``P(bilabial | phone) * P(phone)`` per frame, i.e.
    the bilabial probability mass; a spike marks an emitted /p b m/."""
    lp = np.asarray(log_posteriors, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != len(tokens):
        raise ValueError(f"posteriors {lp.shape} do not match {len(tokens)} tokens")
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    bil = [i for i, t in enumerate(tokens) if t in BILABIAL_IPA]
    phone = [i for i, t in enumerate(tokens) if t not in _NON_PHONE]
    mass = p[:, phone].sum(axis=1)
    return np.where(mass > 1e-6, p[:, bil].sum(axis=1) / np.maximum(mass, 1e-6), 0.0) * np.minimum(1.0, mass * 2.0)


def closure_events(evidence50: np.ndarray, gap: np.ndarray, fps: float, cfg: LipCloseConfig) -> list[int]:
    """Mesh frames at which to close: one per run of 50 Hz frames with evidence >= threshold, placed
    at the smallest predicted gap within ``search_s`` of the run's strongest frame; events whose gap
    there exceeds ``max_gap`` are dropped (the model clearly says open)."""
    ev = np.asarray(evidence50) >= cfg.threshold
    T = len(gap)
    events: list[int] = []
    k = 0
    while k < len(ev):
        if not ev[k]:
            k += 1
            continue
        j = k
        while j + 1 < len(ev) and ev[j + 1]:
            j += 1
        peak = k + int(np.argmax(evidence50[k:j + 1]))
        centre = int(round(peak / 50.0 * fps))
        r = max(1, int(round(cfg.search_s * fps)))
        a, b = max(0, centre - r), min(T, centre + r + 1)
        if a < b:
            best = a + int(np.argmin(gap[a:b]))
            if gap[best] <= cfg.max_gap and best not in events:
                events.append(best)
        k = j + 1
    return sorted(events)


def closure_weights(events: list[int], num_frames: int, hold: int, ramp: int) -> np.ndarray:
    """(T,) in [0, 1]: max over events of a plateau of ``2*hold+1`` frames with raised-cosine ramps."""
    w = np.zeros(num_frames)
    t = np.arange(num_frames)
    for c in events:
        d = np.abs(t - c) - hold
        k = np.where(d <= 0, 1.0, np.where(d < ramp + 1, 0.5 * (1 + np.cos(np.pi * d / (ramp + 1))), 0.0))
        w = np.maximum(w, k)
    return w


def _region(template: np.ndarray, up: np.ndarray, lo: np.ndarray, radius: float,
            exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices within 3 radii of the inner lips (minus ``exclude``): their nearest inner-lip pair
    index on their side of the lip line, their fall-off weight, and whether they are upper side."""
    inner = np.concatenate([up, lo])
    d_all = np.linalg.norm(template[:, None] - template[None, inner], axis=-1)   # (V, 2n)
    near = d_all.min(axis=1)
    cand = np.setdiff1d(np.nonzero(near < 3 * radius)[0], exclude)
    n = len(up)
    line = 0.5 * (template[up] + template[lo])                                   # lip line, per pair
    pair = np.argmin(np.linalg.norm(template[cand, None] - line[None], axis=-1), axis=1)
    upper = template[cand, 2] >= line[pair, 2]
    upper[np.isin(cand, up)] = True
    upper[np.isin(cand, lo)] = False
    d_side = np.where(upper[:, None], d_all[cand][:, :n], d_all[cand][:, n:])   # distance to own side's inner lip
    pair = np.argmin(d_side, axis=1)
    weight = np.exp(-0.5 * (d_side[np.arange(len(cand)), pair] / radius) ** 2)
    return cand, pair, np.stack([upper, weight], axis=1)


def close_lips(frames: np.ndarray, weights: np.ndarray, template: np.ndarray, upper_inner, lower_inner,
               radius: float = LipCloseConfig.radius, exclude=None) -> np.ndarray:
    """Move the inner lips toward each other by ``weights[t]`` of their gap (Z is up, as in every
    Parley topology); neighbours follow with a Gaussian fall-off.  Returns a new (T, V, 3) array."""
    x = np.array(frames, dtype=np.float32, copy=True)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(x):
        raise ValueError(f"{len(w)} weights for {len(x)} frames")
    up = np.asarray(upper_inner, dtype=np.int64)
    lo = np.asarray(lower_inner, dtype=np.int64)
    t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    cand, pair, (side_weight) = _region(t, up, lo, radius, np.asarray(exclude if exclude is not None else [], dtype=np.int64))
    upper, fall = side_weight[:, 0] > 0.5, side_weight[:, 1]
    active = np.nonzero(w > 0)[0]
    for f in active:
        half = 0.5 * (x[f, lo] - x[f, up]).astype(np.float64)        # (n, 3): upper moves +half, lower -half
        disp = np.where(upper[:, None], half[pair], -half[pair]) * (fall * w[f])[:, None]
        x[f, cand] += disp.astype(np.float32)
    return x


def lipclose(frames: np.ndarray, wav16k: np.ndarray, fps: float, template: np.ndarray, masks: dict,
             cfg: LipCloseConfig | None = None) -> tuple[np.ndarray, dict]:
    """The whole stage on one clip: hama evidence -> events -> weights -> :func:`close_lips`.
    Returns (frames, info) with the events (mesh frames) and the 50 Hz evidence."""
    from hama import ASRModel  # noqa: F401  (the error below names the package if it is missing)

    from engine.encoders.hama_features import _model, hama_log_posteriors
    from engine.metrics import inner_lip_gap

    cfg = cfg or LipCloseConfig()
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    seg = 10 * 16000
    lp = np.concatenate([hama_log_posteriors(wav16k[i:i + seg]) for i in range(0, max(1, len(wav16k)), seg)
                         if len(wav16k[i:i + seg]) >= 320])
    ev = bilabial_evidence(lp, list(_model().decoder_tokens))
    gap = inner_lip_gap(frames, up, lo)
    events = closure_events(ev, gap, fps, cfg)
    w = closure_weights(events, len(frames), cfg.hold_frames, cfg.ramp_frames)
    exclude = np.concatenate([np.asarray(masks.get(k, []), dtype=np.int64) for k in ("teeth", "mouth_interior")])
    out = close_lips(frames, w, template, up, lo, cfg.radius, exclude=exclude)
    return out, {"events": events, "evidence50": ev}
