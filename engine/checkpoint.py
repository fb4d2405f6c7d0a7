"""Self-describing model checkpoints: one ``.safetensors`` file, never a pickle.

Layout
* tensors: the model's state dict under ``model.<name>`` and the topology under
  ``topology.vertices``, ``topology.faces``, ``topology.mask.<region>``;
* safetensors metadata ``{"parley": "<json>"}`` with format_version, kind, config, topology
  (name, fps, fingerprint, mask names), encoder spec, fps, data_card, metrics, created.

Why: a checkpoint must be safe to open (``torch.load`` on a stranger's ``.pt`` can run
code), must say which mesh it animates (so a wrong mesh is refused with a clear message),
and must say how it was trained (data card, metrics) so ``python -m engine info`` and the
Blender add-on can show it without importing the model code.

Model classes register themselves with :func:`register_model`; :func:`build_model` turns a
loaded :class:`Checkpoint` back into a ready ``nn.Module``.

Shipped checkpoints are ``engine/assets/<name>.safetensors`` and are selected by name
(``--checkpoint selftalk``); :func:`shipped_checkpoints` lists them, :data:`ALIASES` maps other
names onto them (``composite_regional`` is the ``default`` model while no file of its own ships).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.fileio import atomic_path
from engine.topology import Topology

__all__ = [
    "ALIASES",
    "ASSETS",
    "DEFAULT_CHECKPOINT",
    "FORMAT_VERSION",
    "MODEL_MODULES",
    "Checkpoint",
    "CheckpointError",
    "build_model",
    "load_checkpoint",
    "model_class",
    "read_metadata",
    "register_model",
    "registered_kinds",
    "resolve_checkpoint_path",
    "save_checkpoint",
    "shipped_checkpoints",
]

FORMAT_VERSION = 1
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "default.safetensors"
#: names that select another shipped checkpoint when no file of their own exists
ALIASES = {"composite_regional": "default"}
# Modules imported on demand so that build_model finds kinds whose module was not imported yet:
# ``engine.models.<kind>`` is tried first (one file per method), then these.
MODEL_MODULES = ["engine.models.composite_regional", "engine.models.selftalk", "engine.models.faceformer",
                 "engine.models.crossmodal"]

_REGISTRY: dict[str, type] = {}


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why and what to do."""


def register_model(kind: str) -> Callable[[type], type]:
    """Class decorator: ``@register_model("composite_regional") class Net(nn.Module): ...``.

    The class needs ``from_config(config: dict, topology: Topology)``; ``cls.kind`` is set.
    """
    def deco(cls: type) -> type:
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(f"{cls.__name__} must define classmethod from_config(config, topology) to be registered")
        other = _REGISTRY.get(kind)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"model kind {kind!r} is already registered by {other.__module__}.{other.__qualname__}")
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls
    return deco


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class Checkpoint:
    kind: str
    config: dict
    topology: Topology
    encoder: dict
    fps: float
    data_card: dict
    metrics: dict
    state_dict: dict = field(repr=False)
    meta: dict = field(default_factory=dict, repr=False)
    path: Path | None = None


def shipped_checkpoints() -> dict[str, Path]:
    """Name -> file of every checkpoint shipped in ``engine/assets`` (aliases included)."""
    found = {p.stem: p for p in sorted(ASSETS.glob("*.safetensors"))}
    for alias, target in ALIASES.items():
        if alias not in found and target in found:
            found[alias] = found[target]
    return dict(sorted(found.items()))


def _looks_like_name(text: str) -> bool:
    return bool(text) and os.sep not in text and "/" not in text and "." not in text


def resolve_checkpoint_path(path: str | os.PathLike | None) -> Path:
    """A shipped checkpoint's name (``None`` = ``"default"``) or a file path -> the file.

    A bare name (no folder, no suffix) that is not an existing file must be a shipped checkpoint;
    an unknown name is an error that lists the available ones.
    """
    text = "default" if path is None else str(path)
    if _looks_like_name(text) and not Path(text).exists():
        shipped = shipped_checkpoints()
        if text in shipped:
            return shipped[text]
        if text == "default":
            raise CheckpointError(
                f"the default checkpoint {DEFAULT_CHECKPOINT} is missing; train it with "
                "`python -m training.train --config training/configs/synthtalk_default.toml` "
                "and copy runs/synthtalk_default/model.safetensors there, or pass --checkpoint FILE")
        names = ", ".join(shipped) or "none"
        raise CheckpointError(f"no shipped checkpoint named {text!r}; available: {names} "
                              "(or pass the path of a .safetensors file)")
    return Path(text).expanduser()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_checkpoint(path: str | os.PathLike, model, *, config: dict, topology: Topology, encoder: dict,
                    fps: float, data_card: dict, metrics: dict | None = None, half: bool = False) -> Path:
    """Write ``model`` (a registered ``nn.Module``) and everything needed to rebuild it atomically.

    ``half=True`` stores floating-point weights as float16 (half the size; loading converts back
    to float32). Tied/shared tensors are stored as independent copies.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoints are .safetensors files; got {path.name}")
    kind = getattr(model, "kind", None)
    if not kind or kind not in _REGISTRY:
        raise CheckpointError(f"{type(model).__name__} is not a registered model (decorate it with @register_model(kind))")
    tensors: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        t = value.detach().to("cpu").clone().contiguous()
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[f"model.{name}"] = t
    for name, arr in topology.to_tensors().items():
        tensors[f"topology.{name}"] = torch.from_numpy(np.ascontiguousarray(arr))
    if dataclasses.is_dataclass(encoder) and not isinstance(encoder, type):
        encoder = dataclasses.asdict(encoder)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "topology": topology.meta(),
        "encoder": encoder,
        "fps": float(fps),
        "data_card": data_card,
        "metrics": metrics or {},
        "half": bool(half),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        meta_json = json.dumps(meta, default=_json_default)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"parley": meta_json})
    return path


_PICKLE_HINT = ("This looks like a PyTorch pickle (.pt/.pth/.ckpt) file. Parley only loads .safetensors checkpoints, "
                "because unpickling a file can run arbitrary code. If the file is yours and trusted, load it in Python "
                "with torch.load and save it again with engine.checkpoint.save_checkpoint.")


def read_metadata(path: str | os.PathLike) -> dict:
    """Parse and validate the Parley metadata of a checkpoint without torch (fast; used by ``info``
    and the Blender add-on). Raises :class:`CheckpointError` for missing, pickle, non-safetensors
    or non-Parley files."""
    path = resolve_checkpoint_path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the .safetensors file")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        raw = fh.read(n) if 2 <= n <= min(size - 8, 100_000_000) else b""
    header = None
    if raw[:1] == b"{":
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        # Only now look for pickle/zip magic: a valid safetensors length prefix may start with 0x80.
        if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
            raise CheckpointError(f"{path}: {_PICKLE_HINT}")
        raise CheckpointError(f"{path}: not a safetensors file ({size} bytes, no valid header); "
                              "Parley checkpoints are .safetensors files written by save_checkpoint")
    parley = (header.get("__metadata__") or {}).get("parley")
    if parley is None:
        raise CheckpointError(f"not a Parley checkpoint: {path} is a safetensors file without Parley metadata "
                              "(kind, topology, encoder). Plain weight files cannot be used directly.")
    try:
        meta = json.loads(parley)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: Parley metadata is not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this Parley supports "
                              f"({FORMAT_VERSION}); update Parley")
    missing = [k for k in ("kind", "config", "topology", "encoder", "fps") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: Parley metadata lacks {', '.join(missing)}")
    return meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load weights and metadata (never unpickles). ``"default"`` means the bundled checkpoint."""
    import torch
    from safetensors.torch import load_file

    path = resolve_checkpoint_path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged file
        raise CheckpointError(f"{path}: cannot read tensors ({exc}); the file is damaged or truncated") from None
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if meta.get("half"):
        state = {k: (v.to(torch.float32) if v.dtype == torch.float16 else v) for k, v in state.items()}
    topo_t = {k: v for k, v in tensors.items() if k.startswith("topology.")}
    try:
        topology = Topology.from_tensors(topo_t, meta["topology"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad topology in checkpoint: {exc}") from None
    return Checkpoint(kind=meta["kind"], config=meta["config"], topology=topology, encoder=meta["encoder"],
                      fps=float(meta["fps"]), data_card=meta.get("data_card") or {}, metrics=meta.get("metrics") or {},
                      state_dict=state, meta=meta, path=path)


def _lookup(kind: str) -> type:
    if kind not in _REGISTRY:
        for mod in [f"engine.models.{kind}"] + MODEL_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if exc.name is None or not mod.startswith(exc.name):
                    raise
            if kind in _REGISTRY:
                break
    if kind not in _REGISTRY:
        known = ", ".join(registered_kinds()) or "none"
        raise CheckpointError(f"unknown model kind {kind!r} (registered: {known}); this checkpoint needs a newer "
                              "Parley or the module that defines the model")
    return _REGISTRY[kind]


def model_class(kind: str) -> type:
    """The registered class for ``kind`` (importing :data:`MODEL_MODULES` on demand)."""
    return _lookup(kind)


def build_model(ckpt: Checkpoint, device: str = "cpu"):
    """Instantiate the registered class for ``ckpt.kind`` and load its weights (strict), in eval mode."""
    cls = _lookup(ckpt.kind)
    model = cls.from_config(ckpt.config, ckpt.topology)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {ckpt.path or 'checkpoint'} do not fit model {ckpt.kind!r}: {exc}") from None
    return model.to(device).eval()
