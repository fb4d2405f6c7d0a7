"""engine.fileio: atomic writes and the restricted pickle reader."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from engine.fileio import UnsafePickleError, atomic_path, atomic_write, safe_load_pickle


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target, "w") as fh:
        fh.write("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("two-partial")
        raise RuntimeError("boom")
    assert target.read_text() == "one"  # old content survives a failed write
    assert sorted(os.listdir(target.parent)) == ["out.txt"]  # no temp left behind


def test_atomic_path_keeps_extension_for_np_save(tmp_path):
    target = tmp_path / "a.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))
    np.testing.assert_array_equal(np.load(target), [0, 1, 2])
    assert os.listdir(tmp_path) == ["a.npy"]


def test_safe_pickle_reads_arrays_and_containers(tmp_path):
    data = {"subj": np.arange(6, dtype=np.float32).reshape(2, 3), "l": [1, (2, "x")], "s": np.float64(2.5)}
    p = tmp_path / "t.pkl"
    p.write_bytes(pickle.dumps(data, protocol=2))
    out = safe_load_pickle(p)
    np.testing.assert_array_equal(out["subj"], data["subj"])
    assert out["l"] == [1, (2, "x")] and out["s"] == 2.5


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_safe_pickle_refuses_code(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"a": _Evil()}))
    with pytest.raises(UnsafePickleError) as info:
        safe_load_pickle(p)
    assert "evil.pkl" in str(info.value) and "system" in str(info.value)


def test_safe_pickle_garbage(tmp_path):
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(pickle.UnpicklingError, match="junk.pkl"):
        safe_load_pickle(p)
