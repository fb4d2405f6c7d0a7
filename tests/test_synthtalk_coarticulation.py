"""Co-articulation: closures really close, open vowels open, styles matter, motion is smooth."""
from __future__ import annotations

import numpy as np
import pytest

from training.synthtalk.coarticulation import (
    CONTROLS,
    VISEMES,
    SpeakerStyle,
    animate_controls,
    phone_viseme,
    style_for_subject,
)

I = {c: i for i, c in enumerate(CONTROLS)}
FPS = 30.0


def _fast(label: str, dur: float = 0.045) -> list:
    """'sil AA <label> AA sil' with a very short consonant (fast speech)."""
    t = [0.0, 0.15, 0.27, 0.27 + dur, 0.27 + dur + 0.12, 0.8]
    return [("sil", t[0], t[1]), ("AA", t[1], t[2]), (label, t[2], t[3]), ("AA", t[3], t[4]), ("sil", t[4], t[5])]


def _at(phones, X, label):
    out = []
    for lab, s, e in phones:
        if lab == label:
            out.append(X[min(len(X) - 1, int(np.rint((s + e) / 2 * FPS)))])
    return np.array(out)


def test_controls_match_the_rig_contract():
    assert CONTROLS == ["jaw_open", "lips_close", "lips_press", "pucker", "funnel", "stretch", "lower_lip_tuck",
                        "upper_lip_raise", "smile", "brow_raise", "brow_furrow", "blink_l", "blink_r"]
    rig = pytest.importorskip("training.synthtalk.rig")
    assert list(rig.CONTROLS) == CONTROLS
    assert len(VISEMES) == 15


@pytest.mark.parametrize("label", ["P", "B", "M"])
@pytest.mark.parametrize("seed", range(4))
def test_bilabials_close_even_in_fast_speech_between_open_vowels(label, seed):
    phones = _fast(label, 0.04)
    style = style_for_subject(seed)  # includes wide-jaw, sloppy styles
    X = animate_controls(phones, 24, FPS, style, np.random.default_rng(seed))
    m = _at(phones, X, label)[0]
    assert m[I["lips_close"]] >= 0.95
    assert m[I["jaw_open"]] <= 0.35
    # and the vowels around it are open
    for v in _at(phones, X, "AA"):
        assert v[I["jaw_open"]] > 0.4 and v[I["lips_close"]] < 0.3


def test_labiodental_tucks_lower_lip():
    phones = _fast("F", 0.05)
    X = animate_controls(phones, 24, FPS, SpeakerStyle(), np.random.default_rng(0))
    m = _at(phones, X, "F")[0]
    assert m[I["lower_lip_tuck"]] >= 0.85 and m[I["jaw_open"]] <= 0.35


def test_rounded_vowel_rounds_and_spread_vowel_does_not():
    phones = [("sil", 0, 0.1), ("UW", 0.1, 0.3), ("sil", 0.3, 0.5), ("IY", 0.5, 0.7), ("sil", 0.7, 0.9)]
    X = animate_controls(phones, 27, FPS, SpeakerStyle(), np.random.default_rng(0))
    uw, iy = _at(phones, X, "UW")[0], _at(phones, X, "IY")[0]
    assert uw[I["pucker"]] > 0.6 and iy[I["pucker"]] < 0.2
    assert iy[I["stretch"]] > uw[I["stretch"]] + 0.3


def test_anticipatory_rounding_before_a_rounded_vowel():
    """In 'sil S UW' the /s/ (weak lip dominance) already rounds; in 'sil S IY' it does not."""
    def pucker_on_s(v):
        phones = [("sil", 0, 0.2), ("S", 0.2, 0.3), (v, 0.3, 0.5), ("sil", 0.5, 0.7)]
        X = animate_controls(phones, 21, FPS, SpeakerStyle(), np.random.default_rng(0))
        return _at(phones, X, "S")[0][I["pucker"]]
    assert pucker_on_s("UW") > pucker_on_s("IY") + 0.2


def test_style_scales_jaw():
    phones = [("sil", 0, 0.1), ("AA", 0.1, 0.4), ("sil", 0.4, 0.6)]
    wide = animate_controls(phones, 18, FPS, SpeakerStyle(jaw_scale=1.3), np.random.default_rng(0))
    narrow = animate_controls(phones, 18, FPS, SpeakerStyle(jaw_scale=0.7), np.random.default_rng(0))
    assert _at(phones, wide, "AA")[0][I["jaw_open"]] > _at(phones, narrow, "AA")[0][I["jaw_open"]] + 0.2


def test_output_shape_range_smoothness_and_determinism():
    rng_phones = np.random.default_rng(5)
    labels = ["sil", "AA", "T", "IY", "S", "OW", "K", "AE", "N", "ER", "sil"]
    t = np.cumsum(np.r_[0, rng_phones.uniform(0.06, 0.15, len(labels))])
    phones = [(lab, t[i], t[i + 1]) for i, lab in enumerate(labels)]
    T = int(np.ceil(t[-1] * FPS))
    a = animate_controls(phones, T, FPS, style_for_subject(2), np.random.default_rng(9))
    b = animate_controls(phones, T, FPS, style_for_subject(2), np.random.default_rng(9))
    assert a.shape == (T, len(CONTROLS)) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    # no jumps in the jaw beyond what 1/30 s of articulation allows (no constraints triggered here)
    assert np.abs(np.diff(a[:, I["jaw_open"]])).max() < 0.3


def test_blinks_follow_the_rate_and_brows_move():
    phones = [("sil", 0.0, 60.0)]
    X = animate_controls(phones, 1800, FPS, SpeakerStyle(blink_rate=20.0), np.random.default_rng(1))
    closed = X[:, I["blink_l"]] > 0.8
    onsets = int(np.sum(closed[1:] & ~closed[:-1]))
    assert 8 <= onsets <= 32          # 20 per minute, Poisson with a refractory period
    # a blink lasts ~0.15-0.25 s (eyes > 50% closed for 2..8 frames)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, (X[:, I["blink_l"]] > 0.5).astype(int), 0])))[::2]
    assert runs.min() >= 2 and runs.max() <= 8


def test_unknown_phone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown phone 'QQ'"):
        animate_controls([("QQ", 0, 0.1)], 3, FPS, SpeakerStyle(), np.random.default_rng(0))
    assert phone_viseme("AA1") == "OPEN" and phone_viseme("sil") == "sil"
    with pytest.raises(ValueError, match="num_frames"):
        animate_controls([("AA", 0, 0.1)], 0, FPS, SpeakerStyle(), np.random.default_rng(0))
