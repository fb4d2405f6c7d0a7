"""Run configuration: one dataclass per TOML section, command-line overrides, and the round trip
back to TOML (``<out>/config.toml``) so every run documents itself.

Sections: ``[data]``, ``[model]`` (``kind`` + free-form ``params`` for the model class),
``[recipe]`` (free-form options of the method's training recipe, checked by the recipe itself:
:meth:`training.recipes.base.Recipe.configure`), ``[optim]``, ``[train]``, ``[eval]``.  Only what
every method shares lives in the typed sections; anything one method needs goes to ``[recipe]``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "EvalConfig",
           "config_from_dict", "load_config", "apply_overrides", "dump_config"]


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


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
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0               # 0 = off


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 100
    max_steps: int = 0                   # 0 = no cap; otherwise stop after this many optimizer steps
    batch_size: int = 8                  # per rank
    crop_frames: int = 96                # training windows (frames); a batch uses min(crop, shortest clip)
    warmup_epochs: int = 10              # encoder frozen for the first epochs; >= epochs = always frozen
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    num_threads: int = 0                 # 0 = torch default
    deterministic: bool = True
    feature_cache: str = ""              # "" = <out>/features
    pack_seconds: float = 0.0            # >0: encode several short clips per encoder window when caching
    save_half: bool = True               # model.safetensors in fp16 (the shipped format)


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
    recipe: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig}
# Keys that moved out of the shared sections (run directories written before the split still load):
# composite-regional options now live in [recipe]; the test-only kill switch is a Trainer hook.
_MOVED_TO_RECIPE = {("optim", "beta"): "beta", ("train", "style_reference"): "style_reference"}
_DROPPED = {("train", "stop_after_steps")}


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


def _set_option(cfg: Config, section: str, key: str, value: Any) -> None:
    if (section, key) in _MOVED_TO_RECIPE:
        cfg.recipe[_MOVED_TO_RECIPE[(section, key)]] = value
    elif (section, key) not in _DROPPED:
        setattr(getattr(cfg, section), key, _coerce(section, key, _SECTIONS[section], value))


def config_from_dict(d: dict[str, Any]) -> Config:
    cfg = Config()
    for key, value in d.items():
        if key == "name":
            cfg.name = str(value)
            continue
        if key not in _SECTIONS and key != "recipe":
            raise ConfigError(f"unknown config section {key!r}; sections: name, {', '.join(_SECTIONS)}, recipe")
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table")
        if key == "recipe":
            cfg.recipe.update(value)
            continue
        section = getattr(cfg, key)
        for k, v in value.items():
            if key == "model" and k not in ("kind", "params"):
                section.params[k] = v          # [model] foo = 1 is shorthand for params.foo
            elif key == "model" and k == "params":
                section.params.update(v)
            else:
                _set_option(cfg, key, k, v)
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
    """``train.epochs=3``, ``model.params.channels=64``, ``recipe.beta=0``, ``data.root=/x`` (TOML literals)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        value = _parse_value(text.strip())
        if parts == ["name"]:
            cfg.name = str(value)
            continue
        if len(parts) < 2 or (parts[0] not in _SECTIONS and parts[0] != "recipe"):
            raise ConfigError(f"override {item!r}: key must start with one of {', '.join(_SECTIONS)}, recipe")
        if parts[0] == "recipe" or (parts[0] == "model" and parts[1] != "kind"):
            if parts[0] == "recipe":
                target, sub = cfg.recipe, parts[1:]
            else:
                target, sub = cfg.model.params, (parts[2:] if parts[1] == "params" else parts[1:])
            if not sub:
                raise ConfigError(f"override {item!r}: say which parameter")
            for p in sub[:-1]:
                target = target.setdefault(p, {})
            target[sub[-1]] = value
            continue
        if len(parts) != 2:
            raise ConfigError(f"override {item!r}: nested keys only exist under model.params and recipe")
        _set_option(cfg, parts[0], parts[1], value)
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
    """TOML text that :func:`load_config` reads back into an equal config."""
    lines = [f"name = {_toml_value(cfg.name)}", ""]
    for section in ("data", "model", "recipe", "optim", "train", "eval"):
        lines.append(f"[{section}]")
        values = cfg.recipe if section == "recipe" else dataclasses.asdict(getattr(cfg, section))
        for k, v in values.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)
