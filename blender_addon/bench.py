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

    python blender_addon/bench.py --window [--clicks 3] [--mode cache|shapekeys]

measures instead what an animator waits for (issue 14): click -> baked in a real Blender window
(Debian's Blender 3.4 under Xvfb, the rig of tests/test_addon_window.py), on a 5 s line with the
real engine: the first click starts the warm engine (cold), the next ``--clicks`` reuse it
(warm). Targets: warm < 1.0 s, cold < 3 s. Needs ``blender``, ``xvfb-run`` and ``espeak-ng``
(``make sysdeps``); runs from a source checkout (it uses the window suite's rig in tests/blender).
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


def run_window(clicks: int, mode: str, keep: str | None = None, close_lips: bool = True,
               checkpoint: str | None = None) -> dict[str, Any]:
    """Start Blender with a window under Xvfb on tests/blender/window_bench.py; its results."""
    import json
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    found = {t: shutil.which(t) for t in ("blender", "xvfb-run", "espeak-ng")}
    missing = [t for t, path in found.items() if path is None]
    tools = {t: str(path) for t, path in found.items()}
    if missing:
        raise SystemExit(f"--window needs {', '.join(missing)}: `make sysdeps` (Debian: apt-get install blender xvfb "
                         "espeak-ng python3-numpy)")
    sys.path.insert(0, str(repo))
    import build_addon

    work = Path(keep or tempfile.mkdtemp(prefix="parley_window_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    legacy = build_addon.build_legacy(work / "dist", work / "build")
    for d in ("scenes", "shots", "tmp"):
        (work / d).mkdir(exist_ok=True)
    wav = work / "line5s.wav"
    subprocess.run([tools["espeak-ng"], "-w", str(wav), "Hello there. This is a five second line of speech, "
                    "spoken for the Parley test."], check=True, capture_output=True)
    cfg = {"repo": str(repo), "work": str(work), "scenes": str(work / "scenes"), "shots": str(work / "shots"),
           "legacy_zip": str(legacy), "engine_python": sys.executable,
           "fake_engine": str(repo / "tests" / "blender" / "fake_engine.py"),
           "head_obj": str(repo / "engine" / "assets" / "default_head.obj"),
           "wav_5s": str(wav), "wav_a": str(wav), "wav_b": str(wav), "wav_c": str(wav), "timeout": 300,
           "only": ["install_legacy_zip", "bench_click_to_baked"], "clicks": clicks, "bench_mode": mode.upper(),
           "close_lips": close_lips, "checkpoint": f"{checkpoint}.safetensors" if checkpoint else None,
           "log": str(work / "blender.log")}
    (work / "config.json").write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_CONFIG=str(work / "user" / "config"),
               BLENDER_USER_SCRIPTS=str(work / "user" / "scripts"),
               BLENDER_USER_DATAFILES=str(work / "user" / "datafiles"), TMPDIR=str(work / "tmp"))
    results = work / "results.json"
    # No --enable-event-simulate here (the window tests need it for Esc and drags; the bench only
    # clicks): with it, Blender 3.4 never sleeps between events and keeps one core busy (measured
    # 1.00 CPU s per s idle against 0.20 without), which the engine would then compete with.
    with open(work / "blender.log", "w") as log:
        subprocess.run([tools["xvfb-run"], "-a", "-s", "-screen 0 1280x800x24", tools["blender"], "--factory-startup",
                        "-p", "0", "0", "1280", "800", "--python",
                        str(repo / "tests" / "blender" / "window_bench.py"), "--", str(work / "config.json"),
                        str(results)], env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1200)
    res = json.loads(results.read_text()) if results.exists() else {}
    if "_bench" not in res:
        detail = {k: v.get("detail", "")[-2000:] for k, v in res.items() if isinstance(v, dict) and not v.get("ok")}
        raise SystemExit(f"the window bench failed: {detail or 'no results'}; log: {work / 'blender.log'}")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return dict(res["_bench"])


def window_table(bench: dict[str, Any]) -> str:
    out = ["| click | engine | click -> baked (s) | engine start -> ready (s) [model load CPU s] | "
           "engine request (s) [CPU s] | bake (s) | rest: polling, UI (s) | Blender's CPU s during the click | load average |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in bench["rows"]:
        ready = r["ready_after"] or 0.0
        engine = r["engine"] or 0.0
        rest = r["seconds"] - engine - r["bake"] - (ready if r["kind"] == "cold" else 0.0)
        start = "" if r["ready_after"] is None else f"{ready:.2f} [{r.get('ready_cpu') or 0:.2f}]"
        out.append(f"| {r['click']} | {r['kind']} | {r['seconds']:.2f} | {start} | "
                   f"{engine:.2f} [{r.get('engine_cpu') or 0:.2f}] | {r['bake']:.3f} | {max(0.0, rest):.2f} | "
                   f"{r.get('blender_cpu', '')} | {r.get('load', '')} |")
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
    p.add_argument("--window", action="store_true",
                   help="click -> baked in a real Blender 3.4 window (Xvfb), cold and warm engine, 5 s line")
    p.add_argument("--clicks", type=int, default=3, help="--window: warm clicks after the cold one")
    p.add_argument("--mode", choices=["cache", "shapekeys"], default="cache", help="--window: bake mode")
    p.add_argument("--keep", help="--window: keep the work folder (Blender log, scenes) here")
    p.add_argument("--no-lipclose", action="store_true", help="--window: the panel's 'Close lips on B/P/M' off")
    p.add_argument("--checkpoint", help="--window: a shipped model other than the default (e.g. wav2sem)")
    a = p.parse_args(argv)
    if a.window:
        bench = run_window(a.clicks, a.mode, a.keep, close_lips=not a.no_lipclose, checkpoint=a.checkpoint)
        print(f"Blender {bench['blender']} window under Xvfb, {bench['cpus']} CPUs, 5 s line, {a.mode} bake; "
              f"engine pid {bench['rows'][0]['pid']} for all clicks: "
              f"{len({r['pid'] for r in bench['rows']}) == 1}")
        print(window_table(bench))
        return 0
    import bpy

    print(f"Blender {bpy.app.version_string}, {os.cpu_count()} CPUs")
    rows = run(a.seconds, a.vertices, a.fps, a.changes, a.relative_max, a.modes)
    print()
    print(table(rows, a.fps))
    return 0


if __name__ == "__main__":
    if "--window" in sys.argv:  # plain Python: it starts Blender itself
        raise SystemExit(main(sys.argv[1:]))
    import bpy

    if "--" in sys.argv:
        args = sys.argv[sys.argv.index("--") + 1:]
    else:  # inside the Blender binary sys.argv holds Blender's own options
        args = [] if bpy.app.binary_path and not bpy.app.binary_path.endswith(("python", "python3")) else sys.argv[1:]
    code = main(args)
    sys.stdout.flush()
    if code:
        sys.exit(code)
