"""Shape keys: the weight solve (hand-made cases), name maps, the fit path on an ARKit-named rig
and the name-only path."""
from __future__ import annotations

import numpy as np
import pytest

from engine.retarget.meshin import check_mesh
from engine.retarget.names import ARKIT_52, classify, map_names
from engine.retarget.run import animate_shapes
from engine.retarget.shapekeys import solve_weights
from tests.retarget_common import character, fitted, speech, template


def _random_problem(K=6, T=120, R=200, seed=0):
    rng = np.random.default_rng(seed)
    deltas = {f"k{i}": rng.normal(size=(R, 3)) for i in range(K)}
    t = np.linspace(0, 1, T)
    W = np.stack([np.clip(np.sin(2 * np.pi * (i + 1) * t + i), 0, 1) * (i % 2) for i in range(K)], 1)
    D = np.stack([deltas[f"k{i}"] for i in range(K)])
    target = np.einsum("tk,krc->trc", W, D)
    return deltas, target, W


def test_solve_recovers_known_weights():
    deltas, target, W = _random_problem()
    res = solve_weights(deltas, target, smooth=0.0, sparsity=0.0, iterations=500)
    assert res.names == list(deltas)
    np.testing.assert_allclose(res.weights, W, atol=0.02)
    assert res.relative_error < 0.02


def test_solve_respects_slider_range_and_is_sparse():
    deltas, target, _ = _random_problem()
    res = solve_weights(deltas, target, hi={"k1": 0.5}, iterations=400)
    w = res.weights
    assert w.min() >= 0.0 and w[:, 1].max() <= 0.5 + 1e-6 and w.max() <= 1.0
    assert np.isclose(w[:, 1].max(), 0.5, atol=1e-4)         # the clamped key sits at its limit
    # without the clamp, keys that are never used stay (almost exactly) at zero
    free = solve_weights(deltas, target, iterations=400).weights
    assert np.abs(free[:, [0, 2, 4]]).max() < 0.02


def test_smoothness_reduces_frame_to_frame_jumps():
    deltas, target, W = _random_problem(R=20)
    noisy = target + np.random.default_rng(1).normal(scale=1.0, size=target.shape)
    rough = solve_weights(deltas, noisy, smooth=0.0, iterations=500).weights
    smooth = solve_weights(deltas, noisy, smooth=1.0, iterations=500).weights
    jitter = lambda w: np.abs(np.diff(w - W, axis=0)).mean()
    assert jitter(smooth) < 0.5 * jitter(rough), (jitter(smooth), jitter(rough))


def test_keys_that_do_not_move_the_region_are_left_alone():
    deltas, target, _ = _random_problem()
    deltas["still"] = np.zeros_like(deltas["k0"])
    res = solve_weights(deltas, target)
    assert "still" in res.left_alone and "still" not in res.names


@pytest.mark.parametrize("name,channel", [
    ("jawOpen", "jawOpen"), ("JawOpen", "jawOpen"), ("mouthSmile_L", "mouthSmileLeft"),
    ("mouthSmileLeft", "mouthSmileLeft"), ("MouthSmile.L", "mouthSmileLeft"), ("blendShape1.eyeBlink_R", "eyeBlinkRight"),
    ("mouth_stretch_right", "mouthStretchRight"),
])
def test_arkit_name_variants(name, channel):
    assert map_names([name])[name] == ("arkit", channel)


def test_all_52_arkit_names_and_others():
    assert len(ARKIT_52) == 52 and len(map_names(list(ARKIT_52))) == 52
    m = map_names(["aa", "Fcl_MTH_O", "mouth_A", "Rhubarb_X", "Key 1", "Basis", "jaw_thing"])
    assert m["aa"] == ("vrm", "aa") and m["Fcl_MTH_O"] == ("vrm", "oh")
    assert m["mouth_A"] == ("rhubarb", "A") and m["Rhubarb_X"] == ("rhubarb", "X")
    assert "Key 1" not in m and "Basis" not in m and "jaw_thing" not in m
    # bare letters: Rhubarb when the rig has a Rhubarb-only letter, VRM 0.x vowels otherwise
    assert map_names(["A", "B", "X"])["A"] == ("rhubarb", "A")
    assert map_names(["A", "I", "U", "E", "O"])["A"] == ("vrm", "aa")
    assert classify(["Key 1", "Key 2"]) == "unknown"


def _shapes_npz(tmp_path, c, order=None):
    names = list(c.shapes) if order is None else order
    p = tmp_path / "shapes.npz"
    np.savez(p, Basis=c.vertices, **{n: c.shapes[n] for n in names})
    return str(p)


def test_fit_path_drives_the_arkit_rig_from_its_geometry(tmp_path):
    frames, _, _ = speech()
    c = character("arkit")
    mesh = check_mesh(c.vertices, c.faces)
    res = animate_shapes(frames, 30.0, template(), _shapes_npz(tmp_path, c), mesh, lambda: fitted("arkit"))
    assert res["path"] == "fit"
    names = res["names"]
    W = res["weights"]
    assert "jawOpen" in names and "cheekPuff" in res["left_alone"] and "eyeBlinkLeft" in res["left_alone"]
    assert W.shape == (len(frames), len(names)) and W.min() >= 0 and W.max() <= 1
    # jawOpen follows the rig's jaw control (the motion was made with it)
    from engine.metrics import inner_lip_gap
    m = template().masks
    gap = inner_lip_gap(frames, m["lip_upper_inner"], m["lip_lower_inner"])
    assert np.corrcoef(W[:, names.index("jawOpen")], gap)[0, 1] > 0.8
    assert res["relative_error"] < 0.35


def test_key_order_never_matters(tmp_path):
    frames, _, _ = speech()
    c = character("arkit")
    mesh = check_mesh(c.vertices, c.faces)
    names = list(c.shapes)
    a = animate_shapes(frames, 30.0, template(), _shapes_npz(tmp_path, c, names), mesh, lambda: fitted("arkit"))
    (tmp_path / "r").mkdir()
    b = animate_shapes(frames, 30.0, template(), _shapes_npz(tmp_path / "r", c, names[::-1]), mesh, lambda: fitted("arkit"))
    for n in a["names"]:
        np.testing.assert_allclose(a["weights"][:, a["names"].index(n)], b["weights"][:, b["names"].index(n)], atol=1e-3)


def test_name_path_without_any_fit(tmp_path):
    frames, _, _ = speech()
    c = character("arkit")
    warnings = []
    res = animate_shapes(frames, 30.0, template(), _shapes_npz(tmp_path, c), None, None, warn=warnings.append)
    assert res["path"] == "names" and warnings and "by their names" in warnings[0]
    names = res["names"]
    from engine.metrics import inner_lip_gap
    m = template().masks
    gap = inner_lip_gap(frames, m["lip_upper_inner"], m["lip_lower_inner"])
    assert np.corrcoef(res["weights"][:, names.index("jawOpen")], gap)[0, 1] > 0.8
    assert "mouthSmile_L" not in names or res["weights"][:, names.index("mouthSmile_L")].max() == 0


def test_rhubarb_rig_by_fit_and_by_names(tmp_path):
    frames, _, _ = speech()
    c = character("rhubarb")
    mesh = check_mesh(c.vertices, c.faces)
    p = _shapes_npz(tmp_path, c)
    by_fit = animate_shapes(frames, 30.0, template(), p, mesh, lambda: fitted("rhubarb"))
    by_name = animate_shapes(frames, 30.0, template(), p, mesh, None, mode="names")
    assert by_fit["path"] == "fit" and by_name["path"] == "names"
    assert "mouth_X" in by_fit["left_alone"]                 # the rest shape has no deltas
    Wn = by_name["weights"]
    assert set(by_name["names"]) <= {f"mouth_{k}" for k in "ABCDEFHX"}
    assert np.all(Wn.sum(1) > 0.99)                          # one (or two blended) mouth shapes per frame
