"""Honest reference points evaluated with exactly the same metrics as the learned models.

* :func:`mean_face` -- the lower bound every model must beat: the subject's neutral template,
  never moving.
* :class:`JawFromLoudness` -- the classic "jaw flap": a per-vertex linear displacement driven by
  the audio's RMS loudness envelope, ``S_t = S_bar + a * e_t + b`` with ``(a, b)`` fitted by least
  squares on the training clips (closed form, streamed over the corpus).  Any model that does not
  clearly beat this has not learned lip shapes, only loudness.
* :func:`rig_from_aligned_phones` -- the SynthTalk upper bound: the corpus's own ground-truth
  generator (``training.synthtalk`` coarticulation + rig) driven by phones that pocketsphinx
  force-aligned from the audio and transcript instead of the TTS's exact phones.  Available when
  the SynthTalk modules and pocketsphinx are installed; otherwise it reports why not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["mean_face", "loudness_envelope", "JawFromLoudness", "rig_from_aligned_phones", "BaselineUnavailable"]


class BaselineUnavailable(RuntimeError):
    """A baseline cannot run here (missing optional module); the message says what is missing."""


def mean_face(template: np.ndarray, num_frames: int) -> np.ndarray:
    """The template repeated ``num_frames`` times: ``(T, V, 3)`` float32."""
    t = np.asarray(template, dtype=np.float32)
    return np.broadcast_to(t, (num_frames,) + t.shape).copy()


def loudness_envelope(wav: np.ndarray, num_frames: int, fps: float, sample_rate: int = 16000) -> np.ndarray:
    """Per-frame RMS of the audio in a window of one frame period centred on each frame, in dB
    relative to the clip's loudest frame and mapped to [0, 1] over a 40 dB range (so the
    envelope does not depend on recording gain)."""
    wav = np.asarray(wav, dtype=np.float64)
    hop = sample_rate / fps
    half = max(1, int(round(hop)))
    centres = (np.arange(num_frames) + 0.5) * hop
    csum = np.concatenate([[0.0], np.cumsum(wav * wav)])
    lo = np.clip((centres - half).astype(np.int64), 0, len(wav))
    hi = np.clip((centres + half).astype(np.int64), 0, len(wav))
    n = np.maximum(hi - lo, 1)
    rms = np.sqrt((csum[hi] - csum[lo]) / n)
    db = 20.0 * np.log10(rms + 1e-8)
    db -= db.max() if len(db) else 0.0
    return np.clip((db + 40.0) / 40.0, 0.0, 1.0).astype(np.float32)


@dataclass
class JawFromLoudness:
    """Least-squares per-coordinate line ``d = a * e + b`` from loudness ``e`` to displacement ``d``."""

    fps: float = 30.0
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    _sums: dict[str, Any] = field(default_factory=dict, repr=False)

    def fit(self, clips: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> "JawFromLoudness":
        """``clips``: iterable of ``(wav16k, vertices (T,V,3), template (V,3))``."""
        n = se = see = 0.0
        sd = sed = None
        for wav, verts, template in clips:
            verts = np.asarray(verts, dtype=np.float64)
            e = loudness_envelope(wav, len(verts), self.fps).astype(np.float64)
            d = (verts - np.asarray(template, dtype=np.float64)[None]).reshape(len(verts), -1)
            n += len(e)
            se += e.sum()
            see += (e * e).sum()
            sd = d.sum(0) if sd is None else sd + d.sum(0)
            sed = e @ d if sed is None else sed + e @ d
        if sd is None or n < 2:
            raise ValueError("JawFromLoudness.fit needs at least one clip with two frames")
        var = see / n - (se / n) ** 2
        cov = sed / n - (se / n) * (sd / n)
        self.a = (cov / max(var, 1e-12)).astype(np.float32)
        self.b = (sd / n - self.a * (se / n)).astype(np.float32)
        return self

    def predict(self, wav: np.ndarray, num_frames: int, template: np.ndarray) -> np.ndarray:
        if self.a is None or self.b is None:
            raise RuntimeError("JawFromLoudness must be fitted first")
        t = np.asarray(template, dtype=np.float32)
        e = loudness_envelope(wav, num_frames, self.fps)
        d = e[:, None] * self.a[None] + self.b[None]
        return (t[None] + d.reshape(num_frames, -1, 3)).astype(np.float32)


_HEADS: dict[int, Any] = {}


def rig_from_aligned_phones(wav: np.ndarray, text: str, identity_index: int, sentence_number: int,
                            num_frames: int, fps: float, seed: int = 0) -> np.ndarray:
    """SynthTalk's generator driven by forced-aligned phones (the upper bound).

    Reproduces the corpus generator for one clip (same subject style, same random stream for
    blinks/brows/drift) but with phone timings from pocketsphinx forced alignment of ``text`` to
    ``wav`` instead of the TTS engine's exact ones: what a perfect model of the rig could reach
    from audio + transcript.  Raises :class:`BaselineUnavailable` when the SynthTalk modules or
    pocketsphinx are missing.
    """
    try:
        from training.synthtalk.align import align
        from training.synthtalk.coarticulation import animate_controls, style_for_subject
        from training.synthtalk.head import build_head, identity
        from training.synthtalk.rig import Rig
    except ImportError as exc:
        raise BaselineUnavailable(f"the SynthTalk generator is not available ({exc})") from None
    phones, _words = align(np.asarray(wav, dtype=np.float32), text)
    style = style_for_subject(identity_index, seed)
    rng = np.random.default_rng([seed, 303, identity_index, int(sentence_number)])
    controls = animate_controls(phones, num_frames, fps, style, rng, audio=wav)
    rig = _HEADS.get(identity_index)
    if rig is None:
        rig = _HEADS[identity_index] = Rig(build_head(identity(identity_index)))
    return np.asarray(rig.pose(controls), dtype=np.float32)
