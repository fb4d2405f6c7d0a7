"""A thinned view of a SynthTalk corpus for short CPU fine-tunes (no clip is copied).

    python -m training.subset data/synthtalk runs/fit_data --train-every 4 --val-every 8

Writes ``OUT/splits.json`` with every n-th clip of the train and val splits (test unchanged) and
symlinks every other corpus entry of ``SRC`` beside it, so the harness reads ``OUT`` as a corpus.
The default model's fine-tunes (``make default-model``) train on ``runs/fit_data`` made this way:
every 4th train clip still covers all 8 train identities and every voice.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from engine.fileio import atomic_write


def make_subset(src: Path, out: Path, train_every: int = 4, val_every: int = 8) -> Path:
    src, out = Path(src).resolve(), Path(out)
    if not (src / "splits.json").is_file():
        raise FileNotFoundError(f"{src} holds no SynthTalk corpus (no splits.json); run `make data`")
    if train_every < 1 or val_every < 1:
        raise ValueError("--train-every and --val-every must be >= 1")
    splits = json.loads((src / "splits.json").read_text())
    step = {"train": train_every, "val": val_every}
    for name, every in step.items():
        splits[name]["clips"] = list(splits[name]["clips"])[::every]
    out.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        link = out / entry.name
        if entry.name == "splits.json" or link.exists() or link.is_symlink():
            continue
        os.symlink(entry, link)
    with atomic_write(out / "splits.json", "w") as fh:
        json.dump(splits, fh, indent=1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.subset", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--train-every", type=int, default=4)
    ap.add_argument("--val-every", type=int, default=8)
    a = ap.parse_args(argv)
    out = make_subset(a.src, a.out, a.train_every, a.val_every)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
