"""Stage 0: render and cache both image domains as compact arrays (``runs/crossmodal/renders``).

Files (all ``.npz`` of plain arrays, read with ``allow_pickle=False``):

* ``S_train.npz`` / ``S_val.npz``: ``images (N, H, W, 3) uint8`` and ``controls (N, 13) float32`` --
  each image's mesh is ``Rig(head(s_identity)).pose(controls)`` exactly (13 numbers instead of
  17,016 per mesh);
* ``R_train.npz`` / ``R_test.npz``: ``images (N, H, W, 3)``, ``clip (N,)`` index into ``names``,
  ``frame (N,)``, ``names``, ``subjects``, ``num_frames`` per clip (frames are in clip order);
* ``neutral.npz``: ``S (H, W, 3)`` and ``R (n_identities, H, W, 3)`` with ``R_subjects``;
* ``meta.json``: the config and both looks.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine.fileio import atomic_path, atomic_write
from training.crossmodal.config import RenderConfig
from training.crossmodal.domains import (
    LOOK_R,
    LOOK_S,
    mouth_camera,
    render_look,
    sample_sparse_controls,
)

__all__ = ["build_renders", "load_split", "r_clips"]


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_split(renders: str | Path, name: str) -> dict[str, np.ndarray]:
    """One cached file as a dict of arrays (``name`` = ``S_train``, ``R_test``, ``neutral``, ...)."""
    path = Path(renders) / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: render the domains first "
                                "(python -m training.crossmodal renders --config training/configs/crossmodal_renders.toml)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def r_clips(data_root: str, split: str, subject: int, count: int) -> list:
    """The first ``count`` clips (sorted by name) of one SynthTalk subject in ``split``."""
    from training.config import DataConfig
    from training.corpus import load_corpus
    corpus = load_corpus(DataConfig(root=data_root), splits=[split])
    name = f"synth_{subject:02d}"
    clips = sorted((c for c in corpus.splits[split] if c.subject == name), key=lambda c: c.name)
    if not clips:
        raise ValueError(f"SynthTalk at {data_root} has no {split} clips of {name}")
    return clips[:count]


def _render_r(cfg: RenderConfig, split: str, subjects: list[int], per: int, topology, rng) -> dict[str, np.ndarray]:
    imgs, clip_idx, frame_idx, names, subj, nframes = [], [], [], [], [], []
    for s in subjects:
        clips = r_clips(cfg.data_root, split, s, per)
        cam = mouth_camera(clips[0].template, topology, LOOK_R, cfg.size)
        for c in clips:
            v = np.asarray(c.vertices, dtype=np.float32)
            imgs.append(render_look(v, cam, LOOK_R, cfg.size, rng))
            clip_idx.append(np.full(len(v), len(names), dtype=np.int32))
            frame_idx.append(np.arange(len(v), dtype=np.int32))
            names.append(c.name)
            subj.append(c.subject)
            nframes.append(len(v))
        print(f"  R {split} synth_{s:02d}: {len(clips)} clips", file=sys.stderr, flush=True)
    return {"images": np.concatenate(imgs), "clip": np.concatenate(clip_idx), "frame": np.concatenate(frame_idx),
            "names": np.array(names), "subjects": np.array(subj), "num_frames": np.array(nframes, dtype=np.int32)}


def build_renders(cfg: RenderConfig) -> dict[str, int]:
    """Render everything ``cfg`` asks for into ``cfg.out``; returns the image counts."""
    from training.synthtalk.head import build_head
    from training.synthtalk.rig import Rig

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    head = build_head(cfg.s_identity)
    rig = Rig(head)
    topo = head.topology
    cam_s = mouth_camera(rig.template, topo, LOOK_S, cfg.size)
    counts: dict[str, int] = {}
    parts = set(cfg.parts)
    unknown = parts - {"neutral", "S", "R_test", "R_train"}
    if unknown:
        raise ValueError(f"unknown render parts {sorted(unknown)}; choose from neutral, S, R_test, R_train")
    if "neutral" in parts:      # neutral images (controls at zero) of every identity in either domain
        r_subjects = list(cfg.r_identities) + [cfg.r_test_identity]
        r_neutral = []
        for s in r_subjects:
            h = build_head(s)
            r_neutral.append(render_look(h.vertices[None], mouth_camera(h.vertices, topo, LOOK_R, cfg.size), LOOK_R,
                                         cfg.size, rng)[0])
        s_neutral = render_look(rig.pose(np.zeros((1, 13))), cam_s, LOOK_S, cfg.size, rng)[0]
        _save_npz(out / "neutral.npz", S=s_neutral, R=np.stack(r_neutral),
                  R_subjects=np.array([f"synth_{s:02d}" for s in r_subjects]))
    for split, n in (("S_val", cfg.s_val), ("S_train", cfg.s_train)):
        if "S" not in parts:
            break
        W = sample_sparse_controls(n, rng)
        imgs = np.empty((n, cfg.size, cfg.size, 3), dtype=np.uint8)
        for a in range(0, n, 256):
            imgs[a:a + 256] = render_look(rig.pose(W[a:a + 256]), cam_s, LOOK_S, cfg.size, rng)
        _save_npz(out / f"{split}.npz", images=imgs, controls=W)
        counts[split] = n
        print(f"  {split}: {n} images ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    if "R_test" in parts:
        r_test = _render_r(cfg, "test", [cfg.r_test_identity], cfg.r_test_clips, topo, rng)
        _save_npz(out / "R_test.npz", **r_test)
        counts["R_test"] = len(r_test["images"])
    if "R_train" in parts:
        r_train = _render_r(cfg, "train", list(cfg.r_identities), cfg.r_clips_per_identity, topo, rng)
        _save_npz(out / "R_train.npz", **r_train)
        counts["R_train"] = len(r_train["images"])
    old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").is_file() else {}
    meta = {"config": dataclasses.asdict(cfg), "looks": {"R": dataclasses.asdict(LOOK_R), "S": dataclasses.asdict(LOOK_S)},
            "counts": {**old.get("counts", {}), **counts},
            "seconds": {**old.get("seconds", {}), **{p: round(time.time() - t0, 1) for p in parts}}}
    with atomic_write(out / "meta.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(meta, indent=1))
    return counts
