"""Forced alignment of a transcript to speech with pocketsphinx (BSD): who said which phone when.

Used by the engine for ``lipclose`` from a transcript (``python -m engine animate --transcript``,
:mod:`engine.postprocess`): an animator usually has the line's script, and the aligned /p b m/ are
surer evidence than a phoneme recogniser's guesses.  The training side uses the same code to time
real recordings and TTS voices (:mod:`training.synthtalk.align`).

pocketsphinx is an engine dependency (38 MB, BSD); should it be missing, the error says how to
install it and the CLI falls back to the recogniser.  It works in 10 ms frames and needs silence
around the speech, so the audio is padded with ``PAD_S`` of silence and the times shifted back.  A
phone HMM has three states, so no aligned phone is shorter than 30 ms: very short phones are
stretched at the expense of their neighbours.  Words must be in the CMU dictionary that
pocketsphinx ships (:func:`unknown_words` lists the ones that are not).
"""
from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["AlignmentError", "Phone", "align", "cmudict_path", "fill_silence", "unknown_words", "words_of"]

INSTALL_HINT = "pip install 'pocketsphinx==5.1.1'"

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
        except ImportError as exc:  # pragma: no cover - pocketsphinx not installed
            raise AlignmentError(f"aligning a transcript needs pocketsphinx: {INSTALL_HINT}") from exc
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
    missing = unknown_words(text)
    if missing:
        raise AlignmentError(f"not in the aligner's dictionary: {', '.join(missing)} (write such words as they sound)")
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


_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` (punctuation dropped, inner apostrophes kept)."""
    return _TOKEN.findall(text.lower())


def cmudict_path() -> Path:
    """The CMU dictionary that pocketsphinx ships (the aligner's pronunciations)."""
    try:
        import pocketsphinx
    except ImportError as exc:
        raise AlignmentError(f"aligning a transcript needs pocketsphinx: {INSTALL_HINT}") from exc
    return Path(pocketsphinx.__file__).resolve().parent / "model" / "en-us" / "cmudict-en-us.dict"


@lru_cache(maxsize=1)
def _dictionary_words() -> frozenset[str]:
    with open(cmudict_path(), encoding="utf-8") as fh:
        return frozenset(re.sub(r"\(\d+\)$", "", line.split(maxsplit=1)[0]) for line in fh if line.strip())


def unknown_words(text: str) -> list[str]:
    """The words of ``text`` that the aligner cannot pronounce (not in its dictionary), in order."""
    known = _dictionary_words()
    return list(dict.fromkeys(w for w in words_of(text) if w not in known))
