"""The optional lipclose stage (engine.postprocess) against hand-worked values."""
import numpy as np
import pytest

from engine import postprocess as P
from engine.metrics import inner_lip_gap


def test_bilabial_evidence_by_hand():
    tokens = ["<blank>", "p", "a", "m"]
    probs = np.array([[1.0, 0, 0, 0],        # blank only -> 0
                      [0.0, 0.5, 0.5, 0],     # half the phone mass is bilabial, mass 1 -> 0.5
                      [0.8, 0, 0, 0.2]])      # all phone mass bilabial, mass 0.2 -> 1 * min(1, 0.4)
    ev = P.bilabial_evidence(np.log(np.maximum(probs, 1e-30)), tokens)
    np.testing.assert_allclose(ev, [0.0, 0.5, 0.4], atol=1e-9)
    with pytest.raises(ValueError, match="tokens"):
        P.bilabial_evidence(np.zeros((3, 2)), tokens)


def test_closure_weights_by_hand():
    w = P.closure_weights([5], 10, hold=1, ramp=2)
    # |t-5| - 1 = d: d<=0 -> 1; d=1 -> (1+cos(pi/3))/2 = .75; d=2 -> (1+cos(2pi/3))/2 = .25; d=3 -> 0
    np.testing.assert_allclose(w, [0, 0, 0.25, 0.75, 1, 1, 1, 0.75, 0.25, 0])


def test_closure_events_follow_the_gap_minimum_and_skip_wide_open_mouths():
    fps = 25.0
    ev = np.zeros(50)
    ev[10] = 0.9                       # 50 Hz frame 10 -> mesh frame 5; search +-round(2.5)=2 frames
    ev[30] = 0.9                       # -> mesh frame 15, but the mouth is wide open there
    gap = np.full(25, 0.010)
    gap[6] = 0.004                     # smallest gap in 3..7
    gap[13:18] = 0.030                 # > max_gap 0.015
    cfg = P.LipCloseConfig(threshold=0.3, search_s=0.1)
    assert P.closure_events(ev, gap, fps, cfg) == [6]


def _lips(gap=2.0):
    """Upper inner lips (0,1) at z=+gap/2, lower (2,3) at -gap/2, a far-away vertex 4."""
    t = np.array([[0, 0, 0.0], [1, 0, 0.0], [0, 0, 0.0], [1, 0, 0.0], [0, 0, 50.0]])
    x = np.repeat(t[None], 3, axis=0)
    x[:, [0, 1], 2] += gap / 2
    x[:, [2, 3], 2] -= gap / 2
    return t, x


def test_close_lips_meets_in_the_middle_with_weight():
    t, x = _lips()
    out = P.close_lips(x, np.array([0.0, 0.5, 1.0]), t, [0, 1], [2, 3], radius=1.0)
    np.testing.assert_allclose(inner_lip_gap(out, [0, 1], [2, 3]), [2.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[2, [0, 2], 2], [0.0, 0.0], atol=1e-6)   # both moved half-way
    np.testing.assert_array_equal(out[:, 4], x[:, 4])                       # far vertex untouched
    np.testing.assert_array_equal(out[0], x[0])                             # weight 0: unchanged
    with pytest.raises(ValueError, match="weights"):
        P.close_lips(x, np.ones(2), t, [0, 1], [2, 3])
