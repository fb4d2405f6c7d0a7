"""Forced alignment with pocketsphinx (BSD), and a comparison of two phone timelines.

Used (1) to time the piper voice, whose own durations are loose, (2) to time real recorded speech
for the real-speech evaluation set, and (3) to check the exact timings the rule-based engines report.

pocketsphinx works in 10 ms frames and needs silence around the speech, so the audio is padded
with ``PAD_S`` of silence and the times shifted back. A phone HMM has three states, so no aligned
phone is shorter than 30 ms: very short phones are stretched at the expense of their neighbours.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from .text import words_of

__all__ = ["AlignmentError", "TimingAgreement", "align", "compare_timings", "fill_silence"]

PAD_S = 0.3
DITHER = 3e-4  # about -70 dBFS
SAMPLE_RATE = 16000
Phone = tuple[str, float, float]

_lock = threading.Lock()
_decoder = None


class AlignmentError(RuntimeError):
    """pocketsphinx could not align the text to the audio."""


def _get_decoder():
    global _decoder
    if _decoder is None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:  # pragma: no cover
            raise AlignmentError("pocketsphinx is not installed: pip install 'pocketsphinx==5.1.1'") from exc
        # bestpath off: it can append a fake one-frame </s> that makes the state alignment fail
        # ("Failed to reach final state", cmusphinx/pocketsphinx#339).
        _decoder = Decoder(samprate=SAMPLE_RATE, lm=None, bestpath=False, loglevel="FATAL")
    return _decoder


def _map_phone(name: str) -> str:
    name = name.upper()
    if name == "SIL" or name.startswith(("+", "<")):
        return "sil"
    return re.sub(r"\d", "", name)


def fill_silence(phones: list[Phone], duration: float, min_gap: float = 1e-3) -> list[Phone]:
    """Clip phones to ``[0, duration]``, merge adjacent ``sil`` and fill gaps with ``sil`` so the
    timeline is contiguous from 0 to ``duration`` (what the co-articulation model expects)."""
    out: list[list] = []
    t = 0.0
    for label, s, e in sorted(phones, key=lambda p: p[1]):
        s, e = max(0.0, min(s, duration)), max(0.0, min(e, duration))
        s = max(s, t)
        if e - s <= 0:
            continue
        if s - t > min_gap:
            out.append(["sil", t, s])
        elif out and s > t:
            out[-1][2] = s
        elif not out and s > 0:
            out.append(["sil", 0.0, s])
        out.append([label, s, e])
        t = e
    if duration - t > min_gap:
        out.append(["sil", t, duration])
    elif out:
        out[-1][2] = duration
    merged: list[list] = []
    for p in out:
        if merged and p[0] == "sil" and merged[-1][0] == "sil":
            merged[-1][2] = p[2]
        else:
            merged.append(p)
    return [(str(a), round(float(b), 5), round(float(c), 5)) for a, b, c in merged]


def align(wav: np.ndarray, text: str, sample_rate: int = SAMPLE_RATE) -> tuple[list[Phone], list[Phone]]:
    """Force-align ``text`` to mono 16 kHz ``wav``: (phones, words) with times in seconds.

    Phones are ARPAbet without stress or ``sil``, contiguous over the whole clip. pocketsphinx
    occasionally fails to reach the final state on a clip; the alignment is then retried with a
    different (still inaudible) dither level before giving up with :class:`AlignmentError`.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"align() needs 16 kHz audio, got {sample_rate} Hz; resample first")
    words = words_of(text)
    if not words:
        raise AlignmentError(f"no words to align in {text!r}")
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    last: AlignmentError | None = None
    for level in (DITHER, 3 * DITHER, DITHER / 3):
        try:
            return _align_once(x, text, words, level)
        except AlignmentError as exc:
            last = exc
    assert last is not None
    raise last


def _align_once(x: np.ndarray, text: str, words: list[str], dither: float) -> tuple[list[Phone], list[Phone]]:
    pad = np.zeros(int(PAD_S * SAMPLE_RATE), np.float32)
    padded = np.concatenate([pad, x, pad])
    # Digital silence (exact zeros, which TTS engines emit in pauses) breaks pocketsphinx's energy
    # features and makes it end the utterance at the first pause: add a fixed, inaudible dither.
    padded = padded + dither * np.random.default_rng(0).standard_normal(len(padded)).astype(np.float32)
    pcm = (np.clip(padded, -1, 1) * 32767).astype(np.int16).tobytes()
    duration = len(x) / SAMPLE_RATE
    with _lock:
        d = _get_decoder()
        try:
            d.set_align_text(" ".join(words))
            d.start_utt(); d.process_raw(pcm, full_utt=True); d.end_utt()
            d.set_alignment()
            d.start_utt(); d.process_raw(pcm, full_utt=True); d.end_utt()
            al = d.get_alignment()
        except Exception as exc:  # noqa: BLE001 - pocketsphinx raises RuntimeError/ValueError tersely
            raise AlignmentError(f"pocketsphinx failed to align {text!r}: {exc}") from None
        if al is None:
            raise AlignmentError(f"pocketsphinx found no alignment for {text!r}")
        phones: list[Phone] = []
        out_words: list[Phone] = []
        for w in al:
            name = re.sub(r"\(\d+\)$", "", w.name)
            ws, we = w.start / 100.0 - PAD_S, (w.start + w.duration) / 100.0 - PAD_S
            if not name.startswith(("<", "[")):
                out_words.append((name, round(max(0.0, ws), 5), round(min(duration, we), 5)))
            for p in w:
                ps, pe = p.start / 100.0 - PAD_S, (p.start + p.duration) / 100.0 - PAD_S
                phones.append((_map_phone(p.name), ps, pe))
    if len(out_words) != len(words):
        raise AlignmentError(f"pocketsphinx aligned {len(out_words)} of {len(words)} words of {text!r}")
    return fill_silence(phones, duration), out_words


@dataclass
class TimingAgreement:
    """Boundary agreement between two phone timelines (seconds)."""

    matched: int          # phone starts compared (same label, matched by edit-distance alignment)
    mean_abs: float
    median_abs: float
    p90_abs: float
    mean_signed: float    # positive: ``test`` boundaries later than ``ref``


def compare_timings(test: list[Phone], ref: list[Phone]) -> TimingAgreement:
    """Match the non-silence phones of ``test`` and ``ref`` by label with a minimum edit-distance
    alignment, then compare the start times of matched phones."""
    a = [p for p in test if p[0] != "sil"]
    b = [p for p in ref if p[0] != "sil"]
    n, m = len(a), len(b)
    cost = np.zeros((n + 1, m + 1), np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = 0 if a[i - 1][0] == b[j - 1][0] else 1
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + sub)
    i, j, diffs = n, m, []
    while i > 0 and j > 0:
        sub = 0 if a[i - 1][0] == b[j - 1][0] else 1
        if cost[i, j] == cost[i - 1, j - 1] + sub:
            if sub == 0:
                diffs.append(a[i - 1][1] - b[j - 1][1])
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    if not diffs:
        return TimingAgreement(0, float("nan"), float("nan"), float("nan"), float("nan"))
    d = np.asarray(diffs)
    ad = np.abs(d)
    return TimingAgreement(len(d), float(ad.mean()), float(np.median(ad)), float(np.percentile(ad, 90)), float(d.mean()))
