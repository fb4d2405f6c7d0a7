"""SynthTalk head templates and speech rig: numeric properties a face must have.

Distances are in metres (the head is ~0.24 m chin to crown), so 0.0005 = 0.5 mm.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from engine.metrics import inner_lip_gap
from engine.topology import Topology
from training.synthtalk.head import (
    NUM_IDENTITIES,
    SPLITS,
    IdentityParams,
    build_head,
    default_head,
    identity,
)
from training.synthtalk.rig import CONTROLS, Rig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head():
    return build_head(identity(10))


@pytest.fixture(scope="module")
def rig(head):
    return Rig(head)


@pytest.fixture(scope="module")
def heads():
    return [build_head(identity(i)) for i in range(NUM_IDENTITIES)]


def _pose1(rig, **w):
    return rig.pose({k: np.array([v], dtype=float) for k, v in w.items()})[0].astype(np.float64)


def _eye_margins(head, side):
    """Paired upper/lower lid margin vertices of one eye (+1 = left = +X)."""
    b = Rig(head)._blink["blink_l" if side > 0 else "blink_r"]
    return b["um"], b["lm"], b["centre"]


# ----------------------------------------------------------------------------- head
def test_vertex_count_in_range(head):
    assert 3000 <= head.topology.num_vertices <= 6000


def test_identity_table_and_splits():
    assert NUM_IDENTITIES == 12
    assert SPLITS == {"train": list(range(8)), "val": [8, 9], "test": [10, 11]}
    assert identity(3) == identity(3)                      # deterministic
    assert identity(3).name == "synth_03"
    with pytest.raises(ValueError, match="0..11"):
        identity(12)
    with pytest.raises(ValueError, match="out of range"):
        IdentityParams(nose_length=3.0)


def test_same_topology_every_identity(heads):
    fp = {h.topology.fingerprint() for h in heads}
    assert len(fp) == 1
    for h in heads[1:]:
        assert np.array_equal(h.faces, heads[0].faces)
        assert set(h.topology.masks) == set(heads[0].topology.masks)
        for k in h.topology.masks:
            assert np.array_equal(h.topology.masks[k], heads[0].topology.masks[k])


def test_identities_differ(heads):
    for a, b in itertools.combinations(range(len(heads)), 2):
        d = np.linalg.norm(heads[a].vertices - heads[b].vertices, axis=1).max()
        assert d > 0.002, f"identities {a} and {b} differ by only {d * 1000:.2f} mm"


def test_build_is_deterministic():
    a, b = build_head(identity(5)), build_head(identity(5))
    assert np.array_equal(a.vertices, b.vertices)


def test_mesh_is_closed_and_consistently_wound(head):
    import trimesh

    m = trimesh.Trimesh(head.vertices, head.faces, process=False)
    assert m.is_winding_consistent
    assert m.is_watertight          # head + two eyeballs, every edge shared by exactly 2 faces
    assert m.volume > 0             # outward normals


def test_size_and_axes(head):
    v = head.vertices
    assert 0.20 < v[:, 2].max() - v[v[:, 1] < -0.05][:, 2].min() + 0.0 < 0.30  # crown to chin
    tip = head.landmarks["nose_tip"]
    assert tip[1] < v[:, 1].min() + 1e-6              # the nose is the front-most point: face looks -Y
    eyes = head.landmarks["eye_centres"]
    assert eyes[1][0] > 0 > eyes[-1][0]                 # +1 = left eye on +X
    assert 0.05 < eyes[1][0] - eyes[-1][0] < 0.075     # interpupillary distance ~63 mm
    assert eyes[1][2] > tip[2] > head.landmarks["mouth_centre"][2]


def test_masks(head):
    m = head.topology.masks
    for name in ("lips", "upper_face", "face", "eyelids", "lip_upper_inner", "lip_lower_inner"):
        assert len(m[name]) > 0, name
    assert len(np.intersect1d(m["lips"], m["upper_face"])) == 0
    assert len(np.intersect1d(m["lip_upper_inner"], m["lip_lower_inner"])) == 0
    assert len(m["lip_upper_inner"]) == len(m["lip_lower_inner"]) >= 9
    assert np.isin(m["lips"], m["face"]).all() and np.isin(m["upper_face"], m["face"]).all()
    v = head.vertices.astype(np.float64)
    up, lo = v[m["lip_upper_inner"]], v[m["lip_lower_inner"]]
    # paired: same place across the mouth, upper above lower, and ordered corner to corner
    assert np.abs(up[:, 0] - lo[:, 0]).max() < 0.0015
    assert (up[:, 2] >= lo[:, 2]).all()
    assert np.all(np.diff(up[:, 0]) > 0)
    # neutral lips rest closed (gap below 1 mm) but are separate vertices
    assert 0 < np.linalg.norm(up - lo, axis=1).max() < 0.001
    # upper face is above the mouth, lips are around it
    assert v[m["upper_face"], 2].min() > v[m["lips"], 2].max() - 0.01


def test_default_head_asset_is_identity_10():
    path = ROOT / "engine" / "assets" / "default_head.obj"
    topo = Topology.load(path)
    ref = default_head().topology
    assert topo.fingerprint() == ref.fingerprint()
    assert np.allclose(topo.vertices, ref.vertices, atol=1e-6)
    assert set(topo.masks) >= {"lips", "upper_face", "face", "eyelids", "lip_upper_inner", "lip_lower_inner"}
    assert np.array_equal(topo.masks["lip_upper_inner"], ref.masks["lip_upper_inner"])


# ----------------------------------------------------------------------------- rig
def test_controls_exactly_as_contract():
    assert CONTROLS == ["jaw_open", "lips_close", "lips_press", "pucker", "funnel", "stretch",
                        "lower_lip_tuck", "upper_lip_raise", "smile", "brow_raise", "brow_furrow",
                        "blink_l", "blink_r"]


def test_zero_weights_give_template(head, rig):
    X = rig.pose(np.zeros((2, len(CONTROLS))))
    assert X.shape == (2, head.topology.num_vertices, 3) and X.dtype == np.float32
    assert np.allclose(X[1], head.vertices, atol=1e-7)


def test_dict_and_array_weights_agree(rig):
    rng = np.random.default_rng(0)
    W = rng.uniform(0, 1, (4, len(CONTROLS)))
    a = rig.pose(W)
    b = rig.pose({c: W[:, i] for i, c in enumerate(CONTROLS)})
    assert np.allclose(a, b)


def test_bad_weights_are_rejected(rig):
    with pytest.raises(ValueError, match="unknown rig controls"):
        rig.pose({"jaw": np.zeros(3)})
    with pytest.raises(ValueError, match="same length"):
        rig.pose({"jaw_open": np.zeros(3), "smile": np.zeros(4)})
    with pytest.raises(ValueError, match="NaN"):
        rig.pose({"jaw_open": np.array([np.nan])})
    with pytest.raises(ValueError, match=r"\(T, 13\)"):
        rig.pose(np.zeros((3, 5)))


def test_every_control_moves_something_smoothly(head, rig):
    for c in CONTROLS:
        # lips_close only acts on an open mouth: measure it against a half-open jaw
        ctx = {"jaw_open": 0.5} if c == "lips_close" else {}
        base = _pose1(rig, **ctx)
        d = np.linalg.norm(_pose1(rig, **ctx, **{c: 1.0}) - base, axis=1)
        assert d.max() > 0.002, f"{c} moves at most {d.max() * 1000:.2f} mm"
        assert d.max() < 0.04, f"{c} moves {d.max() * 1000:.1f} mm"
        half = np.linalg.norm(_pose1(rig, **ctx, **{c: 0.5}) - base, axis=1)
        assert 0.3 * d.max() < half.max() < 0.8 * d.max()


@pytest.mark.parametrize("ident", [0, 4, 10])
def test_lips_close_closes_for_jaw_up_to_0_4(ident):
    h = build_head(identity(ident))
    r = Rig(h)
    up, lo = h.topology.masks["lip_upper_inner"], h.topology.masks["lip_lower_inner"]
    for jaw in (0.0, 0.2, 0.4):
        X = r.pose({"jaw_open": np.array([jaw]), "lips_close": np.array([1.0])})
        assert inner_lip_gap(X, up, lo)[0] < 1e-4           # < 0.1 mm
        X = r.pose({"jaw_open": np.array([jaw]), "lips_close": np.array([1.0]), "smile": np.array([1.0]),
                    "pucker": np.array([1.0])})
        assert inner_lip_gap(X, up, lo)[0] < 1e-4


def test_aperture_grows_with_jaw_open(head, rig):
    up, lo = head.topology.masks["lip_upper_inner"], head.topology.masks["lip_lower_inner"]
    jaw = np.linspace(0, 1, 6)
    gap = inner_lip_gap(rig.pose({"jaw_open": jaw}), up, lo)
    assert np.all(np.diff(gap) > 0.001)
    assert gap[0] < 0.001                 # closed at rest
    assert 0.02 < gap[-1] < 0.045         # wide open: 2-4.5 cm


def test_funnel_and_raise_open_lips_tuck_and_press_do_not(head, rig):
    up, lo = head.topology.masks["lip_upper_inner"], head.topology.masks["lip_lower_inner"]
    g0 = inner_lip_gap(head.vertices[None], up, lo)[0]
    assert inner_lip_gap(rig.pose({"funnel": np.ones(1)}), up, lo)[0] > g0 + 0.004
    assert inner_lip_gap(rig.pose({"upper_lip_raise": np.ones(1)}), up, lo)[0] > g0 + 0.002
    # pucker protrudes the lips and narrows the mouth
    P = _pose1(rig, pucker=1.0)
    c = head.landmarks["mouth_corners"]
    base = head.vertices.astype(np.float64)
    assert P[up, 1].mean() < base[up, 1].mean() - 0.005
    assert np.ptp(P[c, 0]) < 0.8 * np.ptp(base[c, 0])
    S = _pose1(rig, stretch=1.0)
    assert np.ptp(S[c, 0]) > 1.1 * np.ptp(base[c, 0])
    M = _pose1(rig, smile=1.0)
    assert (M[c, 2] - base[c, 2]).min() > 0.004          # corners up


def test_blink_closes_each_eye_separately(head, rig):
    base = head.vertices.astype(np.float64)
    for side, name, other in ((1, "blink_l", -1), (-1, "blink_r", 1)):
        um, lm, _ = _eye_margins(head, side)
        oum, olm, _ = _eye_margins(head, other)
        open_gap = (base[um, 2] - base[lm, 2]).max()
        assert open_gap > 0.007                               # open eye: ~1 cm
        X = _pose1(rig, **{name: 1.0})
        assert np.linalg.norm(X[um] - X[lm], axis=1).max() < 1e-5   # closed: margins meet
        assert np.allclose(X[oum], base[oum]) and np.allclose(X[olm], base[olm])
        half = _pose1(rig, **{name: 0.5})
        assert 0.3 * open_gap < (half[um, 2] - half[lm, 2]).max() < 0.75 * open_gap


SPEECH_EXTREMES = {
    "jaw_open": (0.0, 0.4, 1.0), "lips_close": (0.0, 1.0), "lips_press": (0.0, 1.0),
    "lower_lip_tuck": (0.0, 1.0), "upper_lip_raise": (0.0, 1.0),
}
SHAPES = ({}, {"pucker": 1.0}, {"funnel": 1.0}, {"stretch": 1.0}, {"smile": 1.0},
          {"smile": 1.0, "stretch": 1.0}, {"pucker": 1.0, "funnel": 1.0})


def test_no_lip_inversion_at_speech_extremes(head, rig):
    """Upper inner lip never more than 0.5 mm below its lower partner, for every combination."""
    up, lo = head.topology.masks["lip_upper_inner"], head.topology.masks["lip_lower_inner"]
    names = list(SPEECH_EXTREMES)
    rows = []
    for combo in itertools.product(*(SPEECH_EXTREMES[n] for n in names)):
        for shape in SHAPES:
            w = dict(zip(names, combo))
            w.update(shape)
            rows.append([w.get(c, 0.0) for c in CONTROLS])
    W = np.array(rows)
    X = rig.pose(W).astype(np.float64)
    dz = X[:, up, 2] - X[:, lo, 2]
    worst = dz.min(axis=1)
    bad = np.nonzero(worst < -0.0005)[0]
    assert len(bad) == 0, f"lip inversion {worst[bad[0]] * 1000:.2f} mm for {dict(zip(CONTROLS, W[bad[0]]))}"


def test_no_eyelid_crossing(head, rig):
    combos = []
    for bl, sm, br, bf in itertools.product((0, 0.5, 1.0), (0, 1.0), (0, 1.0), (0, 1.0)):
        combos.append({"blink_l": bl, "blink_r": bl, "smile": sm, "brow_raise": br, "brow_furrow": bf})
    W = np.array([[c.get(n, 0.0) for n in CONTROLS] for c in combos])
    X = rig.pose(W).astype(np.float64)
    r_eye = head.landmarks["eye_radius"]
    for side in (1, -1):
        um, lm, centre = _eye_margins(head, side)
        assert (X[:, um, 2] - X[:, lm, 2]).min() > -0.0005
        # the upper lid slides over the eyeball, never into it
        assert np.linalg.norm(X[:, um] - centre, axis=-1).min() > r_eye
