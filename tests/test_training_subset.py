"""training.subset: every n-th train/val clip, test untouched, the rest of the corpus linked."""
from __future__ import annotations

import json

import pytest

from training.subset import make_subset


def test_subset_thins_train_and_val_and_links_the_rest(tmp_path):
    src = tmp_path / "corpus"
    (src / "wav").mkdir(parents=True)
    (src / "wav" / "a.wav").write_bytes(b"x")
    splits = {s: {"subjects": [s], "clips": [f"{s}_{i}" for i in range(n)]}
              for s, n in (("train", 10), ("val", 9), ("test", 3))}
    (src / "splits.json").write_text(json.dumps(splits))
    out = make_subset(src, tmp_path / "sub", train_every=4, val_every=8)
    got = json.loads((out / "splits.json").read_text())
    assert got["train"]["clips"] == ["train_0", "train_4", "train_8"]
    assert got["val"]["clips"] == ["val_0", "val_8"]
    assert got["test"] == splits["test"] and got["train"]["subjects"] == ["train"]
    assert (out / "wav").is_symlink() and (out / "wav" / "a.wav").read_bytes() == b"x"
    make_subset(src, tmp_path / "sub", train_every=4, val_every=8)   # again: idempotent
    with pytest.raises(FileNotFoundError, match="make data"):
        make_subset(tmp_path / "nothing", tmp_path / "x")
