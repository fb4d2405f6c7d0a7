"""Small file-format helpers the add-on needs inside Blender without importing the engine.

Why not ``import engine``: the engine is bundled for the child process and pulls in torch;
Blender's own Python usually has neither. These readers use only the standard library and
numpy (which Blender ships):

* :func:`read_pc2` — the PC2 point cache the engine writes (shape-key bakes read it back).
* :func:`read_checkpoint_info` — the JSON header of a ``.safetensors`` checkpoint (topology
  fingerprint, vertex count, fps, data card) so the panel can show it and refuse a topology
  mismatch before any work. Only the header is read: no tensors, no pickle.
* :func:`write_template_obj` — the target object's rest shape for ``--template``.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PC2_HEADER = struct.Struct("<12siiffi")
PC2_MAGIC = b"POINTCACHE2\0"


class FormatError(ValueError):
    """A file is not what it claims to be; the message names the file and the problem."""


def read_pc2_header(path: str) -> tuple[int, int, float, float]:
    """(vertices, frames, start, sampling) from a PC2 header."""
    with open(path, "rb") as fh:
        head = fh.read(PC2_HEADER.size)
    if len(head) < PC2_HEADER.size:
        raise FormatError(f"{path}: too short for a PC2 file ({len(head)} bytes)")
    magic, _version, verts, start, sampling, frames = PC2_HEADER.unpack(head)
    if magic != PC2_MAGIC:
        raise FormatError(f"{path}: not a PC2 point cache (bad signature {magic!r})")
    return verts, frames, start, sampling


def read_pc2(path: str, mmap: bool = False) -> np.ndarray:
    """All frames of a PC2 file as a (T, V, 3) float32 array; ``mmap=True`` maps the file
    instead of reading it (a 300 s clip on a 23k-vertex head is 2.5 GB)."""
    verts, frames, _start, _sampling = read_pc2_header(path)
    expected = PC2_HEADER.size + frames * verts * 3 * 4
    size = os.path.getsize(path)
    if size != expected:
        raise FormatError(f"{path}: {size} bytes but the header says {frames} frames x {verts} "
                          f"vertices ({expected} bytes); the file is truncated or corrupt")
    if mmap:
        return np.memmap(path, dtype="<f4", mode="r", offset=PC2_HEADER.size, shape=(frames, verts, 3))
    data = np.fromfile(path, dtype="<f4", offset=PC2_HEADER.size)
    return data.reshape(frames, verts, 3).astype(np.float32, copy=False)


@dataclass
class CheckpointInfo:
    """What the add-on shows about a checkpoint and uses for the topology check."""

    path: str
    kind: str = "?"
    fps: float = 30.0
    num_vertices: int | None = None
    fingerprint: str | None = None
    topology_name: str = ""
    masks: list[str] = field(default_factory=list)
    data_card: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        v = "?" if self.num_vertices is None else f"{self.num_vertices:,}"
        return f"{self.kind}, {v} vertices, {self.fps:g} fps"


def read_checkpoint_info(path: str) -> CheckpointInfo:
    """Parse the safetensors header (8-byte little-endian length + JSON) of a checkpoint."""
    if not os.path.isfile(path):
        raise FormatError(f"Checkpoint not found: {path}")
    if not path.endswith(".safetensors"):
        raise FormatError(f"{path}: Parley only loads .safetensors checkpoints (never pickles)")
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise FormatError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > 100_000_000:
            raise FormatError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"{path}: unreadable safetensors header ({exc})") from exc
    meta_raw = (header.get("__metadata__") or {}).get("parley")
    if meta_raw is None:
        raise FormatError(f"{path}: a safetensors file but not a Parley checkpoint (no 'parley' metadata)")
    try:
        meta = json.loads(meta_raw)
    except ValueError as exc:
        raise FormatError(f"{path}: Parley metadata is not valid JSON ({exc})") from exc
    topo = meta.get("topology") or {}
    info = CheckpointInfo(
        path=path,
        kind=str(meta.get("kind", "?")),
        fps=float(meta.get("fps", topo.get("fps", 30.0)) or 30.0),
        fingerprint=topo.get("fingerprint"),
        topology_name=str(topo.get("name", "")),
        masks=list(topo.get("masks") or topo.get("mask_names") or []),
        data_card=dict(meta.get("data_card") or {}),
        encoder=dict(meta.get("encoder") or {}),
    )
    verts = header.get("topology.vertices")
    if isinstance(verts, dict) and verts.get("shape"):
        info.num_vertices = int(verts["shape"][0])
    elif isinstance(topo.get("num_vertices"), int):
        info.num_vertices = int(topo["num_vertices"])
    elif info.fingerprint and info.fingerprint.startswith("v"):
        try:
            info.num_vertices = int(info.fingerprint[1:].split("-", 1)[0])
        except ValueError:
            pass
    return info


def fingerprint(num_vertices: int, faces: np.ndarray) -> str:
    """Same recipe as ``engine.topology.Topology.fingerprint`` (contract):
    ``v{V}-f{F}-{sha256(faces as int64 bytes)[:12]}``."""
    import hashlib

    f = np.ascontiguousarray(faces, dtype="<i8")
    return f"v{num_vertices}-f{len(f)}-{hashlib.sha256(f.tobytes()).hexdigest()[:12]}"


def write_template_obj(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Minimal OBJ (vertex order kept, 1-based faces), written atomically."""
    lines = ["# Parley template exported from Blender (object local space)\n"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += ["f " + " ".join(str(int(i) + 1) for i in face) + "\n" for face in faces]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".obj.tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_pc2(path: str, frames: np.ndarray, fps: float = 30.0) -> None:
    """(T,V,3) frames → a PC2 file (written to a temporary name, then renamed)."""
    frames = np.ascontiguousarray(frames, dtype="<f4")
    t, v, _ = frames.shape
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(PC2_HEADER.pack(PC2_MAGIC, 1, v, 0.0, 1.0 / float(fps), t))
        fh.write(frames.tobytes())
    os.replace(tmp, path)
