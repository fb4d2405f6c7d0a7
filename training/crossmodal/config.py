"""Typed configs of the three cross-modal stages (renders, regressor, transcoder).

Each stage's TOML file is one table named after the stage (``[renders]``, ``[regressor]``,
``[transcoder]``); unknown keys are an error that lists the known ones, and ``key=value``
overrides on the command line use TOML literals (``steps=20``, ``r_identities=[0]``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import tomllib

__all__ = ["RegressorConfig", "RenderConfig", "TranscoderConfig", "load_stage_config"]


@dataclass
class RenderConfig:
    """What to render (``python -m training.crossmodal renders``)."""

    out: str = "runs/crossmodal/renders"
    data_root: str = "data/synthtalk"
    size: int = 64                       # square RGB mouth crops
    s_identity: int = 10                 # the "CG character" (the shipped default head)
    r_identities: list[int] = field(default_factory=lambda: [0])   # the "filmed" speaker (train clips)
    r_clips_per_identity: int = 50
    r_test_identity: int = 11            # evaluation speaker (test clips, held-out sentences)
    r_test_clips: int = 20
    s_train: int = 6000
    s_val: int = 500
    seed: int = 0
    parts: list[str] = field(default_factory=lambda: ["neutral", "S", "R_test", "R_train"])  # what to (re)render


@dataclass
class RegressorConfig:
    """Face-to-geometry regressor E_G (Sec. 3.3, eq. 6)."""

    out: str = "runs/crossmodal/regressor"
    renders: str = "runs/crossmodal/renders"
    image_size: int = 32                 # train on the renders box-filtered to this size
    width: int = 16                      # ResNet-34 base width (paper: 64)
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    jitter: float = 0.15                 # colour jitter: brightness/contrast/saturation +-, hue via channel mix
    affine_deg: float = 4.0              # random affine: rotation (deg), ...
    affine_shift: float = 0.04           # ... translation (fraction of the image), ...
    affine_scale: float = 0.05           # ... scale +-
    seed: int = 0
    num_threads: int = 1
    log_every: int = 50


@dataclass
class TranscoderConfig:
    """Speech-to-image transcoder (Sec. 3.2, eqs. 1-5)."""

    out: str = "runs/crossmodal/transcoder"
    renders: str = "runs/crossmodal/renders"
    regressor: str = "runs/crossmodal/regressor/regressor.safetensors"
    data_root: str = "data/synthtalk"
    feature_cache: str = "runs/feature_cache"
    pack_seconds: float = 28.0           # must match the cache's packing (the harness's SelfTalk runs use 28)
    image_size: int = 32                 # train on the renders box-filtered to this size
    latent: int = 128                    # m (paper: 512)
    channels: int = 8                    # first conv width of E_V / last of the decoders
    speech_width: int = 128              # transformer width of E_A
    speech_layers: int = 2
    speech_heads: int = 4
    speech_radius: int = 8               # local attention: each frame sees +-radius frames per layer
    steps: int = 600
    batch_clips: int = 4                 # R clips per step ...
    crop_frames: int = 8                 # ... cropped to this many consecutive frames
    batch_s: int = 16                    # S images per step (L_rec on S)
    lr: float = 5e-4
    w_rec: float = 1.0                   # eq. 2 (each domain)
    w_ssim: float = 0.2                  # perceptual stand-in: SSIM term in eq. 2 / L_cs
    w_grad: float = 0.5                  # perceptual stand-in: image-gradient term
    w_cf: float = 1.0                    # eq. 3, features
    w_cs: float = 1.0                    # eq. 3, image space
    w_ccl: float = 1.0                   # eq. 4 (0 = the no-cycle ablation)
    deneutralize: bool = True            # eq. 1 (false = the ablation)
    align_stopgrad: bool = True          # L_cf / L_ccl do not train E_V (false = eqs. 3-4 as printed: codes collapse)
    paired_fraction: float = 0.0         # share of R train clips whose S-identity meshes are also used
    w_mesh: float = 1.0                  # weight of the paired mesh term (only when paired_fraction > 0)
    seed: int = 0
    num_threads: int = 1
    log_every: int = 50


C = TypeVar("C")


def _parse(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_stage_config(cls: type[C], path: str | Path | None, overrides: list[str] | None = None) -> C:
    """``cls`` filled from ``path``'s table (named like the stage) and ``key=value`` overrides."""
    table: dict[str, Any] = {}
    section = {"RenderConfig": "renders"}.get(cls.__name__, cls.__name__.removesuffix("Config").lower())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        with open(path, "rb") as fh:
            d = tomllib.load(fh)
        if section not in d:
            raise ValueError(f"{path} has no [{section}] table (tables: {sorted(d)})")
        table = dict(d[section])
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        k, v = item.split("=", 1)
        table[k.strip()] = _parse(v.strip())
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"unknown [{section}] option(s) {unknown}; known: {sorted(known)}")
    cfg = cls(**table)
    for name in known:
        default = getattr(cls(), name)
        value = getattr(cfg, name)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"[{section}] {name} must be true/false, got {value!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            setattr(cfg, name, float(value))
        elif type(default) in (int, float, str, list) and not isinstance(getattr(cfg, name), type(default)):
            raise ValueError(f"[{section}] {name} must be {type(default).__name__}, got {value!r}")
    return cfg
