"""Animation files: numpy, PC2 and MDD point caches, OBJ sequences (writers and readers).

PC2 and MDD are what Blender's Mesh Cache modifier plays back at ~0.2 ms per frame change
(shape keys get slow with thousands of frames), so they are the add-on's main transport.

* PC2 (little-endian): header ``struct "<12siiffi"`` = (b"POINTCACHE2\\0", version 1, V,
  start, sampling, T) then T*V*3 float32. ``start``/``sampling`` are in *frames* (the
  original PC2 convention, sampling 1.0 = one sample per frame); Blender maps frames with the
  modifier's ``frame_start``. The file therefore carries no frame rate.
* MDD (big-endian): int32 T, int32 V, T float32 sample times in seconds, then T*V*3 float32.
  The frame rate is recovered from the times.

Every writer is atomic (:mod:`engine.fileio`), so a player never sees a half-written cache.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from engine.fileio import atomic_path, atomic_write

__all__ = [
    "as_frames",
    "read_animation",
    "read_mdd",
    "read_pc2",
    "save_animation",
    "write_mdd",
    "write_npy",
    "write_obj_sequence",
    "write_pc2",
]

PC2_MAGIC = b"POINTCACHE2\0"
PC2_HEADER = struct.Struct("<12siiffi")
MDD_HEADER = struct.Struct(">ii")


def as_frames(frames: np.ndarray, num_vertices: int | None = None) -> np.ndarray:
    """Coerce (T,V,3), (T,V*3) or (V,3) to contiguous float32 (T,V,3); check V if given."""
    a = np.asarray(frames)
    if a.ndim == 2 and a.shape[1] == 3 and num_vertices is not None and a.shape[0] == num_vertices:
        a = a[None]
    elif a.ndim == 2:
        if a.shape[1] % 3:
            raise ValueError(f"animation of shape {a.shape}: the second axis must be V*3")
        a = a.reshape(a.shape[0], -1, 3)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"animation must have shape (T, V, 3) or (T, V*3), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"animation is empty: shape {a.shape}")
    if num_vertices is not None and a.shape[1] != num_vertices:
        raise ValueError(f"animation has {a.shape[1]} vertices, expected {num_vertices}")
    return np.ascontiguousarray(a, dtype=np.float32)


# --------------------------------------------------------------------------- numpy
def write_npy(path: str | os.PathLike, frames: np.ndarray) -> Path:
    """Save (T,V,3) float32."""
    path = Path(path)
    data = as_frames(frames)
    with atomic_path(path) as tmp:
        np.save(tmp, data)
    return path


# --------------------------------------------------------------------------- PC2
def write_pc2(path: str | os.PathLike, frames: np.ndarray, fps: float, start_frame: int = 0) -> Path:
    """Write a PC2 point cache. ``fps`` is accepted for a uniform API but PC2 stores frames, not
    seconds: header start = ``start_frame``, sampling = 1.0."""
    path = Path(path)
    data = as_frames(frames)
    t, v, _ = data.shape
    with atomic_write(path) as fh:
        fh.write(PC2_HEADER.pack(PC2_MAGIC, 1, v, float(start_frame), 1.0, t))
        fh.write(data.astype("<f4", copy=False).tobytes())
    return path


def read_pc2_header(path: str | os.PathLike) -> dict:
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(PC2_HEADER.size)
    if len(head) < PC2_HEADER.size:
        raise ValueError(f"{path}: too short for a PC2 header ({len(head)} bytes)")
    magic, version, v, start, sampling, t = PC2_HEADER.unpack(head)
    if magic != PC2_MAGIC:
        raise ValueError(f"{path}: not a PC2 file (magic {magic!r})")
    if v <= 0 or t <= 0:
        raise ValueError(f"{path}: PC2 header has invalid sizes V={v}, T={t}")
    return {"version": version, "num_vertices": v, "start": start, "sampling": sampling, "num_frames": t}


def read_pc2(path: str | os.PathLike, fps: float | None = None) -> tuple[np.ndarray, float | None]:
    """Read a PC2 file -> ((T,V,3) float32, fps). PC2 carries no frame rate, so ``fps`` is
    returned as passed (default None)."""
    path = Path(path)
    h = read_pc2_header(path)
    t, v = h["num_frames"], h["num_vertices"]
    expected = PC2_HEADER.size + t * v * 12
    size = path.stat().st_size
    if size < expected:
        raise ValueError(f"{path}: truncated PC2 file: header says {t} frames x {v} vertices "
                         f"({expected} bytes) but the file has {size} bytes")
    data = np.fromfile(path, dtype="<f4", count=t * v * 3, offset=PC2_HEADER.size)
    return data.reshape(t, v, 3).astype(np.float32), fps


# --------------------------------------------------------------------------- MDD
def write_mdd(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Write an MDD point cache (big-endian) with sample times i/fps seconds."""
    if not fps or fps <= 0:
        raise ValueError(f"MDD needs a positive fps, got {fps}")
    path = Path(path)
    data = as_frames(frames)
    t, v, _ = data.shape
    times = (np.arange(t, dtype=np.float64) / float(fps)).astype(">f4")
    with atomic_write(path) as fh:
        fh.write(MDD_HEADER.pack(t, v))
        fh.write(times.tobytes())
        fh.write(data.astype(">f4").tobytes())
    return path


def read_mdd(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Read an MDD file -> ((T,V,3) float32, fps from the sample times, or None if T == 1)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(MDD_HEADER.size)
    if len(head) < MDD_HEADER.size:
        raise ValueError(f"{path}: too short for an MDD header ({len(head)} bytes)")
    t, v = MDD_HEADER.unpack(head)
    if t <= 0 or v <= 0:
        raise ValueError(f"{path}: MDD header has invalid sizes T={t}, V={v} (is this an MDD file?)")
    expected = MDD_HEADER.size + 4 * t + t * v * 12
    if size < expected:
        raise ValueError(f"{path}: truncated MDD file: header says {t} frames x {v} vertices "
                         f"({expected} bytes) but the file has {size} bytes")
    times = np.fromfile(path, dtype=">f4", count=t, offset=MDD_HEADER.size).astype(np.float64)
    data = np.fromfile(path, dtype=">f4", count=t * v * 3, offset=MDD_HEADER.size + 4 * t)
    fps = None
    if t > 1:
        dt = float(np.median(np.diff(times)))
        fps = round(1.0 / dt, 3) if dt > 0 else None
    return data.reshape(t, v, 3).astype(np.float32), fps


# --------------------------------------------------------------------------- OBJ sequence
def write_obj_sequence(out_dir: str | os.PathLike, frames: np.ndarray, faces: np.ndarray,
                       stem: str = "frame", progress=None) -> list[Path]:
    """One OBJ per frame: ``<out_dir>/<stem>_00000.obj`` … (0-based, zero-padded, at least 5 digits)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = as_frames(frames)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if faces.size and faces.max() >= data.shape[1]:
        raise ValueError(f"faces reference vertex {int(faces.max())} but frames have {data.shape[1]} vertices")
    face_text = "".join(f"f {a} {b} {c}\n" for a, b, c in (faces + 1).tolist())
    width = max(5, len(str(len(data) - 1)))
    paths = []
    for i, verts in enumerate(data):
        p = out_dir / f"{stem}_{i:0{width}d}.obj"
        with atomic_write(p, "w") as fh:
            np.savetxt(fh, verts, fmt="v %.6f %.6f %.6f")
            fh.write(face_text)
        paths.append(p)
        if progress is not None:
            progress((i + 1) / len(data))
    return paths


# --------------------------------------------------------------------------- dispatch
def save_animation(path: str | os.PathLike, frames: np.ndarray, fps: float, faces: np.ndarray | None = None,
                   start_frame: int = 0) -> Path:
    """Write by extension: .npy, .pc2, .mdd; a path without suffix (or an existing folder) gets an
    OBJ sequence and needs ``faces``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return write_npy(path, frames)
    if suffix == ".pc2":
        return write_pc2(path, frames, fps, start_frame=start_frame)
    if suffix == ".mdd":
        return write_mdd(path, frames, fps)
    if suffix == "" or path.is_dir():
        if faces is None:
            raise ValueError(f"writing an OBJ sequence to {path}/ needs the mesh faces")
        write_obj_sequence(path, frames, faces)
        return path
    raise ValueError(f"unsupported animation format {path.name!r}: use .npy, .pc2, .mdd or a folder for OBJs")


def read_animation(path: str | os.PathLike, num_vertices: int | None = None) -> tuple[np.ndarray, float | None]:
    """Read .npy ((T,V,3) or (T,V*3)), .pc2 or .mdd -> ((T,V,3) float32, fps or None)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"animation file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        frames, fps = np.load(path, allow_pickle=False), None
    elif suffix == ".pc2":
        frames, fps = read_pc2(path)
    elif suffix == ".mdd":
        frames, fps = read_mdd(path)
    else:
        raise ValueError(f"unsupported animation file {path.name!r}: use .npy, .pc2 or .mdd")
    try:
        return as_frames(frames, num_vertices), fps
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
