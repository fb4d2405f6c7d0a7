"""Parley engine: speech audio in, per-vertex facial animation out.

Pure Python + PyTorch; never imports ``bpy`` so it runs the same inside Blender, in a
subprocess launched by the add-on, in training jobs and in tests. Heavy submodules are
imported lazily so ``import engine`` stays cheap (the Blender add-on imports it to read
checkpoint metadata without paying for torch/transformers start-up).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Animator": "engine.inference",
    "load_audio": "engine.audio",
    "AudioError": "engine.audio",
    "Topology": "engine.topology",
    "TopologyMismatch": "engine.topology",
    "load_checkpoint": "engine.checkpoint",
    "save_checkpoint": "engine.checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_LAZY)
