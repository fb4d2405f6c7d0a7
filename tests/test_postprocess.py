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


def _face(T=60, seed=0):
    """Five upper/lower inner-lip pairs plus a ring of skin vertices, lips opening and closing."""
    rng = np.random.default_rng(seed)
    xs = np.linspace(-0.02, 0.02, 5)
    up = np.stack([xs, np.zeros(5), np.full(5, 0.001)], 1)
    lo = np.stack([xs, np.zeros(5), np.full(5, -0.001)], 1)
    skin = rng.uniform([-0.03, -0.01, -0.02], [0.03, 0.01, 0.02], size=(20, 3))
    t = np.concatenate([up, lo, skin]).astype(np.float32)
    open_ = 0.004 + 0.004 * np.sin(np.arange(T) / 3.0)            # mouth opening over time (4 +- 4 mm)
    x = np.repeat(t[None], T, axis=0)
    x[:, 0:5, 2] += open_[:, None] / 2
    x[:, 5:10, 2] -= open_[:, None] / 2
    x += rng.normal(0, 1e-4, x.shape).astype(np.float32)
    masks = {"lip_upper_inner": np.arange(5), "lip_lower_inner": np.arange(5, 10)}
    return t, x, masks


def test_stream_equals_whole_clip_in_any_chunking():
    """The sink gives exactly events + weights + close_lips on the whole clip, however the frames
    arrive (predict_sequence writes windows of any size)."""
    fps, T = 30.0, 60
    t, x, masks = _face(T)
    ev = np.zeros(T * 50 // 30)
    ev[[8, 9, 30, 61, 62, 95]] = [0.3, 0.5, 0.2, 0.9, 0.4, 0.15]  # the last one at the clip's end
    cfg = P.LipCloseConfig()
    events = P.closure_events(ev, inner_lip_gap(x, masks["lip_upper_inner"], masks["lip_lower_inner"]), fps, cfg)
    assert len(events) >= 3
    want = P.close_lips(x, P.closure_weights(events, T, cfg.hold_frames, cfg.ramp_frames), t,
                        masks["lip_upper_inner"], masks["lip_lower_inner"], cfg.radius)
    assert not np.allclose(want, x)
    rng = np.random.default_rng(1)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, T), size=rng.integers(1, 8), replace=False))
        out = np.full_like(x, np.nan)
        sink = P.LipCloseSink(out, ev, fps, t, masks, cfg)
        for a, b in zip([0, *cuts], [*cuts, T]):
            sink[a:b] = x[a:b]
        sink.close()
        np.testing.assert_array_equal(out, want)
    whole, info = P.lipclose(x, np.zeros(0), fps, t, masks, cfg, evidence50=ev)
    np.testing.assert_array_equal(whole, want)
    assert info["events"] == events


def test_sink_refuses_out_of_order_frames_and_missing_masks():
    t, x, masks = _face(10)
    sink = P.LipCloseSink(np.empty_like(x), np.zeros(16), 30.0, t, masks)
    sink[0:4] = x[0:4]
    with pytest.raises(RuntimeError, match="in order"):
        sink[5:8] = x[5:8]
    with pytest.raises(RuntimeError, match="received 4 of 10"):
        sink.close()
    with pytest.raises(ValueError, match="lip_upper_inner.*postprocess 'none'"):
        P.LipCloseSink(np.empty_like(x), np.zeros(16), 30.0, t, {"lips": np.arange(3)})


def test_check_postprocess_names_the_choices():
    assert P.check_postprocess(None) == "none"
    assert P.check_postprocess(" LipClose ") == "lipclose"
    with pytest.raises(ValueError, match="unknown post-processing 'lipsync'.*none, lipclose"):
        P.check_postprocess("lipsync")
