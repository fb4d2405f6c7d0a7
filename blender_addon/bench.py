"""Bake and playback benchmark for the add-on's bake modes (not a test).

    python blender_addon/bench.py [--seconds 10 60 300] [--vertices 5000 23000] [--fps 30]
    blender -b -P blender_addon/bench.py -- …

For each synthetic grid mesh (V≈5,000 like FLAME/VOCASET, V≈23,000 like BIWI) and clip
length, it writes a PC2 of synthetic motion (as the engine would), then measures:

* bake: :func:`bake.bake` — what happens in Blender after the engine finished (mesh cache:
  move the file + add the modifier; shape keys: one key per frame + the eval_time curve);
* playback: mean time of ``scene.frame_set`` to a random frame of the clip, which includes
  depsgraph evaluation of the animated mesh (what scrubbing/playing costs per frame change).

Targets (issue 5): a 60 s clip at 30 fps bakes in < 1 s and plays back at < 1 ms per frame
change. Relative shape keys are measured up to ``--relative-max`` seconds: their cost grows
with the clip length by design, which is why they are not the default.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _bake_module() -> Any:
    pkg_dir = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != pkg_dir]
    if str(pkg_dir.parent) not in sys.path:
        sys.path.insert(0, str(pkg_dir.parent))
    import importlib

    return importlib.import_module(f"{pkg_dir.name}.bake")


def write_synthetic_pc2(path: str, rest: np.ndarray, t_count: int, chunk: int = 256) -> None:
    """Streamed (bounded memory): rest + smooth per-vertex motion."""
    v = len(rest)
    phase = np.linspace(0, 6.28, v, dtype=np.float32)[:, None]
    with open(path, "wb") as fh:
        fh.write(struct.pack("<12siiffi", b"POINTCACHE2\0", 1, v, 0.0, 1.0, t_count))
        for t0 in range(0, t_count, chunk):
            t = np.arange(t0, min(t0 + chunk, t_count), dtype=np.float32)[:, None, None]
            frames = rest[None] + 0.01 * np.sin(0.2 * t + phase[None])
            fh.write(frames.astype("<f4").tobytes())


def grid_side(vertices: int) -> int:
    return int(round(vertices ** 0.5))


def measure_playback(scene: Any, start: int, t_count: int, changes: int, rng: np.random.Generator) -> float:
    frames = rng.integers(start, start + t_count, size=changes)
    scene.frame_set(int(frames[0]))  # warm-up (first evaluation allocates)
    t0 = time.perf_counter()
    for f in frames:
        scene.frame_set(int(f))
    return (time.perf_counter() - t0) / changes * 1000.0


def run(seconds: list[float], vertex_targets: list[int], fps: float, changes: int, relative_max: float,
        modes: list[str]) -> list[dict[str, Any]]:
    import bpy

    bake = _bake_module()
    rows = []
    work = tempfile.mkdtemp(prefix="parley_bench_")
    rng = np.random.default_rng(0)
    try:
        for vt in vertex_targets:
            for secs in seconds:
                t_count = int(round(secs * fps))
                for mode in modes:
                    relative = mode == "SHAPEKEYS_REL"
                    if relative and secs > relative_max:
                        continue
                    bpy.ops.wm.read_factory_settings(use_empty=True)
                    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(work, "bench.blend"))
                    side = grid_side(vt)
                    bpy.ops.mesh.primitive_grid_add(x_subdivisions=side, y_subdivisions=side, size=0.2)
                    obj = bpy.context.active_object
                    assert obj is not None and isinstance(obj.data, bpy.types.Mesh)
                    mesh = obj.data
                    v = len(mesh.vertices)
                    rest = np.empty(v * 3, np.float32)
                    mesh.vertices.foreach_get("co", rest)
                    pc2 = os.path.join(work, "engine_out.pc2")
                    t0 = time.perf_counter()
                    write_synthetic_pc2(pc2, rest.reshape(-1, 3), t_count)
                    t_write = time.perf_counter() - t0
                    opts = bake.BakeOptions(clip=f"bench_{secs:g}s", mode="CACHE" if mode == "CACHE" else "SHAPEKEYS",
                                            start_frame=1, relative_keys=relative)
                    gc.collect()
                    t0 = time.perf_counter()
                    bake.bake(bpy.context.scene, obj, pc2, opts)
                    t_bake = time.perf_counter() - t0
                    ms = measure_playback(bpy.context.scene, 1, t_count, changes, rng)
                    rows.append({"V": v, "seconds": secs, "frames": t_count, "mode": mode,
                                 "pc2_write_s": t_write, "bake_s": t_bake, "playback_ms": ms})
                    print(f"  V={v:>6} {secs:>5g}s {mode:<13} bake {t_bake:8.3f} s  playback {ms:8.3f} ms/frame",
                          flush=True)
                    if os.path.exists(pc2):
                        os.unlink(pc2)
                    shutil.rmtree(os.path.join(work, "parley_cache"), ignore_errors=True)
    finally:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]], fps: float) -> str:
    names = {"CACHE": "mesh cache", "SHAPEKEYS": "shape keys (absolute)", "SHAPEKEYS_REL": "shape keys (relative)"}
    out = [f"| V | clip | frames @{fps:g} fps | mode | bake (s) | playback (ms / frame change) | PC2 write by engine (s) |",
           "|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['V']:,} | {r['seconds']:g} s | {r['frames']:,} | {names[r['mode']]} | {r['bake_s']:.3f} | "
                   f"{r['playback_ms']:.3f} | {r['pc2_write_s']:.2f} |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Parley add-on bake/playback benchmark")
    p.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 300])
    p.add_argument("--vertices", type=int, nargs="+", default=[5000, 23000])
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--changes", type=int, default=100, help="frame changes timed per case")
    p.add_argument("--relative-max", type=float, default=60.0, help="longest clip for relative keys (s)")
    p.add_argument("--modes", nargs="+", default=["CACHE", "SHAPEKEYS", "SHAPEKEYS_REL"],
                   choices=["CACHE", "SHAPEKEYS", "SHAPEKEYS_REL"])
    a = p.parse_args(argv)
    import bpy

    print(f"Blender {bpy.app.version_string}, {os.cpu_count()} CPUs")
    rows = run(a.seconds, a.vertices, a.fps, a.changes, a.relative_max, a.modes)
    print()
    print(table(rows, a.fps))
    return 0


if __name__ == "__main__":
    import bpy

    if "--" in sys.argv:
        args = sys.argv[sys.argv.index("--") + 1:]
    else:  # inside the Blender binary sys.argv holds Blender's own options
        args = [] if bpy.app.binary_path and not bpy.app.binary_path.endswith(("python", "python3")) else sys.argv[1:]
    code = main(args)
    sys.stdout.flush()
    if code:
        sys.exit(code)
