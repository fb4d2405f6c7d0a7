"""Fit: template -> user heads of other topology, units and axes; correspondence against ground
truth; fit files; refused inputs with actionable messages."""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from engine.retarget.fit import FitError, load_fit
from engine.retarget.geometry import closest_points
from engine.retarget.landmarks import LandmarkError
from engine.retarget.meshin import MeshInputError, check_mesh
from engine.retarget.run import choose_up, fit_or_load
from tests.retarget_common import character, fitted, source_side, template


def test_remeshed_head_correspondence_matches_ground_truth():
    c, fit, topo = character("remeshed"), fitted("remeshed"), template()
    assert fit.meta["landmark_source"] == "auto"
    assert fit.residual < 0.005
    assert 0.97 < fit.meta["scale"] < 1.03
    # each face vertex's matched point on the *rest* template vs the point it was cut from
    tv = topo.vertices.astype(np.float64)
    got = np.einsum("nk,nkc->nc", fit.c2t_bary, tv[topo.faces[fit.c2t_face]])
    true = np.einsum("nk,nkc->nc", c.gt_bary, tv[c.source_faces[c.gt_face]])
    face = fit.weight > 0.9
    err = np.linalg.norm(got[face] - true[face], axis=1)
    assert np.median(err) < 0.0015 and np.percentile(err, 95) < 0.005, (np.median(err), np.percentile(err, 95))


def test_contact_rows_are_on_the_right_lips():
    c, fit = character("remeshed"), fitted("remeshed")
    side = source_side(c)
    assert len(fit.lip_upper) >= 6
    assert np.all(side[fit.lip_upper] >= 0) and np.all(side[fit.lip_lower] <= 0)
    gap = np.linalg.norm(c.vertices[fit.lip_upper] - c.vertices[fit.lip_lower], axis=1)
    assert np.median(gap) < 0.004   # the template's lips almost touch; a 4 mm remesh keeps them close


def test_centimetre_y_up_head_keeps_units_and_axes():
    c = character("cm_yup")
    assert choose_up(check_mesh(c.vertices, c.faces)) == "y"
    fit = fitted("cm_yup")
    assert 90 < fit.meta["scale"] < 110              # metres template -> centimetre head
    # the fitted template comes back in the file's axes and units: on the mesh's surface
    _, _, d = closest_points(fit.fitted_template[template().masks["lips"]], c.vertices, c.faces)
    assert np.median(d) < 0.2                        # cm


def test_fit_file_round_trip_and_mesh_fingerprint(tmp_path):
    c, fit = character("remeshed"), fitted("remeshed")
    p = fit.save(tmp_path / "head.fit.npz")
    with np.load(p, allow_pickle=False) as z:       # arrays only, no pickle
        assert "meta" in z.files
    back = load_fit(p)
    assert back.meta == fit.meta
    for k, v in fit.arrays.items():
        np.testing.assert_array_equal(back.arrays[k], v)
    back.check_mesh(check_mesh(c.vertices, c.faces))
    moved = c.vertices.copy()
    moved[0] += 0.001
    with pytest.raises(FitError, match="fit it again"):
        back.check_mesh(check_mesh(moved, c.faces))


def test_manual_landmarks_override(tmp_path):
    c, topo = character("remeshed"), template()
    auto = fitted("remeshed")
    lm = {n: int(np.argmin(np.linalg.norm(c.vertices - p, axis=1)))
          for n, p in zip(auto.meta["landmark_names"], auto.landmarks)}
    path = tmp_path / "lm.json"
    path.write_text(json.dumps(lm))
    fit = fit_or_load(check_mesh(c.vertices, c.faces), topo, up="z", landmarks=str(path))
    assert fit.meta["landmark_source"] == "file"
    assert fit.residual < 0.005


def test_head_found_inside_a_body_mesh():
    c, fit = character("body"), fitted("body")
    n_head = int((c.gt_face >= 0).sum())
    head = set(fit.head_index.tolist())
    body = np.nonzero(c.gt_face < 0)[0]
    assert not head & set(body.tolist())            # no torso vertex in the head
    assert len(head) > 0.9 * n_head
    assert fit.residual < 0.005


def test_vertex_group_file_restricts_the_fit(tmp_path):
    c, topo = character("body"), template()
    grp = tmp_path / "face.json"
    grp.write_text(json.dumps({"indices": np.nonzero(c.gt_face >= 0)[0].tolist()}))
    fit = fit_or_load(check_mesh(c.vertices, c.faces), topo, up="z", vertex_group=str(grp))
    np.testing.assert_array_equal(fit.head_index, np.nonzero(c.gt_face >= 0)[0])


@pytest.mark.slow
def test_kilometres_fit_like_metres():
    c, topo = character("remeshed"), template()
    fit = fit_or_load(check_mesh(c.vertices / 1000.0, c.faces), topo, up="z")
    assert fit.meta["scale"] == pytest.approx(fitted("remeshed").meta["scale"] / 1000.0, rel=0.02)
    assert fit.residual < 0.005


def _bad_cases():
    c = character("remeshed")
    V, F = c.vertices, c.faces
    box = trimesh.creation.box(extents=[0.2, 0.2, 0.2])
    Rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    return {
        "cube": (box.vertices, box.faces, LandmarkError, "no face found"),
        "empty": (np.zeros((0, 3)), np.zeros((0, 3), int), MeshInputError, "is empty"),
        "two_heads": (np.concatenate([V, V + [0.3, 0, 0]]), np.concatenate([F, F + len(V)]), MeshInputError,
                      "vertex-group-file"),
        "flipped_normals": (V, F[:, ::-1], MeshInputError, "Recalculate Outside"),
        "facing_plus_x": (V @ Rz.T, F, LandmarkError, "--front"),
    }


@pytest.mark.parametrize("case", ["cube", "empty", "two_heads", "flipped_normals", "facing_plus_x"])
def test_bad_meshes_are_refused_with_advice(case):
    v, f, exc, words = _bad_cases()[case]
    with pytest.raises(exc, match=words):
        fit_or_load(check_mesh(v, f, case), template())


def test_facing_plus_x_works_with_front_option():
    c = character("remeshed")
    Rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    fit = fit_or_load(check_mesh(c.vertices @ Rz.T, c.faces), template(), up="z", front="+x")
    assert fit.residual < 0.005


def test_too_few_landmarks_named(tmp_path):
    c = character("remeshed")
    p = tmp_path / "lm.json"
    p.write_text(json.dumps({"nose_tip": 1, "mouth_centre": 2}))
    with pytest.raises(LandmarkError, match="2 of the 6 landmarks.*mouth_corner_l"):
        fit_or_load(check_mesh(c.vertices, c.faces), template(), up="z", landmarks=str(p))


def test_auto_up_finds_the_stylised_head():
    """Regression: the quick up-axis pass missed the stylised head that the fit itself finds; a
    Z-up mesh fitted with the default ``up="auto"`` must not be refused."""
    c = character("stylised")
    assert choose_up(check_mesh(c.vertices, c.faces)) == "z"
