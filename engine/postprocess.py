"""Optional post-processing: close the lips on /p b m/ heard in the audio (``lipclose``).

Off by default and never part of a model's own numbers: the benchmark reports it in separate rows
(``<model>+lipclose``).  Why it exists: models trained with an L2 loss know *where* bilabials are
(the predicted inner-lip gap dips there) but average the brief closure with the open vowels around
it, so the dip stops a few millimetres short of contact and the animation mumbles on b, p and m.

Evidence used (all available at inference: the audio, and the transcript when the user has one):

1. **Which frames are bilabial** -- hama's 50 Hz phoneme posteriors (see
   :mod:`engine.encoders.hama_features`).  hama is a CTC recogniser, so a phone shows up as a
   one- or two-frame spike among ``<blank>`` frames.  ``bilabial_evidence`` renormalises each frame
   over the non-blank tokens and sums the bilabial ones (IPA p, pʰ, p͈, b, m, ɓ, ʙ): a per-frame
   probability that *if* a phone is emitted here it is bilabial, weighted by ``1 - P(blank)``.
   Or, when the animator has the line's script (``--transcript``), the transcript's own /p b m/
   timed by forced alignment (:mod:`engine.align`): :func:`phone_windows` makes one search window
   per aligned bilabial, exactly its span -- no recogniser pass, and the closure lands inside the
   phone even where the model's own gap minimum runs early (it does, by ~2 frames, on the
   bilabial tongue-twisters: README "Lip benchmark").
2. **Exactly when inside it** -- the model's own inner-lip gap: around each spike the closure is
   centred on the frame where the predicted gap is smallest (within ``search_s``).

Stage (:func:`close_lips`): for each event a time weight ``w(t)`` that is 1 for ``hold_frames``
frames either side of the centre and falls to 0 over ``ramp_frames`` with a raised cosine; at
weight 1 every paired upper/lower inner-lip vertex moves half of its gap toward the other (they
meet in the middle).  Other vertices near the mouth follow the nearest inner-lip vertex on their
side of the lip line with a Gaussian fall-off (``radius`` in mesh units), so the lips stay smooth.
Nothing else (upper face, eyes) moves.

Streaming (:class:`LipCloseSink`): the stage is local in time -- a frame depends only on the
predicted gap inside the search windows of the events within ``hold + ramp`` frames of it -- so it
runs as an ``out[a:b] = frames`` sink between :func:`engine.models.windowing.predict_sequence` and
the output file, holding back only the frames whose nearby events are not yet decided.  An hour of
audio therefore still animates in bounded memory, and :func:`lipclose` (whole array) is the same
code path.

Who calls it: :meth:`engine.inference.Animator.animate` with ``postprocess="lipclose"``; the CLI
(``python -m engine animate --postprocess lipclose|none``), the Blender add-on and its batch script
turn it on by default (README "Lip benchmark": it is what an animator should see).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["LipCloseConfig", "BILABIAL_IPA", "POSTPROCESS_CHOICES", "DEFAULT_POSTPROCESS", "check_postprocess",
           "bilabial_evidence", "audio_bilabial_evidence", "phone_windows", "closure_windows",
           "closure_events", "closure_weights",
           "close_lips", "lip_masks", "LipCloseSink", "lipclose"]

BILABIAL_IPA = ("p", "pʰ", "p͈", "b", "m", "ɓ", "ʙ")
BILABIAL_ARPABET = ("P", "B", "M")
_NON_PHONE = ("<pad>", "<sos>", "<eos>", "<unk>", " ", "<wb>", "<blank>", "%", ",")

POSTPROCESS_CHOICES = ("none", "lipclose")
DEFAULT_POSTPROCESS = "lipclose"   # for the animator-facing entry points (CLI, add-on, batch); the
                                   # Animator API and the benchmark's model rows default to "none"


def check_postprocess(name: str | None) -> str:
    """Normalise a post-processing name (``None`` -> ``"none"``); an unknown one is a ValueError
    that lists the choices."""
    key = "none" if name is None else str(name).strip().lower()
    if key not in POSTPROCESS_CHOICES:
        raise ValueError(f"unknown post-processing {name!r}: choose one of {', '.join(POSTPROCESS_CHOICES)} "
                         "(lipclose closes the lips on /p b m/ heard in the audio; none = the model's output as is)")
    return key


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


def audio_bilabial_evidence(wav16k: np.ndarray, progress: Callable[[float], None] | None = None,
                            segment_s: float = 10.0) -> np.ndarray:
    """(len // 320,) bilabial evidence at 50 Hz for a mono 16 kHz waveform of any length: hama on
    ``segment_s`` pieces, each reduced to evidence at once (an hour never holds 191-wide posteriors)."""
    from engine.encoders.hama_features import _model, hama_log_posteriors

    wav = np.asarray(wav16k, dtype=np.float32).reshape(-1)
    n50 = len(wav) // 320
    tokens = list(_model().decoder_tokens)
    seg = int(segment_s * 16000) // 320 * 320
    out = np.zeros(n50)
    starts = list(range(0, n50 * 320, seg))
    for k, s in enumerate(starts):
        piece = wav[s:min(s + seg, n50 * 320)]
        f0, n = s // 320, len(piece) // 320
        if n:
            ev = bilabial_evidence(hama_log_posteriors(piece), tokens)[:n]
            out[f0:f0 + len(ev)] = ev           # hama may return a frame less; the rest stays 0
        if progress is not None:
            progress((k + 1) / len(starts))
    return out


def phone_windows(phones: list[tuple[str, float, float]], fps: float, num_frames: int) -> list[tuple[int, int]]:
    """Mesh-frame search windows ``[a, b)`` from a timed phone list ``(ARPAbet, start s, end s)``
    (e.g. :func:`engine.align.align` of the transcript): one per /p b m/, covering the mesh frames
    that overlap the phone (at least one), in time order.  Stress digits and case are ignored."""
    wins = []
    for label, start, end in phones:
        if str(label).upper().rstrip("012") not in BILABIAL_ARPABET:
            continue
        a = min(max(0, int(np.floor(float(start) * fps))), num_frames)
        b = min(max(a + 1, int(np.ceil(float(end) * fps))), num_frames)
        if a < b:
            wins.append((a, b))
    return sorted(wins)


def closure_windows(evidence50: np.ndarray, fps: float, num_frames: int, cfg: LipCloseConfig) -> list[tuple[int, int]]:
    """Mesh-frame search windows ``[a, b)``, one per run of 50 Hz frames with evidence >= threshold,
    centred on the run's strongest frame (``search_s`` either side).  In time order; they depend on
    the audio alone."""
    evidence50 = np.asarray(evidence50)
    ev = evidence50 >= cfg.threshold
    r = max(1, int(round(cfg.search_s * fps)))
    wins: list[tuple[int, int]] = []
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
        a, b = max(0, centre - r), min(num_frames, centre + r + 1)
        if a < b:
            wins.append((a, b))
        k = j + 1
    return wins


def _pick(window: tuple[int, int], gap: np.ndarray, cfg: LipCloseConfig) -> int | None:
    """The event inside one window: the smallest predicted gap, unless the mouth is open wider
    than ``max_gap`` there (the model clearly says open)."""
    a, b = window
    best = a + int(np.argmin(gap[a:b]))
    return best if gap[best] <= cfg.max_gap else None


def closure_events(evidence50: np.ndarray, gap: np.ndarray, fps: float, cfg: LipCloseConfig) -> list[int]:
    """Mesh frames at which to close: per :func:`closure_windows`, the frame of smallest predicted
    gap; events whose gap there exceeds ``max_gap`` are dropped."""
    picks = (_pick(w, gap, cfg) for w in closure_windows(evidence50, fps, len(gap), cfg))
    return sorted({e for e in picks if e is not None})


def _weights(events: list[int], start: int, stop: int, hold: int, ramp: int) -> np.ndarray:
    """Closure weights of frames ``[start, stop)``: max over events of the plateau-and-ramp kernel."""
    w = np.zeros(max(0, stop - start))
    t = np.arange(start, stop)
    for c in events:
        if c + hold + ramp < start or c - hold - ramp >= stop:
            continue
        d = np.abs(t - c) - hold
        k = np.where(d <= 0, 1.0, np.where(d < ramp + 1, 0.5 * (1 + np.cos(np.pi * d / (ramp + 1))), 0.0))
        w = np.maximum(w, k)
    return w


def closure_weights(events: list[int], num_frames: int, hold: int, ramp: int) -> np.ndarray:
    """(T,) in [0, 1]: max over events of a plateau of ``2*hold+1`` frames with raised-cosine ramps."""
    return _weights(events, 0, num_frames, hold, ramp)


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


class _Closer:
    """The deformation of :func:`close_lips` prepared once for a template (region, pairs, fall-off)."""

    def __init__(self, template: np.ndarray, upper_inner: Any, lower_inner: Any, radius: float, exclude: Any) -> None:
        self.up = np.asarray(upper_inner, dtype=np.int64)
        self.lo = np.asarray(lower_inner, dtype=np.int64)
        t = np.asarray(template, dtype=np.float64).reshape(-1, 3)
        ex = np.asarray(exclude if exclude is not None else [], dtype=np.int64)
        self.cand, self.pair, side_weight = _region(t, self.up, self.lo, radius, ex)
        self.upper, self.fall = side_weight[:, 0] > 0.5, side_weight[:, 1]

    def apply(self, x: np.ndarray, w: np.ndarray) -> None:
        """In place on ``x (T, V, 3)`` with per-frame weights ``w (T,)``."""
        for f in np.nonzero(w > 0)[0]:
            half = 0.5 * (x[f, self.lo] - x[f, self.up]).astype(np.float64)   # (n, 3): upper +half, lower -half
            disp = np.where(self.upper[:, None], half[self.pair], -half[self.pair]) * (self.fall * w[f])[:, None]
            x[f, self.cand] += disp.astype(np.float32)


def close_lips(frames: np.ndarray, weights: np.ndarray, template: np.ndarray, upper_inner, lower_inner,
               radius: float = LipCloseConfig.radius, exclude=None) -> np.ndarray:
    """Move the inner lips toward each other by ``weights[t]`` of their gap (Z is up, as in every
    Parley topology); neighbours follow with a Gaussian fall-off.  Returns a new (T, V, 3) array."""
    x = np.array(frames, dtype=np.float32, copy=True)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(x):
        raise ValueError(f"{len(w)} weights for {len(x)} frames")
    _Closer(template, upper_inner, lower_inner, radius, exclude).apply(x, w)
    return x


def lip_masks(masks: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upper inner lip, lower inner lip, vertices never moved) of a topology's masks."""
    missing = [k for k in ("lip_upper_inner", "lip_lower_inner") if k not in masks]
    if missing:
        raise ValueError(f"lipclose needs the topology's {' and '.join(missing)} mask(s); this checkpoint's "
                         "topology has none, so run with postprocess 'none'")
    exclude = np.concatenate([np.asarray(masks.get(k, []), dtype=np.int64) for k in ("teeth", "mouth_interior")])
    return np.asarray(masks["lip_upper_inner"]), np.asarray(masks["lip_lower_inner"]), exclude


class LipCloseSink:
    """``sink[a:b] = frames`` (in order) -> lipclose -> ``out[a:b]``: the stage as a stream.

    Frames are held back only until every search window that could place an event within
    ``hold + ramp`` frames of them has been seen; call :meth:`close` after the last frame.
    The result equals :func:`closure_events` + :func:`closure_weights` + :func:`close_lips` on the
    whole clip (``tests/test_postprocess.py`` checks it chunk by chunk)."""

    def __init__(self, out: Any, evidence50: np.ndarray | None, fps: float, template: np.ndarray, masks: dict,
                 cfg: LipCloseConfig | None = None, windows: list[tuple[int, int]] | None = None) -> None:
        self.out = out
        self.shape = tuple(out.shape)
        self.cfg = cfg or LipCloseConfig()
        T = self.shape[0]
        up, lo, exclude = lip_masks(masks)
        self.closer = _Closer(template, up, lo, self.cfg.radius, exclude)
        if (evidence50 is None) == (windows is None):
            raise ValueError("give the recogniser's evidence50 or the phone windows, exactly one")
        self.windows = closure_windows(evidence50, fps, T, self.cfg) if windows is None else sorted(windows)
        self.next_window = 0
        self.events: list[int] = []
        self.gap = np.zeros(T)
        self.buf = np.empty((0, *self.shape[1:]), dtype=np.float32)
        self.done = 0           # frames written to out
        self.received = 0       # frames received

    def __setitem__(self, key: slice, value: np.ndarray) -> None:
        a = key.start or 0
        if a != self.received:
            raise RuntimeError(f"frames must arrive in order: expected frame {self.received}, got {key!r}")
        x = np.asarray(value, dtype=np.float32)
        b = a + len(x)
        if b > self.shape[0] or x.shape[1:] != self.shape[1:]:
            raise ValueError(f"frames {a}:{b} of shape {x.shape[1:]} do not fit {self.shape}")
        self.gap[a:b] = np.median(np.linalg.norm(x[:, self.closer.up] - x[:, self.closer.lo], axis=-1), axis=1)
        self.buf = np.concatenate([self.buf, x]) if len(self.buf) else x.copy()
        self.received = b
        self._flush()

    def _flush(self) -> None:
        reach = self.cfg.hold_frames + self.cfg.ramp_frames
        while self.next_window < len(self.windows) and self.windows[self.next_window][1] <= self.received:
            e = _pick(self.windows[self.next_window], self.gap, self.cfg)
            if e is not None:
                self.events.append(e)
            self.next_window += 1
        upto = self.received
        if self.next_window < len(self.windows):       # an undecided window could still reach back
            upto = min(upto, self.windows[self.next_window][0] - reach)
        if upto <= self.done:
            return
        n = upto - self.done
        chunk = self.buf[:n]
        self.closer.apply(chunk, _weights(self.events, self.done, upto, self.cfg.hold_frames, self.cfg.ramp_frames))
        self.out[self.done:upto] = chunk
        self.buf = self.buf[n:]
        self.done = upto
        self.events = [e for e in self.events if e + reach >= upto]

    def close(self) -> None:
        if self.received != self.shape[0]:
            raise RuntimeError(f"internal error: received {self.received} of {self.shape[0]} frames")
        self._flush()
        if self.done != self.shape[0]:  # pragma: no cover - every window is decided once all frames are in
            raise RuntimeError(f"internal error: lipclose wrote {self.done} of {self.shape[0]} frames")


def lipclose(frames: np.ndarray, wav16k: np.ndarray, fps: float, template: np.ndarray, masks: dict,
             cfg: LipCloseConfig | None = None, evidence50: np.ndarray | None = None,
             windows: list[tuple[int, int]] | None = None) -> tuple[np.ndarray, dict]:
    """The whole stage on one clip: search windows (from hama's evidence, computed here unless
    ``evidence50`` is given, or ``windows`` from :func:`phone_windows`) -> events -> weights ->
    :func:`close_lips`.  Returns (frames, info) with the events (mesh frames) and the windows."""
    ev = None
    if windows is None:
        ev = audio_bilabial_evidence(wav16k) if evidence50 is None else np.asarray(evidence50)
    x = np.asarray(frames, dtype=np.float32)
    out = np.empty_like(x)
    sink = LipCloseSink(out, ev, fps, template, masks, cfg, windows=windows)
    sink[0:len(x)] = x
    sink.close()
    events = sorted({e for e in (_pick(w, sink.gap, sink.cfg) for w in sink.windows) if e is not None})
    return out, {"events": events, "windows": sink.windows, "evidence50": ev}
