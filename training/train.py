"""Training harness shared by every Parley model.

    python -m training.train --config training/configs/synthtalk_default.toml [--out runs/NAME]
                             [--resume] [section.key=value ...]

What it guarantees, and why:

* **One dataclass config** read from TOML (``[data]``, ``[model]``, ``[optim]``, ``[train]``,
  ``[eval]``), with ``section.key=value`` overrides on the command line (values parsed as TOML
  literals), written back to ``<out>/config.toml`` so every run documents itself.
* **Reproducible.** Everything random is derived from ``train.seed``: the data order of epoch
  ``e`` is a permutation drawn from ``seed + e``; the crop of clip ``i`` in epoch ``e`` from
  ``(seed, e, i)``.  Nothing depends on how far a previous process got, which is what makes
  ``--resume`` exact.
* **Exact resume.** Every ``checkpoint_every`` steps (and at the end) the trainer writes
  ``trainer_state.safetensors`` (model + optimizer tensors, RNG states) and ``trainer_state.json``
  (step, epoch, position in the epoch, optimizer hyper-parameters) atomically -- no pickle
  anywhere.  ``--resume`` reloads them, skips the batches already seen in the current epoch and
  continues: N steps + kill + resume N steps gives bit-identical weights to 2N steps straight.
* **Cached encoder features.** While the audio encoder is frozen its output never changes, so it
  is computed once per clip and stored as safetensors under
  ``<feature_cache>/<encoder spec hash>/<clip>.safetensors``.
* **Distributed** through ``torchrun`` (gloo on CPU, nccl on CUDA): each rank takes its shard of
  the epoch permutation (as ``DistributedSampler`` does), gradients are averaged by DDP, only rank
  0 writes files.
* **Artifacts**: ``log.csv``, ``loss.png``, ``last.safetensors`` (fp32, loadable by
  :class:`engine.inference.Animator`), ``model.safetensors`` (fp16 when ``train.save_half``),
  ``metrics.json``, ``report.md`` and an error heatmap (:mod:`training.evaluate`).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from engine.fileio import atomic_path, atomic_write

__all__ = [
    "Config", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "EvalConfig",
    "load_config", "apply_overrides", "Trainer", "main",
]


# ============================================================================ config
@dataclass
class DataConfig:
    """Which corpus.  ``kind``: synthtalk | vocaset | biwi | custom (all FaceFormer layout).

    ``max_clips_per_split`` trims each split (tests, smoke runs).  ``topology`` points to a
    Topology file (obj+masks / npz) when the corpus does not ship ``topology.npz``.
    """

    kind: str = "synthtalk"
    root: str = "data/synthtalk"
    topology: str = ""
    fps: float = 0.0                     # 0 = the corpus's own rate
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    max_clips_per_split: int = 0


@dataclass
class ModelConfig:
    kind: str = "composite_regional"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0            # the paper: weight decay fights the l1 regulariser
    beta: float = 1e-4                   # eq. 4 sparsity weight
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0               # 0 = off


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 100
    max_steps: int = 0                   # 0 = no cap; otherwise stop after this many optimizer steps
    batch_size: int = 8                  # per rank
    crop_frames: int = 96                # training windows (frames); a batch uses min(crop, shortest clip)
    warmup_epochs: int = 10              # encoder frozen for the first epochs (paper: 10); >= epochs = always frozen
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    num_threads: int = 0                 # 0 = torch default
    deterministic: bool = True
    feature_cache: str = ""              # "" = <out>/features
    pack_seconds: float = 0.0            # >0: encode several short clips per encoder window when caching
    save_half: bool = True               # model.safetensors in fp16 (the shipped format)
    stop_after_steps: int = 0            # testing aid: exit abruptly after this step's checkpoint (simulates a kill)
    style_reference: str = "self"        # "self": the clip's own motion (authors' code); "subject": another clip
                                         # of the same speaker; "none": neutral style only


@dataclass
class EvalConfig:
    splits: list[str] = field(default_factory=lambda: ["val", "test"])
    max_clips: int = 0                   # 0 = all
    baselines: bool = True
    heatmap: bool = True


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


def _coerce(section: str, key: str, cls: type, value: Any) -> Any:
    fld = {f.name: f for f in dataclasses.fields(cls)}.get(key)
    if fld is None:
        known = ", ".join(f.name for f in dataclasses.fields(cls))
        raise ConfigError(f"unknown option [{section}] {key!r}; known options: {known}")
    default = getattr(cls(), key)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be true/false, got {value!r}")
        return value
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be an integer, got {value!r}")
        return value
    if isinstance(default, tuple):
        return tuple(value)
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"[{section}] {key} must be a list, got {value!r} (quote strings inside: key=[\"a\"])")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"[{section}] {key} must be a string, got {value!r}")
    return value


def config_from_dict(d: dict[str, Any]) -> Config:
    cfg = Config()
    for key, value in d.items():
        if key == "name":
            cfg.name = str(value)
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"unknown config section {key!r}; sections: name, {', '.join(_SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table")
        cls = _SECTIONS[key]
        section = getattr(cfg, key)
        for k, v in value.items():
            if key == "model" and k not in ("kind", "params"):
                section.params[k] = v          # [model] foo = 1 is shorthand for params.foo
                continue
            setattr(section, k, _coerce(key, k, cls, v))
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Read a TOML config and apply ``section.key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path, "rb") as fh:
        d = tomllib.load(fh)
    cfg = config_from_dict(d)
    if "name" not in d:
        cfg.name = path.stem
    return apply_overrides(cfg, overrides or [])


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """``train.epochs=3``, ``model.params.channels=64``, ``data.root=/x`` (values are TOML literals)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        value = _parse_value(text.strip())
        if parts == ["name"]:
            cfg.name = str(value)
            continue
        if len(parts) < 2 or parts[0] not in _SECTIONS:
            raise ConfigError(f"override {item!r}: key must start with one of {', '.join(_SECTIONS)}")
        section = getattr(cfg, parts[0])
        if parts[0] == "model" and (parts[1] == "params" or parts[1] != "kind"):
            sub = parts[2:] if parts[1] == "params" else parts[1:]
            if not sub:
                raise ConfigError(f"override {item!r}: say which model parameter")
            target = section.params
            for p in sub[:-1]:
                target = target.setdefault(p, {})
            target[sub[-1]] = value
            continue
        if len(parts) != 2:
            raise ConfigError(f"override {item!r}: nested keys only exist under model.params")
        setattr(section, parts[1], _coerce(parts[0], parts[1], _SECTIONS[parts[0]], value))
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    if v is None:
        return '""'
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_config(cfg: Config) -> str:
    lines = [f"name = {_toml_value(cfg.name)}", ""]
    for section in _SECTIONS:
        lines.append(f"[{section}]")
        for k, v in dataclasses.asdict(getattr(cfg, section)).items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


# ============================================================================ data
@dataclass
class Clip:
    """One training/eval sequence; vertices and audio are read on demand (large corpora)."""

    name: str
    subject: str
    num_frames: int
    template: np.ndarray                     # (V, 3)
    load_vertices: Callable[[], np.ndarray]  # -> (T, V, 3) float32 (may be a read-only memmap)
    load_wav: Callable[[], np.ndarray]       # -> mono float32 16 kHz, aligned to the frames
    phones: list | None = None
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


# ============================================================================ features
def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class FeatureCache:
    """Frozen-encoder features per clip, on disk as safetensors (no pickle).

    Keyed by clip name inside a folder named by the encoder spec's hash, so changing the encoder
    never reuses stale features.  ``pack_seconds > 0`` encodes several short clips in one
    encoder window (separated by 0.5 s of silence) -- whisper always runs a 30 s window, so this
    is up to ~10x cheaper on CPU for 2-3 s clips, at the price of the window holding other
    speech around each clip (the same situation as long-audio inference).
    """

    GAP_SECONDS = 0.5

    def __init__(self, root: Path, specs: list[dict[str, Any]], pack_seconds: float = 0.0) -> None:
        self.root = Path(root)
        self.specs = specs
        self.pack_seconds = float(pack_seconds)
        self._encoders: dict[str, nn.Module] = {}
        self._mem: dict[tuple[str, str], Tensor] = {}

    def _dir(self, spec: dict[str, Any]) -> Path:
        tag = spec_hash({**spec, "pack_seconds": self.pack_seconds})
        return self.root / f"{spec.get('kind', 'enc')}-{tag}"

    def encoder(self, spec: dict[str, Any]) -> nn.Module:
        key = spec_hash(spec)
        if key not in self._encoders:
            from engine.encoders import build_encoder
            self._encoders[key] = build_encoder(spec).eval()
        return self._encoders[key]

    def path(self, spec: dict[str, Any], clip: Clip) -> Path:
        return self._dir(spec) / f"{clip.name}.safetensors"

    def ensure(self, clips: list[Clip], progress: Callable[[str], None] | None = None) -> None:
        """Compute and store the features of every clip that has none yet."""
        from safetensors.torch import save_file

        for spec in self.specs:
            todo = [c for c in clips if not self._fresh(spec, c)]
            if not todo:
                continue
            self._dir(spec).mkdir(parents=True, exist_ok=True)
            enc = self.encoder(spec)
            groups = self._pack(todo) if self.pack_seconds > 0 else [[c] for c in todo]
            try:
                from tqdm import tqdm
                it = tqdm(groups, desc=f"encoding {spec.get('kind')}", unit="window", file=sys.stderr,
                          mininterval=0.5 if sys.stderr.isatty() else 10.0)
            except ImportError:  # pragma: no cover
                it = groups
            for group in it:
                wavs = [c.load_wav() for c in group]
                feats = self._encode_group(enc, wavs)
                for c, f in zip(group, feats):
                    with atomic_path(self.path(spec, c)) as tmp:
                        save_file({"features": f.contiguous()}, str(tmp),
                                  metadata={"clip": c.name, "spec": json.dumps(spec), "source": c.source})

    def _fresh(self, spec: dict[str, Any], clip: Clip) -> bool:
        """A cached file exists and was computed from this version of the clip's audio."""
        p = self.path(spec, clip)
        if not p.is_file():
            return False
        from safetensors import safe_open
        try:
            with safe_open(str(p), "pt") as fh:
                return (fh.metadata() or {}).get("source", "") == clip.source
        except Exception:  # damaged file: recompute
            return False

    def _pack(self, clips: list[Clip]) -> list[list[Clip]]:
        groups: list[list[Clip]] = []
        cur: list[Clip] = []
        total = 0.0
        for c in clips:
            secs = c.num_frames / 30.0 + self.GAP_SECONDS  # frame rate only sizes the groups
            if cur and total + secs > self.pack_seconds:
                groups.append(cur)
                cur, total = [], 0.0
            cur.append(c)
            total += secs
        if cur:
            groups.append(cur)
        return groups

    def _encode_group(self, enc: nn.Module, wavs: list[np.ndarray]) -> list[Tensor]:
        if len(wavs) == 1:
            return [enc.encode(wavs[0]).float()]
        spf = 320
        gap = int(self.GAP_SECONDS * 16000) // spf * spf
        pieces, starts = [], []
        pos = 0
        for w in wavs:
            w = np.pad(w, (0, (-len(w)) % spf))        # keep every clip on the 20 ms grid
            starts.append((pos // spf, len(w) // spf))
            pieces += [w, np.zeros(gap, np.float32)]
            pos += len(w) + gap
        feats = enc.encode(np.concatenate(pieces)).float()
        out = []
        for w, (f0, _) in zip(wavs, starts):
            out.append(feats[f0: f0 + len(w) // spf].clone())
        return out

    def load(self, clip: Clip, num_frames: int) -> Tensor:
        """All encoders' features for ``clip`` resampled to ``num_frames`` and concatenated: (T, C)."""
        from safetensors.torch import load_file
        from engine.encoders import interpolate_features

        parts = []
        for spec in self.specs:
            key = (spec_hash(spec), clip.name)
            f = self._mem.get(key)
            if f is None:
                f = load_file(str(self.path(spec, clip)))["features"]
                self._mem[key] = f
            parts.append(interpolate_features(f, num_frames))
        return torch.cat(parts, dim=1)


# ============================================================================ distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, dist: Dist | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but torch sees no CUDA GPU; use device='cpu' or 'auto'")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    if name != "cpu":
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


# ============================================================================ state (no pickle)
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if not key.startswith("optim."):
            continue
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta.get("scalars", {}).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _py_state_to_json(random.getstate()),
    }
    return tensors, meta


def _py_state_to_json(state: Any) -> Any:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


# ============================================================================ model registry glue
def build_model_for(cfg: Config, topology: Any, feature_dim: int) -> nn.Module:
    from engine.checkpoint import model_class
    params = dict(cfg.model.params)
    params.setdefault("feature_dim", feature_dim)
    return model_class(cfg.model.kind).from_config(params, topology)


def encoder_specs(cfg: Config) -> list[dict[str, Any]]:
    from engine.encoders import EncoderSpec
    raw = cfg.model.params.get("encoders") or [{"kind": "whisper"}]
    return [EncoderSpec.from_dict(dict(s)).to_dict() for s in raw]


def encoder_dim(spec: dict[str, Any]) -> int:
    """Width of an encoder's features without building it when it is one we know."""
    if spec["kind"] == "whisper" and spec.get("name_or_path") is None:
        return 384
    if spec["kind"] == "hama":
        return 191
    from engine.encoders import build_encoder
    return int(build_encoder(spec).dim)


# ============================================================================ trainer
class Trainer:
    """Runs one config to completion (or to ``stop_after_steps``), writing into ``out``."""

    def __init__(self, cfg: Config, out: str | os.PathLike, resume: bool = False, corpus: Corpus | None = None,
                 encoder_factory: Callable[[dict[str, Any]], nn.Module] | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        t = cfg.train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.device = pick_device(t.device)
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.corpus = corpus if corpus is not None else load_corpus(cfg.data)
        self.train_clips = self.corpus.splits.get(cfg.data.train_split, [])
        if not self.train_clips:
            raise ConfigError(f"split {cfg.data.train_split!r} of {cfg.data.root} has no clips")
        self.specs = encoder_specs(cfg)
        self.cache = FeatureCache(Path(t.feature_cache) if t.feature_cache else self.out / "features",
                                  self.specs, t.pack_seconds)
        if encoder_factory is not None:  # tests inject tiny encoders
            for s in self.specs:
                self.cache._encoders[spec_hash(s)] = encoder_factory(s)
        self.feature_dim = sum(int(self.cache._encoders[spec_hash(s)].dim) if spec_hash(s) in self.cache._encoders
                               else encoder_dim(s) for s in self.specs)
        # The encoder becomes part of the model (and of its checkpoint) only when it will be
        # unfrozen at some point; a run that keeps it frozen ships a small checkpoint.
        self.finetune = t.warmup_epochs < t.epochs
        torch.manual_seed(t.seed)
        np.random.seed(t.seed)
        random.seed(t.seed)
        params = dict(cfg.model.params)
        params["encoders"] = self.specs
        params["feature_dim"] = self.feature_dim
        params["encoder_in_model"] = False
        if cfg.model.kind == "composite_regional":
            params.setdefault("norm", "layer")
        cfg.model.params = params
        self.model = build_model_for(cfg, self.corpus.topology, self.feature_dim).to(self.device)
        self._set_normalisation()
        if self.finetune:
            encs = [self.cache.encoder(s) for s in self.specs]
            self.model.attach_encoders(encs)
            cfg.model.params["encoder_in_model"] = True
            self.model.to(self.device)
        self.set_encoder_trainable(False)
        self.opt = torch.optim.Adam([p for p in self.model.parameters()], lr=cfg.optim.lr,
                                    betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
        for p in self._encoder_params():
            p.requires_grad_(False)
        self.ddp: nn.Module = self.model
        if self.dist.world > 1:
            self._wrap_ddp()
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.log_rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    def _encoder_params(self) -> list[nn.Parameter]:
        enc = getattr(self.model, "encoders", None)
        return list(enc.parameters()) if enc is not None else []

    def set_encoder_trainable(self, flag: bool) -> None:
        params = self._encoder_params()
        changed = any(p.requires_grad != flag for p in params)
        for p in params:
            p.requires_grad_(flag)
        enc = getattr(self.model, "encoders", None)
        if enc is not None:
            enc.train(flag)
        if changed and self.dist.world > 1 and hasattr(self, "ddp"):
            self._wrap_ddp()  # DDP only syncs parameters that required grad when it was built

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP
        self.ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                       find_unused_parameters=self.finetune)

    def encoder_frozen(self) -> bool:
        return not self.finetune or self.epoch < self.cfg.train.warmup_epochs

    @torch.no_grad()
    def _set_normalisation(self) -> None:
        temps = np.stack([c.template for c in self.train_clips])
        coord_mean = temps.reshape(-1, 3).mean(0)
        coord_scale = float(temps.reshape(len(temps), -1, 3).std(axis=1).mean())
        if hasattr(self.model, "set_normalisation"):
            self.model.set_normalisation(torch.from_numpy(coord_mean), coord_scale)

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's clip indices for ``epoch`` (DistributedSampler semantics, seeded by epoch)."""
        n = len(self.train_clips)
        g = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        w = self.dist.world
        total = math.ceil(n / w) * w
        perm = perm + perm[: total - n]
        return perm[self.dist.rank: total: w]

    def batches(self, epoch: int) -> list[list[int]]:
        order = self.epoch_order(epoch)
        bs = self.cfg.train.batch_size
        nb = len(order) // bs if len(order) >= bs else 1
        return [order[i * bs:(i + 1) * bs] for i in range(nb)]

    def make_batch(self, epoch: int, idx: list[int]) -> dict[str, Tensor]:
        clips = [self.train_clips[i] for i in idx]
        crop = max(1, min([self.cfg.train.crop_frames] + [c.num_frames for c in clips]))
        feats, verts, temps, wavs = [], [], [], []
        fps = self.corpus.fps
        for i, c in zip(idx, clips):
            rng = np.random.default_rng([self.cfg.train.seed, epoch, i])
            start = int(rng.integers(0, c.num_frames - crop + 1))
            verts.append(torch.from_numpy(np.array(c.vertices[start:start + crop], dtype=np.float32)))
            temps.append(torch.from_numpy(np.asarray(c.template, dtype=np.float32)))
            if self.encoder_frozen():
                feats.append(self.cache.load(c, c.num_frames)[start:start + crop])
            else:
                wav = c.load_wav()
                s0 = int(round(start / fps * 16000)) // 320 * 320
                s1 = s0 + max(320, int(round(crop / fps * 16000)))
                wavs.append(torch.from_numpy(np.pad(wav[s0:s1], (0, max(0, s1 - len(wav))))))
        batch = {"vertices": torch.stack(verts), "template": torch.stack(temps)}
        if self.cfg.train.style_reference == "subject":
            batch["reference"] = self._subject_references(epoch, idx)
        if feats:
            batch["features"] = torch.stack(feats)
        else:
            batch["wav"] = torch.stack(wavs)
            batch["crop"] = torch.tensor(crop)
        return batch

    def _subject_references(self, epoch: int, idx: list[int]) -> Tensor:
        """Per batch item, a crop of *another* clip of the same subject (seeded): the style then has to
        describe the speaker, not leak the target clip's own motion statistics."""
        if not hasattr(self, "_by_subject"):
            self._by_subject: dict[str, list[int]] = {}
            for j, c in enumerate(self.train_clips):
                self._by_subject.setdefault(c.subject, []).append(j)
        picks = []
        for i in idx:
            rng = np.random.default_rng([self.cfg.train.seed, epoch, i, 7])
            pool = [j for j in self._by_subject[self.train_clips[i].subject] if j != i] or [i]
            picks.append(self.train_clips[int(pool[rng.integers(len(pool))])])
        n = max(1, min([self.cfg.train.crop_frames] + [c.num_frames for c in picks]))
        refs = []
        for i, c in zip(idx, picks):
            rng = np.random.default_rng([self.cfg.train.seed, epoch, i, 8])
            s = int(rng.integers(0, c.num_frames - n + 1))
            refs.append(torch.from_numpy(np.array(c.vertices[s:s + n], dtype=np.float32)))
        return torch.stack(refs)

    @torch.no_grad()
    def clip_features(self, clip: Clip) -> Tensor:
        """Whole-clip features ``(T, C)`` for evaluation: the cache while the encoder is the
        pretrained one, the model's own (fine-tuned) encoders otherwise."""
        encs = getattr(self.model, "encoders", None)
        if encs is None or self.encoder_frozen():
            return self.cache.load(clip, clip.num_frames)
        from engine.encoders import interpolate_features
        wav = clip.load_wav()
        parts = [interpolate_features(enc.encode(wav), clip.num_frames) for enc in encs]
        return torch.cat(parts, dim=1)

    def live_features(self, wav: Tensor, crop: int) -> Tensor:
        from engine.encoders import interpolate_features
        parts = [interpolate_features(enc(wav), crop) for enc in self.model.encoders]
        return torch.cat(parts, dim=2)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        from engine.losses import composite_regional_loss
        self.ddp.train()
        if self.encoder_frozen() and getattr(self.model, "encoders", None) is not None:
            self.model.encoders.eval()
        verts = batch["vertices"].to(self.device)
        temp = batch["template"].to(self.device)
        if "features" in batch:
            feats = batch["features"].to(self.device)
        else:
            feats = self.live_features(batch["wav"].to(self.device), int(batch["crop"]))
        mode = self.cfg.train.style_reference
        if mode == "self":
            reference = verts
        elif mode == "subject":
            reference = batch["reference"].to(self.device)
        elif mode == "none":
            reference = None
        else:
            raise ConfigError(f"train.style_reference must be self, subject or none, got {mode!r}")
        pred = self.ddp(feats, template=temp, reference=reference)
        terms = composite_regional_loss(self.model, pred, verts, beta=self.cfg.optim.beta)
        self.opt.zero_grad(set_to_none=True)
        terms.total.backward()
        if self.cfg.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        return terms.as_floats()

    # ------------------------------------------------------------------ persistence
    def save_state(self) -> None:
        if not self.dist.is_main:
            return
        from safetensors.torch import save_file
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        opt_t, opt_meta = optimizer_to_tensors(self.opt)
        rng_t, rng_meta = rng_state()
        tensors.update(opt_t)
        tensors.update(rng_t)
        meta = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "optimizer": opt_meta, "rng": rng_meta, "config": self.cfg.to_dict(),
                "log_rows": len(self.log_rows)}
        self.out.mkdir(parents=True, exist_ok=True)
        # tensors first, then the json that points at them: a kill between the two leaves the
        # previous json, which refers to a step that the tensors file no longer holds -> we
        # store the step in both and refuse a mismatch on resume.
        with atomic_path(self.out / "trainer_state.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"step": str(self.step)})
        with atomic_write(self.out / "trainer_state.json", "w") as fh:
            json.dump(meta, fh, indent=1)
        self.write_log()
        self.save_checkpoint(self.out / "last.safetensors", half=False)

    def load_state(self) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file
        st_path = self.out / "trainer_state.safetensors"
        js_path = self.out / "trainer_state.json"
        if not st_path.is_file() or not js_path.is_file():
            raise ConfigError(f"--resume: no trainer state in {self.out} (expected trainer_state.safetensors/.json)")
        meta = json.loads(js_path.read_text())
        with safe_open(str(st_path), "pt") as fh:
            step_in_tensors = int(fh.metadata().get("step", -1))
        if step_in_tensors != meta["step"]:
            raise ConfigError(f"--resume: trainer_state files disagree (step {step_in_tensors} vs {meta['step']}); "
                              "the run was killed while saving -- delete trainer_state.json to restart from scratch")
        tensors = load_file(str(st_path))
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        if not self.encoder_frozen():
            self.set_encoder_trainable(True)
        msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(msd)
        optimizer_from_tensors(self.opt, tensors, meta["optimizer"])
        set_rng_state(tensors, meta["rng"])
        self.log_rows = self.read_log()[: meta["log_rows"]]

    def checkpoint_metadata(self) -> dict[str, Any]:
        card = {"dataset": self.cfg.data.kind, "root": self.cfg.data.root,
                "train_clips": len(self.train_clips),
                "train_subjects": sorted({c.subject for c in self.train_clips}),
                "steps": self.step, "epochs": self.epoch, "config_name": self.cfg.name,
                "command": "python -m training.train --config <config.toml in this run dir>"}
        card.update({k: v for k, v in self.corpus.card.items() if isinstance(v, (str, int, float))})
        return card

    def save_checkpoint(self, path: Path, half: bool, metrics: dict | None = None) -> None:
        from engine.checkpoint import save_checkpoint
        save_checkpoint(path, self.model, config=self.model.checkpoint_config(), topology=self.corpus.topology,
                        encoder=self.specs[0], fps=self.corpus.fps, data_card=self.checkpoint_metadata(),
                        metrics=metrics, half=half)

    # ------------------------------------------------------------------ logging
    def write_log(self) -> None:
        if not self.log_rows:
            return
        keys = list(self.log_rows[0].keys())
        with atomic_write(self.out / "log.csv", "w") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(self.log_rows)
        plot_loss(self.log_rows, self.out / "loss.png")

    def read_log(self) -> list[dict[str, Any]]:
        p = self.out / "log.csv"
        if not p.is_file():
            return []
        with open(p, newline="") as fh:
            return [dict(r) for r in csv.DictReader(fh)]

    # ------------------------------------------------------------------ main loop
    def total_steps(self) -> int:
        per_epoch = len(self.batches(0))
        total = per_epoch * self.cfg.train.epochs
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    def fit(self) -> None:
        t = self.cfg.train
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.out / "config.toml", "w") as fh:
                fh.write(dump_config(self.cfg))
        if self.resume:
            self.load_state()
        # Features for every clip the run touches (train + eval), once, on rank 0.
        if self.dist.is_main:
            needed = list(self.train_clips)
            for s in self.cfg.eval.splits:
                needed += self.eval_clips(s)
            self.cache.ensure(needed)
        self.barrier()
        total = self.total_steps()
        bar = None
        if self.dist.is_main:
            try:
                from tqdm import tqdm
                bar = tqdm(total=total, initial=self.step, desc=self.cfg.name, unit="step", file=sys.stderr,
                           mininterval=0.5 if sys.stderr.isatty() else 10.0)
            except ImportError:  # pragma: no cover
                bar = None
        t0 = time.time()
        acc: dict[str, list[float]] = {}
        plan_epoch, plan = -1, []
        while self.step < total and self.epoch < t.epochs:
            if plan_epoch != self.epoch:
                if not self.encoder_frozen():
                    self.set_encoder_trainable(True)
                plan_epoch, plan = self.epoch, self.batches(self.epoch)
            batch = self.make_batch(self.epoch, plan[self.batch_in_epoch])
            logs = self.train_step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            if self.batch_in_epoch >= len(plan):
                self.epoch += 1
                self.batch_in_epoch = 0
            for k, v in logs.items():
                acc.setdefault(k, []).append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", epoch=plan_epoch, refresh=False)  # honour mininterval
            if self.step % t.log_every == 0 or self.step == total:
                row = {"step": self.step, "epoch": plan_epoch, "time_s": round(time.time() - t0, 3),
                       **{k: float(np.mean(v)) for k, v in acc.items()}}
                self.log_rows.append(row)
                acc = {}
            if self.step % t.checkpoint_every == 0 or self.step == total:
                self.save_state()
                if t.stop_after_steps and self.step >= t.stop_after_steps:
                    self.barrier()
                    if bar is not None:
                        bar.close()
                    sys.stderr.flush()
                    os._exit(75)  # simulate a kill right after a checkpoint (tests)
        if bar is not None:
            bar.close()
        self.barrier()
        if self.dist.world > 1:
            self._check_ranks_in_sync()

    @torch.no_grad()
    def _check_ranks_in_sync(self) -> None:
        """Largest weight difference between any rank and rank 0 (0.0 when DDP kept them in sync)."""
        import torch.distributed as tdist
        flat = torch.cat([p.detach().reshape(-1).float() for p in self.model.parameters()])
        ref = flat.clone()
        tdist.broadcast(ref, src=0)
        diff = (flat - ref).abs().max().reshape(1)
        tdist.all_reduce(diff, op=tdist.ReduceOp.MAX)
        if self.dist.is_main:
            with atomic_write(self.out / "ddp_check.json", "w") as fh:
                json.dump({"world": self.dist.world, "max_weight_diff": float(diff)}, fh)

    def barrier(self) -> None:
        if self.dist.world > 1:
            import torch.distributed as tdist
            tdist.barrier()

    def eval_clips(self, split: str) -> list[Clip]:
        clips = self.corpus.splits.get(split, [])
        if self.cfg.eval.max_clips:
            clips = clips[: self.cfg.eval.max_clips]
        return clips

    # ------------------------------------------------------------------ after training
    @torch.no_grad()
    def compute_neutral_style(self, max_frames: int = 600) -> None:
        """Neutral style = mean over training clips of ``[mu(Z_face), sigma(Z_face)]`` (Sec. 4.2)."""
        if not hasattr(self.model, "style_statistics"):
            return
        self.model.eval()
        stats = []
        for c in self.train_clips:
            ref = torch.from_numpy(np.array(c.vertices[:max_frames], dtype=np.float32)).unsqueeze(0).to(self.device)
            stats.append(self.model.style_statistics(ref)[0].cpu())
        self.model.neutral_style.copy_(torch.stack(stats).mean(0).to(self.model.neutral_style.device))

    def finish(self) -> dict[str, Any]:
        """Neutral style, evaluation, final checkpoints (rank 0)."""
        if not self.dist.is_main:
            return {}
        self.compute_neutral_style()
        from training.evaluate import evaluate_run
        results = evaluate_run(self)
        self.save_checkpoint(self.out / "last.safetensors", half=False, metrics=results.get("summary"))
        self.save_checkpoint(self.out / "model.safetensors", half=self.cfg.train.save_half, metrics=results.get("summary"))
        return results


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss curve PNG (log scale) -- a glance tells whether the run is converging."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    steps = [float(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key in ("loss", "l2"):
        if rows and key in rows[0]:
            ax.plot(steps, [float(r[key]) for r in rows], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="TOML config (training/configs/*.toml)")
    ap.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    ap.add_argument("--resume", action="store_true", help="continue a killed run in --out exactly where it stopped")
    ap.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    ap.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=3")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, tomllib.TOMLDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{cfg.name}")
    if not args.resume and (out / "trainer_state.json").exists():
        print(f"error: {out} already holds a run; pass --resume to continue it or choose another --out", file=sys.stderr)
        return 2
    trainer = Trainer(cfg, out, resume=args.resume)
    trainer.fit()
    if not args.no_eval:
        res = trainer.finish()
        if trainer.dist.is_main and res.get("summary"):
            print(json.dumps(res["summary"], indent=1))
    elif trainer.dist.is_main:
        trainer.compute_neutral_style()
        trainer.save_checkpoint(out / "model.safetensors", half=cfg.train.save_half)
    if trainer.dist.world > 1:
        import torch.distributed as tdist
        tdist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
