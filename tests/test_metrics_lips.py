"""Lip-contact metrics (engine.metrics, appended section) against values worked out by hand."""
import numpy as np
import pytest

from engine import metrics as M

FPS = 10.0  # frame i shows t = i / 10 s
# inner-lip gap per frame (upper inner lip at z = gap, lower at z = 0)
GAP = np.array([5.0, 3.0, 0.5, 8.0, 9.0, 2.0])
PHONES = [("sil", 0.0, 0.1), ("P", 0.1, 0.3), ("AA1", 0.3, 0.45), ("m", 0.45, 0.48),
          ("p", 0.1, 0.42), ("f", 0.2, 0.4)]


def _mesh():
    """6 vertices: upper inner 0,1; lower inner 2,3; upper teeth 4,5."""
    T = len(GAP)
    x = np.zeros((T, 6, 3))
    x[:, 1, 0] = x[:, 3, 0] = 1.0
    x[:, 0, 2] = x[:, 1, 2] = GAP
    x[:, 4] = (0.0, 0.0, 3.0)
    x[:, 5] = (1.0, 0.0, 2.0)
    x[3, 5, 2] = 1.5          # the teeth vertex dips on frame 3 (inside /f/)
    return x


def test_phone_frame_spans_by_hand():
    # P 0.1-0.3: frames 1,2 (t=0.1, 0.2), mid round(2.0)=2.  AA1 0.3-0.45: frames 3,4, mid round(3.75)=4.
    # m 0.45-0.48 holds no frame start: it keeps its nearest frame round(4.65)=5.
    # p 0.1-0.42: frames 1..4, mid round(2.6)=3.
    assert M.phone_frame_spans(PHONES, M.BILABIALS, FPS, 6) == [(1, 2, 2), (5, 5, 5), (1, 3, 4)]
    assert M.phone_frame_spans(PHONES, M.OPEN_VOWELS, FPS, 6) == [(3, 4, 4)]
    assert M.phone_frame_spans(PHONES, {"zh"}, FPS, 6) == []
    # clipping: a phone past the end maps onto the last frame
    assert M.phone_frame_spans([("b", 0.9, 1.0)], M.BILABIALS, FPS, 6) == [(5, 5, 5)]


def test_bilabial_gap_midpoint_and_anywhere():
    x = _mesh()
    mid, anyw = M.bilabial_gap_per_phone(x, PHONES, FPS, [0, 1], [2, 3])
    np.testing.assert_allclose(mid, [0.5, 2.0, 8.0])      # frames 2, 5, 3
    np.testing.assert_allclose(anyw, [0.5, 2.0, 0.5])     # min over 1-2, 5, 1-4
    assert M.bilabial_closure_anywhere_rate(x, PHONES, FPS, [0, 1], [2, 3], 1.0) == pytest.approx(2 / 3)
    # the midpoint variant agrees with the existing per-midpoint metric
    assert M.bilabial_closure_rate(x, PHONES, FPS, [0, 1], [2, 3], 1.0) == pytest.approx(1 / 3)
    assert np.isnan(M.bilabial_closure_anywhere_rate(x, [("aa", 0, 0.5)], FPS, [0, 1], [2, 3], 1.0))


def test_labiodental_distance_by_hand():
    x = _mesh()
    # lower lip (0,0,0),(1,0,0); teeth (0,0,3),(1,0,2): distances 3, sqrt5, sqrt10, 2 -> min 2
    d = M.labiodental_distance(x, [2, 3], [4, 5])
    np.testing.assert_allclose(d, [2, 2, 2, 1.5, 2, 2])
    # /f/ 0.2-0.4 covers frames 2 and 3 -> 1.5
    np.testing.assert_allclose(M.labiodental_distance_per_phone(x, PHONES, FPS, [2, 3], [4, 5]), [1.5])
    assert M.labiodental_distance_per_phone(x, [("p", 0, 0.2)], FPS, [2, 3], [4, 5]).size == 0


def test_rounding_narrowing_and_protrusion_by_hand():
    t = np.array([[-2, 0, 0.1], [2, 0, 0.1], [-1, 0, -0.1], [1, 0, -0.1]], dtype=float)
    x = np.repeat(t[None], 3, axis=0)
    x[1, 0] = (-1.5, -0.5, 0.1)   # frame 1: corners come in 0.5 each and push 0.5 toward -Y
    x[1, 1] = (1.5, -0.5, 0.1)
    np.testing.assert_allclose(M.mouth_width(x, [0, 1], [2, 3], t), [4, 3, 4])
    narrow, protrude = M.rounding_per_phone(x, [("UW1", 0.05, 0.15), ("sil", 0.15, 0.3)], FPS,
                                            [0, 1], [2, 3], [0, 1], t, forward=(0, -2, 0))
    np.testing.assert_allclose(narrow, [1.0])
    np.testing.assert_allclose(protrude, [0.5])    # forward is normalised


def test_open_vowel_gap_by_hand():
    np.testing.assert_allclose(M.open_vowel_gap_per_phone(_mesh(), PHONES, FPS, [0, 1], [2, 3]), [9.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="empty"):
        M.labiodental_distance(_mesh(), [], [4])
    with pytest.raises(ValueError, match="paired"):
        M.bilabial_gap_per_phone(_mesh(), PHONES, FPS, [0, 1], [2])
