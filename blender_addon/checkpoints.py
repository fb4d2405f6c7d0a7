"""The checkpoints shipped in the engine's ``engine/assets`` folder, listed for the panel.

Headers are read with :func:`formats.read_checkpoint_info` (no torch, no tensors) and cached
by path + modification time, because Blender calls the dropdown's item callback on every draw.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from . import formats, preferences


@dataclass(frozen=True)
class Shipped:
    file: str  # file name inside engine/assets (the enum identifier)
    path: str
    label: str
    description: str


_CACHE: dict[tuple[str, float], Shipped] = {}


def assets_dir() -> str | None:
    root = preferences.engine_root()
    return os.path.join(root, "engine", "assets") if root else None


def _describe(path: str) -> Shipped:
    name = os.path.basename(path)
    try:
        info = formats.read_checkpoint_info(path)
    except formats.FormatError as exc:
        return Shipped(name, path, f"{name} (unreadable)", str(exc)[:200])
    title = str(info.data_card.get("name") or info.data_card.get("dataset") or info.kind)
    label = f"{os.path.splitext(name)[0]}: {title}"
    return Shipped(name, path, label, info.summary())


def shipped() -> list[Shipped]:
    """Shipped checkpoints, default first, then by file name."""
    folder = assets_dir()
    if folder is None:
        return []
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        key = (path, os.path.getmtime(path))
        if key not in _CACHE:
            _CACHE[key] = _describe(path)
        out.append(_CACHE[key])
    return sorted(out, key=lambda c: (c.file != "default.safetensors", c.file))


def path_of(file: str) -> str | None:
    folder = assets_dir()
    if not folder or not file:
        return None
    path = os.path.join(folder, os.path.basename(file))
    return path if os.path.isfile(path) else None
