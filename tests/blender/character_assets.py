"""Characters for the add-on's "any character" tests, from the retarget test characters.

Runs in the main environment (training.characters builds them). Each character is written as
an ``.npz`` (``vertices``, ``faces``, ``up``, ``key_names``, ``keys`` (K, N, 3) absolute shape-key
positions) that the Blender side turns into a mesh with exactly that vertex order and local axes
(an OBJ import would re-orient it). ``noisy`` is the remeshed head with 1.5 mm of noise: its
automatic landmarks are not found (the fit is refused) but the picked ``landmarks`` work.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CELL = 0.004  # ~6k-vertex characters keep the fits a few seconds


def _write(path: Path, c: Any, vertices: np.ndarray | None = None) -> str:
    names = list(c.shapes)
    keys = np.stack([c.shapes[n] for n in names]).astype(np.float32) if names else np.zeros((0, 0, 3), np.float32)
    np.savez(path, vertices=np.asarray(c.vertices if vertices is None else vertices, np.float32),
             faces=np.asarray(c.faces, np.int64), up=np.array(c.up), key_names=np.array(names), keys=keys)
    return str(path)


def build_characters(work: Path) -> dict[str, Any]:
    from training.characters import build

    from engine.retarget.fit import fit_mesh
    from engine.retarget.meshin import check_mesh
    from engine.topology import Topology

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {}
    for name in ("arkit", "rhubarb", "cm_yup"):
        out[f"char_{name}"] = _write(work / f"{name}.npz", build(name, CELL))
    c = build("remeshed", CELL)
    noisy = c.vertices + np.random.default_rng(0).normal(0, 0.0015, c.vertices.shape)
    out["char_noisy"] = _write(work / "noisy.npz", c, noisy)
    # the landmarks a user would click: the clean head's fitted landmarks, nearest vertex
    fit = fit_mesh(check_mesh(c.vertices, c.faces), Topology.load(ROOT / "engine" / "assets" / "default_head.obj"),
                   up="z")
    lm = {n: int(np.argmin(np.linalg.norm(c.vertices - p, axis=1)))
          for n, p in zip(fit.meta["landmark_names"], fit.landmarks)}
    out["noisy_landmarks"] = lm
    (work / "noisy_landmarks.json").write_text(json.dumps(lm))
    return out
