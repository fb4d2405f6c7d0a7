"""engine.exporters: PC2/MDD header bytes, round trips, truncation errors, OBJ sequences."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from engine.exporters import (
    read_animation,
    read_mdd,
    read_pc2,
    save_animation,
    write_mdd,
    write_npy,
    write_obj_sequence,
    write_pc2,
)


@pytest.fixture
def frames():
    return np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3) / 10  # T=2, V=3


def test_pc2_header_bytes_and_round_trip(tmp_path, frames):
    p = write_pc2(tmp_path / "a.pc2", frames, fps=30, start_frame=5)
    raw = p.read_bytes()
    # 12-byte magic, int32 version 1, int32 V=3, float start 5.0, float sampling 1.0, int32 T=2
    assert raw[:32] == b"POINTCACHE2\0" + struct.pack("<i", 1) + struct.pack("<i", 3) + \
        struct.pack("<f", 5.0) + struct.pack("<f", 1.0) + struct.pack("<i", 2)
    assert len(raw) == 32 + 2 * 3 * 3 * 4
    assert struct.unpack("<f", raw[32:36])[0] == 0.0 and struct.unpack("<f", raw[36:40])[0] == pytest.approx(0.1)
    back, fps = read_pc2(p)
    np.testing.assert_array_equal(back, frames)
    assert fps is None  # PC2 stores frames, not a frame rate


def test_mdd_header_bytes_and_round_trip(tmp_path, frames):
    p = write_mdd(tmp_path / "a.mdd", frames, fps=25)
    raw = p.read_bytes()
    assert raw[:8] == struct.pack(">ii", 2, 3)
    assert struct.unpack(">ff", raw[8:16]) == (0.0, pytest.approx(0.04))  # times 0, 1/25
    assert struct.unpack(">f", raw[16 + 4:20 + 4])[0] == pytest.approx(0.1)  # frame0 vertex0 y, big-endian
    assert len(raw) == 8 + 2 * 4 + 2 * 3 * 3 * 4
    back, fps = read_mdd(p)
    np.testing.assert_array_equal(back, frames)
    assert fps == 25.0


def test_truncated_and_foreign_files(tmp_path, frames):
    p = write_pc2(tmp_path / "a.pc2", frames, 30)
    p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(ValueError, match="truncated PC2.*2 frames x 3 vertices"):
        read_pc2(p)
    m = write_mdd(tmp_path / "a.mdd", frames, 30)
    m.write_bytes(m.read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated MDD"):
        read_mdd(m)
    junk = tmp_path / "j.pc2"
    junk.write_bytes(b"x" * 40)
    with pytest.raises(ValueError, match="not a PC2"):
        read_pc2(junk)
    neg = tmp_path / "n.mdd"
    neg.write_bytes(struct.pack(">ii", -1, 3))
    with pytest.raises(ValueError, match="invalid sizes"):
        read_mdd(neg)


def test_npy_and_dispatch(tmp_path, frames):
    for ext in ("npy", "pc2", "mdd"):
        p = save_animation(tmp_path / f"x.{ext}", frames.reshape(2, 9), fps=30)  # (T, V*3) accepted
        back, _ = read_animation(p, num_vertices=3)
        np.testing.assert_array_equal(back, frames)
    with pytest.raises(ValueError, match="unsupported"):
        save_animation(tmp_path / "x.fbx", frames, 30)
    with pytest.raises(ValueError, match="expected 4"):
        read_animation(tmp_path / "x.npy", num_vertices=4)
    with pytest.raises(FileNotFoundError):
        read_animation(tmp_path / "missing.pc2")
    assert np.load(write_npy(tmp_path / "y.npy", frames)).shape == (2, 3, 3)


def test_obj_sequence(tmp_path, frames):
    faces = np.array([[0, 1, 2]])
    paths = write_obj_sequence(tmp_path / "objs", frames, faces)
    assert [p.name for p in paths] == ["frame_00000.obj", "frame_00001.obj"]
    lines = paths[1].read_text().splitlines()
    assert lines[0] == "v 0.900000 1.000000 1.100000" and lines[-1] == "f 1 2 3"
    with pytest.raises(ValueError, match="needs the mesh faces"):
        save_animation(tmp_path / "objs2", frames, 30)


def test_writes_are_atomic_on_error(tmp_path, frames):
    p = write_pc2(tmp_path / "a.pc2", frames, 30)
    before = p.read_bytes()
    with pytest.raises(ValueError):
        write_pc2(p, np.zeros((0, 3, 3)), 30)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.pc2"]
