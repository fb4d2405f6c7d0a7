"""Inputs for the add-on tests: head meshes, a checkpoint, synthesized speech, the built zip.

Runs in the main environment (torch, engine). The head is the bundled default head when it
exists, else a subdivided icosphere; the checkpoint is a tiny randomly initialised model of
the real kind when the engine can build one (so the real ``python -m engine animate`` runs),
else a header-only checkpoint for the stand-in engine.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine.topology import Topology


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    with open(path, "w") as fh:
        fh.writelines(f"v {x:.7f} {y:.7f} {z:.7f}\n" for x, y, z in vertices)
        fh.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)


def head_topology() -> Topology:
    default = ROOT / "engine" / "assets" / "default_head.obj"
    if default.is_file():
        return Topology.load(default)
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    v = np.asarray(m.vertices, np.float32)
    lips = np.flatnonzero(v[:, 2] < -0.05)
    upper = np.flatnonzero(v[:, 2] > 0.03)
    return Topology(vertices=v, faces=np.asarray(m.faces, np.int64),
                    masks={"lips": lips, "upper_face": upper, "face": np.arange(len(v))}, name="test_sphere")


def real_engine_available(python: str) -> bool:
    """``python -m engine animate`` exists (the model helper's CLI has landed)."""
    p = subprocess.run([python, "-m", "engine", "animate", "--help"], cwd=ROOT, capture_output=True, text=True)
    return p.returncode == 0 and "--progress" in p.stdout


def make_checkpoint(topo: Topology, path: Path, real: bool) -> None:
    if real:
        import torch

        from engine.checkpoint import save_checkpoint
        from engine.models.composite_regional import CompositeRegionalModel

        torch.manual_seed(0)
        cfg = {"channels": 16, "decoder_layers": [1, 1], "style_layers": [1, 1], "alpha": 1.0}
        model = CompositeRegionalModel.from_config(cfg, topo)
        with torch.no_grad():  # random weights that visibly move the face (tests check motion)
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        save_checkpoint(path, model, config=model.config.to_dict(), topology=topo,
                        encoder={"kind": "whisper", "name_or_path": None, "layer": -1}, fps=30.0,
                        data_card={"dataset": "none (random test weights)"})
        return
    from safetensors.numpy import save_file

    tensors = {f"topology.{k}": np.ascontiguousarray(v) for k, v in topo.to_tensors().items()}
    meta = {"format_version": 1, "kind": "fake", "config": {}, "topology": topo.meta(), "encoder": {},
            "fps": 30.0, "data_card": {"dataset": "none"}, "metrics": {}}
    save_file(tensors, str(path), metadata={"parley": json.dumps(meta)})


def speak(path: Path, text: str) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is needed for the add-on tests (make sysdeps)")
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True)


def build_all(work: Path, engine_python: str, force_fake: bool = False) -> dict[str, Any]:
    """Everything addon_suite.py needs; returns its config (without 'zip')."""
    work.mkdir(parents=True, exist_ok=True)
    topo = head_topology()
    head = work / "head.obj"
    default = ROOT / "engine" / "assets" / "default_head.obj"
    if default.is_file():  # the file users get, imported as is (checks Blender keeps its order)
        shutil.copyfile(default, head)
    else:
        write_obj(head, topo.vertices, topo.faces)
    # wrong vertex count / same vertices but different faces (fingerprint only)
    import trimesh

    small = trimesh.creation.icosphere(subdivisions=1, radius=0.1)
    write_obj(work / "head_bad.obj", np.asarray(small.vertices), np.asarray(small.faces))
    write_obj(work / "head_perm.obj", topo.vertices, topo.faces[::-1])
    real = not force_fake and real_engine_available(engine_python)
    ckpt = work / "tiny.safetensors"
    make_checkpoint(topo, ckpt, real)
    speak(work / "hello_world.wav", "Hello world, this is Parley.")
    speak(work / "second_clip.wav", "Bob bought a map.")
    return {
        "work": str(work), "repo": str(ROOT), "engine_python": engine_python,
        "engine": "real" if real else "fake", "checkpoint": str(ckpt),
        "head_obj": str(head), "head_bad_obj": str(work / "head_bad.obj"),
        "head_perm_obj": str(work / "head_perm.obj"),
        "wav_a": str(work / "hello_world.wav"), "wav_b": str(work / "second_clip.wav"),
        "ckpt_vertices": topo.num_vertices, "ckpt_fingerprint": topo.fingerprint(),
    }
