"""Cold-start measurements for :mod:`engine.bench`: what a fresh ``python -m engine animate`` pays.

Two views of the same thing, both in fresh child processes (a cold start cannot be measured in a
process that has already imported torch):

* :func:`cold_cli` -- wall and CPU seconds of the real command line, ``python -m engine animate
  --audio A --out X.pc2 --progress none``, as the Blender add-on and a shell user run it;
* :func:`cold_stages` -- the same steps run by hand in a child (``python -m engine.bench_cold``)
  with a clock around each: interpreter start, imports, checkpoint load (file -> model), encoder
  load (weights -> module), encode, decode, write.  Interpreter start is the child's wall time
  minus the stages it timed itself.

CPU seconds are reported next to wall seconds because on a shared machine wall time mostly
measures the other jobs; CPU time is what the start-up itself costs.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["cold_cli", "cold_stages", "stages_main"]

STAGES = ("imports", "checkpoint", "encoder_load", "read_audio", "encode", "decode", "write")


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float, float]:
    cpu0, t0 = _child_cpu(), time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return r, time.perf_counter() - t0, _child_cpu() - cpu0


def cold_cli(audio: Path, checkpoint: str, out_dir: Path, device: str = "cpu",
             threads: int = 0) -> dict[str, Any]:
    """Wall/CPU seconds of one cold ``python -m engine animate`` writing a PC2."""
    out = Path(out_dir) / f"cold-{Path(checkpoint).stem}.pc2"
    cmd = [sys.executable, "-m", "engine", "animate", "--audio", str(audio), "--out", str(out),
           "--checkpoint", checkpoint, "--device", device, "--progress", "none"]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    r, wall, cpu = _run(cmd, env)
    if r.returncode != 0:
        raise RuntimeError(f"cold CLI failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out.unlink(missing_ok=True)
    return {"cold_cli_wall_s": wall, "cold_cli_cpu_s": cpu}


def cold_stages(audio: Path, checkpoint: str, out_dir: Path, device: str = "cpu",
                threads: int = 0) -> dict[str, Any]:
    """Seconds per stage of a cold animate in a fresh child (see the module docstring)."""
    out = Path(out_dir) / f"stages-{Path(checkpoint).stem}.pc2"
    cmd = [sys.executable, "-m", "engine.bench_cold", str(audio), checkpoint, str(out), device]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    r, wall, cpu = _run(cmd, env)
    if r.returncode != 0:
        raise RuntimeError(f"stage timing failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    out.unlink(missing_ok=True)
    stages = json.loads(r.stdout.strip().splitlines()[-1])
    stages["interpreter"] = max(0.0, wall - sum(stages[s] for s in STAGES))
    stages["total_wall"], stages["total_cpu"] = wall, cpu
    return stages


def stages_main(argv: list[str]) -> int:
    """Child side of :func:`cold_stages`: ``python -m engine.bench_cold AUDIO CHECKPOINT OUT DEVICE``."""
    audio, checkpoint, out, device = argv
    t: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        t[name] = now - clock
        clock = now

    # the modules `python -m engine animate` imports on its way to the first model call
    import numpy  # noqa: F401
    import torch  # noqa: F401

    import engine.cli  # noqa: F401
    from engine.audio import load_audio, num_frames
    from engine.checkpoint import build_model, load_checkpoint
    from engine.cli_animate import open_output
    from engine.encoders import build_encoder
    from engine.inference import Animator, resolve_device
    from engine.models.windowing import predict_sequence
    lap("imports")
    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt)
    lap("checkpoint")
    encoders = list(model.encoders) if getattr(model, "encoders", None) is not None else \
        [build_encoder(s) for s in (ckpt.config.get("encoders") or [ckpt.encoder])]
    anim = Animator(model.float(), encoders, ckpt.topology, ckpt.fps, resolve_device(device), checkpoint=ckpt)
    lap("encoder_load")
    wav = load_audio(audio)
    T = num_frames(len(wav), anim.fps)
    lap("read_audio")
    feats = anim.features(wav, T)
    style = anim.style_vector(None)
    tmpl = anim.model.template.detach().float().cpu()
    lap("encode")
    write = [0.0]

    class _Timed:
        """Forwards frames to the real writer, timing only the writes."""

        def __init__(self, sink: Any) -> None:
            self.sink, self.shape = sink, sink.shape

        def __setitem__(self, key: Any, value: Any) -> None:
            w0 = time.perf_counter()
            self.sink[key] = value
            write[0] += time.perf_counter() - w0

    with open_output(Path(out), T, anim.num_vertices, anim.fps) as buf:
        predict_sequence(anim.model, feats, tmpl, style, out=_Timed(buf), window_frames=anim.window_frames)
        w0 = time.perf_counter()
    close = time.perf_counter() - w0   # fsync + rename
    lap("decode")
    t["decode"] -= write[0] + close
    t["write"] = write[0] + close
    print(json.dumps(t))
    return 0


if __name__ == "__main__":
    raise SystemExit(stages_main(sys.argv[1:]))
