"""engine.metrics against numbers computed by hand (see the comments next to each expectation)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engine import metrics as M


@pytest.fixture
def pair():
    """T=2, V=3. gt = 0. pred offsets:
    frame 0: v0 (3,4,0) -> d=5 (d2=25); v1 (0,0,1) -> d=1 (d2=1); v2 0
    frame 1: v0 (1,0,0) -> d=1 (d2=1);  v1 (0,2,0) -> d=2 (d2=4); v2 (0,0,2) -> d=2
    lips = [0, 1], upper_face = [2]."""
    gt = np.zeros((2, 3, 3))
    pred = np.zeros((2, 3, 3))
    pred[0, 0] = [3, 4, 0]
    pred[0, 1] = [0, 0, 1]
    pred[1, 0] = [1, 0, 0]
    pred[1, 1] = [0, 2, 0]
    pred[1, 2] = [0, 0, 2]
    return pred, gt


def test_lip_vertex_errors(pair):
    pred, gt = pair
    assert M.lip_vertex_error_sq(pred, gt, [0, 1]) == pytest.approx(14.5)      # (max(25,1) + max(1,4)) / 2
    assert M.lip_vertex_error_l2(pred, gt, [0, 1]) == pytest.approx(3.5)       # (5 + 2) / 2
    assert M.lip_vertex_error_l2_mean(pred, gt, [0, 1]) == pytest.approx(2.25)  # (5+1+1+2) / 4


def test_mean_and_upper_face_error(pair):
    pred, gt = pair
    assert M.mean_vertex_error(pred, gt) == pytest.approx(11 / 6)   # (5+1+0+1+2+2) / 6
    assert M.upper_face_error(pred, gt, [2]) == pytest.approx(1.0)  # (0 + 2) / 2
    # (T, V*3) layout is accepted too
    assert M.mean_vertex_error(pred.reshape(2, 9), gt.reshape(2, 9)) == pytest.approx(11 / 6)
    with pytest.raises(ValueError, match="same"):
        M.mean_vertex_error(pred, gt[:1])


def test_lrp_threshold_is_strict(pair):
    pred, gt = pair
    # lip distances 5, 1, 1, 2: below 1.5 -> 2 of 4 = 50 %; below 1.0 (strict) -> none
    assert M.lip_readability_percentage(pred, gt, [0, 1], threshold=1.5) == pytest.approx(50.0)
    assert M.lip_readability_percentage(pred, gt, [0, 1], threshold=1.0) == pytest.approx(0.0)
    assert M.lip_readability_percentage(pred, gt, [0, 1], threshold=10) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        M.lip_readability_percentage(pred, gt, [0, 1], threshold=0)


def test_fdd_by_hand():
    """Template 0, upper = [0, 1], T = 3.
    gt v0 x = 0,1,2 -> squared displacement 0,1,4: mean 5/3, std = sqrt(((5/3)^2 + (2/3)^2 + (7/3)^2)/3)
        = sqrt(78/27) = 1.699673; gt v1 still -> 0; gt value = (1.699673 + 0)/2 = 0.849837
    pred v0 constant (1,0,0) -> 1,1,1 std 0; pred v1 y = 0,1,0 -> 0,1,0: std = sqrt(2/9) = 0.471405;
        pred value = 0.235702.   FDD(seq 1) = 0.849837 - 0.235702 = 0.614134; seq 2 identical -> 0.
    Mean over the two sequences = 0.307067."""
    gt = np.zeros((3, 2, 3))
    gt[:, 0, 0] = [0, 1, 2]
    pred = np.zeros((3, 2, 3))
    pred[:, 0, 0] = 1
    pred[1, 1, 1] = 1
    tmpl = np.zeros((2, 3))
    assert M.fdd(pred, gt, tmpl, [0, 1]) == pytest.approx(0.614134, abs=1e-6)
    assert M.fdd([pred, gt], [gt, gt], tmpl, [0, 1]) == pytest.approx(0.307067, abs=1e-6)
    assert M.fdd(gt, pred, tmpl, [0, 1]) == pytest.approx(-0.614134, abs=1e-6)  # signed


def _seq(xs, extra=None):
    a = np.zeros((len(xs), 2, 3))
    a[:, 0, 0] = xs
    if extra is not None:
        a[:, 1, 1] = extra
    return a


def test_f_dtw_by_hand():
    """Wu et al.'s F-DTW: frame cost = mean per-vertex Euclidean distance, total path cost (no normalising)."""
    # pred x = [0, 2], gt x = [0, 1, 2] (one vertex): cost [[0,1,2],[2,1,0]]; best path
    # (0,0) -> (0,1) or (1,1) -> (1,2): 0 + 1 + 0 = 1
    assert M.f_dtw(_seq([0, 2]), _seq([0, 1, 2]), mask=[0]) == pytest.approx(1.0)
    # time-shifted copy: warping absorbs the shift entirely
    assert M.f_dtw(_seq([0, 1, 2]), _seq([0, 0, 1, 2]), mask=[0]) == pytest.approx(0.0)
    # pred [0,1,2] vs gt [1,2,3]: best path (0,0)=1,(1,0)=0,(2,1)=0,(2,2)=1 -> 2 (not / 4);
    # band 0 forces the diagonal: 1+1+1 = 3
    p, g = _seq([0, 1, 2]), _seq([1, 2, 3])
    assert M.f_dtw(p, g, mask=[0]) == pytest.approx(2.0)
    assert M.f_dtw(p, g, mask=[0], band=0) == pytest.approx(3.0)
    # mean over vertices, not the norm of the whole frame: vertex 0 off by 3 (x), vertex 1 by 4 (y)
    # in both frames -> every frame pair costs (3 + 4) / 2 = 3.5; two diagonal cells -> 7.0.
    # The earlier Parley variant (whole-frame norm 5, divided by the 2 path cells) gives 5.0.
    pred = np.zeros((2, 2, 3))
    gt = np.zeros((2, 2, 3))
    gt[:, 0, 0], gt[:, 1, 1] = 3.0, 4.0
    assert M.f_dtw(pred, gt) == pytest.approx(7.0)
    assert M.dtw_per_step(pred, gt) == pytest.approx(5.0)
    # the mask selects vertices: only vertex 1 -> 4 per frame -> 8
    assert M.f_dtw(pred, gt, mask=[1]) == pytest.approx(8.0)
    np.testing.assert_allclose(M.frame_distances(pred, gt), np.full((2, 2), 3.5))


def test_lve_sq_pooled_over_frames_of_all_clips():
    """CodeTalker pools frames: clip A (1 frame, max squared lip error 4), clip B (3 frames, 1 each)
    -> (4 + 1 + 1 + 1) / 4 = 1.75, not the mean of per-clip values (4 + 1) / 2 = 2.5."""
    a_pred, a_gt = np.zeros((1, 2, 3)), np.zeros((1, 2, 3))
    a_gt[0, 1, 2] = 2.0
    b_pred, b_gt = np.zeros((3, 2, 3)), np.zeros((3, 2, 3))
    b_gt[:, 0, 0] = 1.0
    assert M.lip_vertex_error_sq_pooled([a_pred, b_pred], [a_gt, b_gt], [0, 1]) == pytest.approx(1.75)
    per_clip = [M.lip_vertex_error_sq(a_pred, a_gt, [0, 1]), M.lip_vertex_error_sq(b_pred, b_gt, [0, 1])]
    assert per_clip == pytest.approx([4.0, 1.0])
    assert M.pool_by_frames(per_clip, [1, 3]) == pytest.approx(1.75)
    with pytest.raises(ValueError):
        M.pool_by_frames([1.0], [0])


def test_dtw_matches_bruteforce_on_random_sequences():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 2)), rng.normal(size=(5, 2))
    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    acc = np.full((8, 6), np.inf)
    acc[0, 0] = 0
    for i in range(1, 8):
        for j in range(1, 6):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    total, steps = M.dtw(cost)
    assert total == pytest.approx(acc[7, 5])
    assert 7 <= steps <= 11  # path length between max(n,m) and n+m-1


def test_inner_lip_gap_and_bilabial_closure():
    """Pairs (upper, lower) = (2,5), (0,3), (1,4) (deliberately unsorted).
    Frame gaps are set by moving the lower vertices down: medians [5, 5, 0, 1]."""
    T = 4
    x = np.zeros((T, 6, 3))
    per_frame = [[4, 5, 9], [5, 5, 5], [0, 0, 3], [1, 1, 1]]  # distances of the three pairs
    for t, ds in enumerate(per_frame):
        for (u, lo), d in zip([(2, 5), (0, 3), (1, 4)], ds):
            x[t, lo, 1] = -d
    up, lo = [2, 0, 1], [5, 3, 4]
    np.testing.assert_allclose(M.inner_lip_gap(x, up, lo), [5, 5, 0, 1])
    # fps 10: M mid 0.16 -> frame round(1.6)=2 (gap 0 -> closed); P mid 0.335 -> frame 3 (gap 1 -> open);
    # B mid 10.5 s -> frame 105, clipped to 3 (open). Closed 1 of 3.
    phones = [("sil", 0.0, 0.1), ("M", 0.1, 0.22), ("AA1", 0.22, 0.3), ("p", 0.3, 0.37), ("B", 10, 11)]
    assert M.bilabial_closure_rate(x, phones, 10, up, lo, threshold=0.5) == pytest.approx(1 / 3)
    assert M.bilabial_closure_rate(x, phones, 10, up, lo, threshold=1.5) == pytest.approx(1.0)
    assert math.isnan(M.bilabial_closure_rate(x, [("AA", 0, 1)], 10, up, lo, 0.5))
    with pytest.raises(ValueError, match="paired"):
        M.inner_lip_gap(x, [0, 1], [3])
    masks = {"lip_upper_inner": up, "lip_lower_inner": lo}
    out = M.evaluate_all(x, x, x[0], masks, phones=phones, fps=10, closure_threshold=0.5)
    assert out["bilabial_closure_rate"] == pytest.approx(1 / 3) and out["bilabial_closure_rate_gt"] == pytest.approx(1 / 3)
    assert out["bilabial_closure_threshold"] == 0.5
    assert "bilabial_closure_rate" not in M.evaluate_all(x, x, x[0], masks, phones=[("aa", 0, 1)], fps=10)


def test_evaluate_all(pair):
    pred, gt = pair
    masks = {"lips": np.array([0, 1]), "upper_face": np.array([2])}
    out = M.evaluate_all(pred, gt, np.zeros((3, 3)), masks)
    assert out["lve_sq"] == pytest.approx(14.5) and out["lve_l2"] == pytest.approx(3.5)
    assert out["mve"] == pytest.approx(11 / 6) and out["upper_face_error"] == pytest.approx(1.0)
    assert out["frames"] == 2.0 and "lrp" not in out and "bilabial_closure_rate" not in out
    assert out["f_dtw"] == pytest.approx(M.f_dtw(pred, gt)) and out["f_dtw_lips"] == pytest.approx(M.f_dtw(pred, gt, [0, 1]))
    assert out["f_dtw"] > 0
    assert all(isinstance(v, float) for v in out.values())
    assert "lve_sq" not in M.evaluate_all(pred, gt, np.zeros((3, 3)), {})  # no lips mask -> no lip metrics
    out = M.evaluate_all(pred, gt[:1].repeat(3, 0), np.zeros((3, 3)), masks, lrp_threshold=1.5)  # 2 vs 3 frames: trimmed
    assert out["frames"] == 2.0 and out["lrp"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="more than one"):
        M.evaluate_all(pred, np.zeros((4, 3, 3)), np.zeros((3, 3)), masks)


def test_mouth_aperture_correlation_hand_computed():
    """One pair (upper 0, lower 1). GT gaps [0, 2, 4], prediction gaps [1, 1, 4]:
    centred a = [-1, -1, 2], b = [-2, 0, 2]; r = (2 + 0 + 4) / sqrt(6 * 8) = 6 / sqrt(48)."""
    def seq(gaps):
        x = np.zeros((len(gaps), 2, 3))
        x[:, 1, 2] = -np.asarray(gaps, float)
        return x
    pred, gt = seq([1, 1, 4]), seq([0, 2, 4])
    r = M.mouth_aperture_correlation(pred, gt, [0], [1])
    assert r == pytest.approx(6 / math.sqrt(48))
    assert M.mouth_aperture_correlation(gt, gt, [0], [1]) == pytest.approx(1.0)
    assert math.isnan(M.mouth_aperture_correlation(seq([3, 3, 3]), gt, [0], [1]))  # constant: undefined
    out = M.evaluate_all(pred, gt, gt[0], {"lip_upper_inner": [0], "lip_lower_inner": [1]})
    assert out["aperture_corr"] == pytest.approx(6 / math.sqrt(48))
