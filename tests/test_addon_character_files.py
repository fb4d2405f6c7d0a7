"""The add-on's bpy-free "any character" modules under plain Python: keyframe reduction
(blender_addon/keyframes.py) and the files exchanged with the engine (character_files.py),
read back by the engine's own readers where the engine has one."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blender_addon import character_files as cf  # noqa: E402
from blender_addon import keyframes  # noqa: E402
from blender_addon.formats import FormatError  # noqa: E402


# ------------------------------------------------------------------------------ keyframes
def test_rdp_keeps_the_corners_of_a_hand_made_curve():
    # 0 -> ramp up to 1 at frame 4 -> hold to frame 8 -> back to 0 at frame 10
    y = np.array([0, .25, .5, .75, 1, 1, 1, 1, 1, .5, 0], float)
    assert keyframes.rdp_keys(y, 0.01).tolist() == [0, 4, 8, 10]


def test_rdp_straight_line_and_constant_need_only_the_ends():
    assert keyframes.rdp_keys(np.linspace(0, 1, 50), 1e-9).tolist() == [0, 49]
    assert keyframes.rdp_keys(np.zeros(30), 0.0).tolist() == [0, 29]
    assert keyframes.rdp_keys(np.array([0.3]), 0.1).tolist() == [0]
    assert keyframes.rdp_keys(np.zeros(0), 0.1).tolist() == []


def test_rdp_error_is_within_tolerance_and_shrinks_with_it():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    y = np.clip(np.sin(t / 9.0) * 0.6 + 0.4 + 0.02 * rng.standard_normal(600), 0, 1)  # speech-like jaw curve
    counts = []
    for tol in (0.1, 0.03, 0.01, 0.0):
        k = keyframes.rdp_keys(y, tol)
        assert keyframes.reduction_error(y, k) <= tol + 1e-12
        counts.append(len(k))
    assert counts == sorted(counts) and counts[0] < 0.1 * len(y) and counts[-1] <= len(y)


def test_rdp_picks_the_frame_with_the_largest_vertical_error():
    y = np.zeros(11)
    y[3], y[7] = 0.2, 0.5   # both off the line 0..0; 7 is worse and is kept first. Then the lines
    # 0->7 (0.5*6/7 = 0.43 at frame 6) and 7->10 (0.33 at frame 8) are off by more than 0.3 where
    # y is 0, so 6 and 8 are kept; frame 3 (0.2 on a flat 0..6 line) is within 0.3 and dropped.
    assert keyframes.rdp_keys(y, 0.3).tolist() == [0, 6, 7, 8, 10]


def test_rdp_rejects_bad_input():
    with pytest.raises(ValueError, match="tolerance"):
        keyframes.rdp_keys(np.zeros(3), -1)
    with pytest.raises(ValueError, match="non-finite"):
        keyframes.rdp_keys(np.array([0, np.nan, 1]), 0.1)


def test_refine_adds_the_worst_frame_of_each_bad_segment_only():
    keys = np.array([0, 10, 20])
    err = np.zeros(21)
    err[[2, 3]] = [0.05, 0.08]   # segment 0..10: worst at 3
    err[15] = 0.01               # segment 10..20: within tolerance
    assert keyframes.refine_keys(keys, err, 0.02).tolist() == [0, 3, 10, 20]
    assert keyframes.refine_keys(keys, np.zeros(21), 0.02).tolist() == [0, 10, 20]


# ------------------------------------------------------------------------------ files for the engine
def test_landmark_names_match_the_engine():
    from engine.retarget.landmarks import REQUIRED

    assert tuple(cf.LANDMARKS) == tuple(REQUIRED)
    assert set(cf.LANDMARK_LABELS) == set(cf.LANDMARKS) == set(cf.LANDMARK_SHORT)


def test_shapes_npz_is_read_by_the_engine(tmp_path):
    from engine.retarget.run import load_shapes

    basis = np.random.default_rng(1).normal(size=(40, 3))
    keys = {"jawOpen": basis + 0.1, "mouthSmile_L": basis - 0.05}
    p = tmp_path / "shapes.npz"
    names = cf.write_shapes_npz(str(p), basis, keys, {"jawOpen": -0.5}, {"jawOpen": 1.5, "other": 3.0})
    assert names == ["jawOpen", "mouthSmile_L"]
    b, k, lo, hi = load_shapes(str(p))
    np.testing.assert_allclose(b, basis.astype(np.float32))
    assert list(k) == names
    np.testing.assert_allclose(k["jawOpen"], (basis + 0.1).astype(np.float32))
    assert lo == {"jawOpen": -0.5} and hi == {"jawOpen": 1.5}   # ranges of unknown keys dropped


@pytest.mark.parametrize("keys, words", [
    ({}, "no shape keys besides the basis"),
    ({"Basis": np.zeros((4, 3))}, "rename it"),
    ({"a/b": np.zeros((4, 3))}, "slashes"),
    ({"k": np.zeros((5, 3))}, "has shape"),
])
def test_shapes_npz_refuses_what_the_engine_would_misread(tmp_path, keys, words):
    p = tmp_path / "s.npz"
    with pytest.raises(FormatError, match=words):
        cf.write_shapes_npz(str(p), np.zeros((4, 3)), keys)
    assert not p.exists()


def test_mesh_npz_is_read_by_the_engine_with_order_kept(tmp_path):
    from engine.retarget.meshin import load_user_mesh

    v = np.random.default_rng(2).normal(size=(12, 3)).astype(np.float32)
    f = np.array([[0, 1, 2], [3, 4, 5], [9, 10, 11]])
    p = tmp_path / "m.npz"
    cf.write_mesh_npz(str(p), v, f)
    m = load_user_mesh(p)
    np.testing.assert_array_equal(m.vertices, v)
    np.testing.assert_array_equal(m.faces, f)
    with pytest.raises(FormatError, match="does not exist"):
        cf.write_mesh_npz(str(tmp_path / "bad.npz"), v, np.array([[0, 1, 12]]))


def test_landmarks_json_is_read_by_the_engine(tmp_path):
    from engine.retarget.landmarks import load_landmarks_json

    lm = {n: i for i, n in enumerate(cf.LANDMARKS)}
    p = tmp_path / "lm.json"
    cf.write_landmarks_json(str(p), lm, 10)
    assert load_landmarks_json(p, 10) == lm
    with pytest.raises(FormatError, match="5 of 6 landmarks placed; also assign Mouth corner R"):
        cf.write_landmarks_json(str(p), {n: 0 for n in cf.LANDMARKS[:5]}, 10)
    with pytest.raises(FormatError, match="the mesh changed"):
        cf.write_landmarks_json(str(p), dict(lm, nose_tip=10), 10)


def test_mesh_fingerprint_changes_with_positions_and_faces_only():
    v = np.zeros((4, 3))
    loops, sizes = np.array([0, 1, 2, 0, 2, 3]), np.array([3, 3])
    a = cf.mesh_fingerprint(v, loops, sizes)
    assert a.startswith("v4-p2-") and a == cf.mesh_fingerprint(v.copy(), loops.copy(), sizes.copy())
    v2 = v.copy()
    v2[1, 2] = 1e-4
    assert cf.mesh_fingerprint(v2, loops, sizes) != a
    assert cf.mesh_fingerprint(v, np.array([0, 1, 2, 0, 3, 2]), sizes) != a
    assert cf.mesh_fingerprint(v, np.array([0, 1, 2, 3, 0, 2]), np.array([4, 2])) != a


def test_weights_json_round_trip_and_bad_files(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"fps": 30, "names": ["jawOpen", "mouthClose"], "weights": [[0.1, 0.0], [0.5, 0.2]],
                             "path": "fit", "left_alone": ["eyeBlink_L"], "relative_error": 0.1}))
    w = cf.read_weights_json(str(p))
    assert w.fps == 30 and w.names == ["jawOpen", "mouthClose"] and w.path == "fit"
    np.testing.assert_allclose(w.weights, [[0.1, 0.0], [0.5, 0.2]])
    assert w.left_alone == ["eyeBlink_L"] and w.extra == {"relative_error": 0.1}
    for doc, words in (({"fps": 30, "names": ["a"]}, "needs"),
                       ({"fps": 30, "names": ["a", "b"], "weights": [[1.0]]}, "shape"),
                       ({"fps": 0, "names": ["a"], "weights": [[1.0]]}, "fps must be positive")):
        p.write_text(json.dumps(doc))
        with pytest.raises(FormatError, match=words):
            cf.read_weights_json(str(p))


def test_fit_summary_and_template_faces_from_real_files(tmp_path):
    """A fit made by the engine and the shipped checkpoint's faces, read without the engine."""
    from engine.retarget.fit import Fit

    arrays = {"landmarks": np.ones((6, 3)), "fitted_template": np.zeros((5, 3))}
    meta = {"version": 1, "mesh_fingerprint": "v5-f2-abc", "residual": 0.003, "landmark_source": "auto",
            "landmark_names": list(cf.LANDMARKS), "template_fingerprint": "v5-f1-x"}
    Fit(arrays, meta).save(tmp_path / "f.npz")
    data = (tmp_path / "f.npz").read_bytes()
    s = cf.read_fit_summary(data)
    assert s.residual == 0.003 and s.landmark_names == list(cf.LANDMARKS) and s.fitted_template.shape == (5, 3)
    with pytest.raises(FormatError, match="fit the character again"):
        cf.read_fit_summary(b"not a zip")
    from safetensors.numpy import load_file

    ckpt = ROOT / "engine" / "assets" / "default.safetensors"
    faces = cf.read_safetensors_array(str(ckpt), "topology.faces")
    np.testing.assert_array_equal(faces, load_file(str(ckpt))["topology.faces"])


def test_fit_refusal_is_said_in_panel_terms():
    msg = ("the fit is not good enough (surface residual 0.03 of the face size > 0.02): place landmarks: pass "
           "--landmarks lm.json with vertex indices for nose_tip, upper_lip; or make sure --up/--front describe "
           "the mesh and the head is human-like")
    out = cf.explain_fit_message(msg)
    assert "--" not in out and "surface residual 0.03" in out
    assert "Parley panel > Landmarks" in out and "Up axis setting" in out


def test_name_only_refusal_points_at_the_fit_button():
    msg = ("none of the shape keys has an ARKit, VRM or Rhubarb name and there is no fit: "
           "pass --target with the mesh so its keys can be solved geometrically")
    assert cf.explain_fit_message(msg).endswith("click Fit so its keys can be solved geometrically")
