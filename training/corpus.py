"""Corpus loading for training: clips of each split, read lazily, with per-clip phone timings.

Everything goes through :mod:`engine.dataset` (FaceFormer layout + split configs); this module
only turns its clips into :class:`Clip` records whose vertices and audio are read on demand (a
crop memory-maps only its frames), and maps phone timings to CTC ids (:func:`phone_ids`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.config import ConfigError, DataConfig
from training.synthtalk.text import ARPABET

__all__ = ["Clip", "Corpus", "load_corpus", "PHONE_IDS", "phone_ids"]

#: ARPAbet phone -> CTC id (1..39, alphabetical ARPAbet order); 0 is the CTC blank.
PHONE_IDS: dict[str, int] = {p: i + 1 for i, p in enumerate(ARPABET)}


def phone_ids(phones: list[tuple[str, float, float]], start_s: float, end_s: float) -> list[int]:
    """Ids of the phones that overlap ``[start_s, end_s)``, in time order.

    Stress digits are stripped (``AH0`` -> ``AH``); silences and anything outside ARPAbet
    (``sil``, ``sp``, ``pau``) are dropped: a CTC target lists what is said, not the pauses.
    """
    out = []
    for label, s, e in sorted(phones, key=lambda p: float(p[1])):
        if float(e) <= start_s or float(s) >= end_s:
            continue
        pid = PHONE_IDS.get(str(label).strip().upper().rstrip("012"))
        if pid is not None:
            out.append(pid)
    return out


@dataclass
class Clip:
    """One training/eval sequence; vertices and audio are read on demand (large corpora)."""

    name: str
    subject: str
    num_frames: int
    template: np.ndarray                     # (V, 3)
    load_vertices: Callable[[], np.ndarray]  # -> (T, V, 3) float32 (may be a read-only memmap)
    load_wav: Callable[[], np.ndarray]       # -> mono float32 16 kHz, aligned to the frames
    phones: list | None = None               # [(label, start_s, end_s), ...] when the corpus has timings
    source: str = ""                         # identifies the audio file version (path:size:mtime)

    @property
    def vertices(self) -> np.ndarray:
        return self.load_vertices()


@dataclass
class Corpus:
    topology: Any                   # engine.topology.Topology
    fps: float
    splits: dict[str, list[Clip]]
    card: dict[str, Any]


# mesh capture rate and training rate per corpus kind (VOCASET keeps every 2nd frame)
_KIND_RATES = {"synthtalk": (30.0, 30.0), "custom": (30.0, 30.0), "vocaset": (60.0, 30.0), "biwi": (25.0, 25.0)}


def load_corpus(cfg: DataConfig, splits: list[str] | None = None) -> Corpus:
    """Load the configured corpus through :mod:`engine.dataset` (FaceFormer layout + split configs)."""
    from engine import dataset as ds
    from engine.topology import Topology

    root = Path(cfg.root)
    if cfg.kind not in _KIND_RATES:
        raise ConfigError(f"data.kind must be one of {', '.join(_KIND_RATES)}, got {cfg.kind!r}")
    if not root.is_dir():
        raise ConfigError(
            f"dataset root {root} does not exist; generate SynthTalk with `python -m training.synthtalk` "
            "or point data.root at a FaceFormer-format corpus")
    mesh_fps, fps = _KIND_RATES[cfg.kind]
    if cfg.fps:
        fps = cfg.fps
    split_defs = {"vocaset": ds.VOCASET_SPLITS, "biwi": ds.BIWI_SPLITS}.get(cfg.kind)
    topo_path = Path(cfg.topology) if cfg.topology else root / "topology.npz"
    if not topo_path.is_file():
        raise ConfigError(f"no topology for {root}: expected {topo_path} (set data.topology to the template mesh "
                          "with its .masks.json sidecar, or a topology .npz)")
    topology = Topology.load(topo_path)
    card: dict[str, Any] = {}
    if (root / "dataset.json").is_file():
        try:
            card = json.loads((root / "dataset.json").read_text())
        except json.JSONDecodeError:
            card = {}
    out: dict[str, list[Clip]] = {}
    for split in splits or [cfg.train_split, cfg.val_split, cfg.test_split]:
        if split in out:
            continue
        dcfg = ds.DatasetConfig(root=root, mesh_fps=mesh_fps, fps=fps, splits=split_defs, cache_audio=False,
                                num_vertices=topology.num_vertices,
                                max_clips=cfg.max_clips_per_split or None)
        try:
            data = ds.FaceFormerDataset(dcfg, split)
        except ds.DatasetError as exc:
            if split == cfg.train_split:
                raise
            print(f"warning: split {split!r} unavailable: {exc}", file=sys.stderr)
            out[split] = []
            continue
        out[split] = [_clip_from_dataset(data, i, mesh_fps, fps) for i in range(len(data))]
    return Corpus(topology=topology, fps=float(fps), splits=out, card=card)


def _clip_from_dataset(data: Any, i: int, mesh_fps: float, fps: float) -> Clip:
    from engine.dataset import load_phones
    c = data.clips[i]
    if mesh_fps == fps:  # memory-map: a crop reads only its frames
        def load_vertices(path=c.vertices, n=c.frames) -> np.ndarray:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return arr.reshape(arr.shape[0], -1, 3)[:n]
    else:
        def load_vertices(data=data, i=i) -> np.ndarray:
            return data.vertices(i)
    phones = load_phones(c.phones) if c.phones is not None else None
    st = Path(c.wav).stat()
    return Clip(name=c.name, subject=c.subject, num_frames=int(c.frames),
                template=np.asarray(data.templates[c.subject], dtype=np.float32),
                load_vertices=load_vertices, load_wav=lambda data=data, i=i: data.audio(i), phones=phones,
                source=f"{Path(c.wav).name}:{st.st_size}:{st.st_mtime_ns}:{c.audio_samples}")
