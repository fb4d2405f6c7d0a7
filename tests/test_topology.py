"""engine.topology: file round trips keep vertex order, fingerprint, mismatch messages."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from engine.topology import Topology, TopologyMismatch, masks_sidecar


def quad_strip(n: int = 6, seed: int = 0) -> Topology:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(2 * n, 3)).astype(np.float32)  # random positions: order is observable
    faces = []
    for i in range(n - 1):
        a, b, c, d = 2 * i, 2 * i + 1, 2 * i + 2, 2 * i + 3
        faces += [[a, b, c], [b, d, c]]
    masks = {"lips": [3, 1, 1, 2], "upper_face": [0], "face": list(range(2 * n)),
             "lip_upper_inner": [5, 2], "lip_lower_inner": [4, 3]}
    return Topology(v, np.array(faces), masks, fps=25.0, name="strip")


def test_masks_sorted_unique_except_pairs():
    t = quad_strip()
    np.testing.assert_array_equal(t.masks["lips"], [1, 2, 3])
    np.testing.assert_array_equal(t.masks["lip_upper_inner"], [5, 2])  # order kept
    assert t.masks["lips"].dtype == np.int64 and t.faces.dtype == np.int64 and t.vertices.dtype == np.float32


def test_fingerprint_format_and_face_sensitivity():
    t = quad_strip()
    digest = hashlib.sha256(t.faces.astype("<i8").tobytes()).hexdigest()[:12]
    assert t.fingerprint() == f"v12-f10-{digest}"
    flipped = Topology(t.vertices, t.faces[:, ::-1], {})
    assert flipped.fingerprint() != t.fingerprint()
    assert flipped.fingerprint().startswith("v12-f10-")
    moved = t.with_vertices(t.vertices + 1)  # template shape does not change identity
    assert moved.fingerprint() == t.fingerprint()


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".npz"])
def test_round_trip_keeps_vertex_order(tmp_path, suffix):
    t = quad_strip()
    path = t.save(tmp_path / f"head{suffix}")
    u = Topology.load(path)
    np.testing.assert_allclose(u.vertices, t.vertices, atol=1e-6)
    np.testing.assert_array_equal(u.faces, t.faces)
    assert u.fingerprint() == t.fingerprint()
    assert set(u.masks) == set(t.masks)
    np.testing.assert_array_equal(u.masks["lip_lower_inner"], [4, 3])
    assert u.fps == 25.0 and u.name == "strip"
    if suffix != ".npz":
        assert masks_sidecar(path).exists()


def test_obj_with_uv_seams_does_not_split_vertices(tmp_path):
    # vertex 0 uses two different UVs: a processing loader would duplicate it
    obj = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\nvt .5 .5\nf 4/1 2/2 1/3\nf 1/5 3/4 4/1\n"
    p = tmp_path / "uv.obj"
    p.write_text(obj)
    t = Topology.load(p)
    np.testing.assert_array_equal(t.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(t.faces, [[3, 1, 0], [0, 2, 3]])
    assert t.name == "uv" and t.masks == {}


def test_npy_needs_faces(tmp_path):
    t = quad_strip()
    p = tmp_path / "v.npy"
    np.save(p, t.vertices.reshape(-1))
    with pytest.raises(ValueError, match="faces="):
        Topology.load(p)
    u = Topology.load(p, faces=t.faces, masks={"lips": [0]})
    np.testing.assert_array_equal(u.vertices, t.vertices)
    assert list(u.masks) == ["lips"]


def test_sidecar_bare_mapping(tmp_path):
    t = quad_strip()
    path = t.save(tmp_path / "h.obj")
    masks_sidecar(path).write_text(json.dumps({"lips": [7, 6]}))
    u = Topology.load(path)
    np.testing.assert_array_equal(u.masks["lips"], [6, 7])


def test_check_compatible_messages():
    t = quad_strip()
    t.check_compatible(12, t.fingerprint())
    with pytest.raises(TopologyMismatch) as info:
        t.check_compatible(5023, what="your mesh")
    msg = str(info.value)
    assert "your mesh has 5023 vertices" in msg and "expects 12" in msg and t.fingerprint() in msg
    with pytest.raises(TopologyMismatch) as info:
        t.check_compatible(12, "v12-f10-000000000000")
    assert "v12-f10-000000000000" in str(info.value) and t.fingerprint() in str(info.value)


def test_invalid_inputs():
    t = quad_strip()
    with pytest.raises(ValueError, match="outside"):
        Topology(t.vertices, t.faces, {"lips": [99]})
    with pytest.raises(ValueError, match="reference vertex"):
        Topology(t.vertices[:3], t.faces)
    with pytest.raises(ValueError, match="equal length"):
        Topology(t.vertices, t.faces, {"lip_upper_inner": [1, 2], "lip_lower_inner": [3]})


def test_tensor_round_trip():
    t = quad_strip()
    d = {f"topology.{k}": v for k, v in t.to_tensors().items()}
    u = Topology.from_tensors(d, t.meta())
    assert u.fingerprint() == t.fingerprint() and u.fps == 25.0 and u.name == "strip"
    np.testing.assert_array_equal(u.masks["lip_upper_inner"], [5, 2])
    bad = dict(t.meta(), fingerprint="v12-f10-deadbeef0000")
    with pytest.raises(TopologyMismatch):
        Topology.from_tensors(d, bad)
