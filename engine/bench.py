"""Speed and memory benchmark: ``python -m engine.bench [--device cpu|cuda|all] [--durations 5 60 600]``.

For each device and audio length it reports seconds of compute per second of audio and the
real-time factor (audio seconds / compute seconds) for

* **encoder** -- audio -> ``Z_audio`` (pretrained encoder in segments + resampling + 1x1 conv),
* **decoder** -- AdaIN (eq. 2) + ResNet1D-18 + ``W`` decode (eq. 3) into the output,
* **end to end** -- :meth:`engine.inference.Animator.animate` on a waveform,

and the peak memory of the process (``ru_maxrss``; on CUDA also ``torch.cuda.max_memory_allocated``).
Each (device, length) runs in a fresh subprocess so peaks do not leak between rows.  The output
frames go to a sink that keeps nothing (as when streaming to a file), so the memory column shows
the engine's own working set: it must not grow with the audio length.

The model is ``--checkpoint`` (default: the bundled one); without a checkpoint a randomly
initialised default-size model on the default head is timed (speed does not depend on weights).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "bench_one"]


class _NullSink:
    """``out[a:b] = frames`` that keeps only a checksum (frames streamed away)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self.total = 0.0

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.total += float(value[:, :1].sum())


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced, syllable-modulated buzz + noise, built in 10 s blocks (small temporaries, so the
    benchmark's own set-up does not dominate the peak-memory column)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    out = np.empty(n, np.float32)
    block = 160000
    phase = 0.0
    for s0 in range(0, n, block):
        t = np.arange(s0, min(n, s0 + block)) / 16000.0
        f0 = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
        ph = phase + 2 * np.pi * np.cumsum(f0) / 16000
        phase = float(ph[-1])
        syll = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
        voiced = sum(np.sin(k * ph) / k for k in range(1, 8))
        out[s0:s0 + len(t)] = 0.1 * syll * voiced + 0.01 * rng.standard_normal(len(t))
    return out


def _animator(checkpoint: str | None, device: str):
    import torch
    from engine.inference import DEFAULT_CHECKPOINT, Animator
    if checkpoint or DEFAULT_CHECKPOINT.is_file():
        return Animator.from_checkpoint(checkpoint or "default", device=device), "checkpoint"
    from engine.encoders import build_encoder
    from engine.models.composite_regional import CompositeRegionalConfig, CompositeRegionalModel
    from engine.topology import Topology
    head = Path(__file__).resolve().parent / "assets" / "default_head.obj"
    if head.is_file():
        topo = Topology.load(head)
    else:  # no assets yet: a 5,600-vertex stand-in of the same size
        verts = np.random.default_rng(0).standard_normal((5600, 3)).astype(np.float32)
        topo = Topology(vertices=verts, faces=np.array([[0, 1, 2]]), masks={}, name="random")
    model = CompositeRegionalModel(CompositeRegionalConfig(), torch.from_numpy(np.asarray(topo.vertices)))
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    return Animator(model, [build_encoder({"kind": "whisper"})], topo, 30.0, dev), "random-init"


def bench_one(device: str, seconds: float, checkpoint: str | None, threads: int) -> dict[str, Any]:
    import torch
    from engine.audio import num_frames
    from engine.models.windowing import predict_sequence
    if threads:
        torch.set_num_threads(threads)
    anim, what = _animator(checkpoint, device)
    cuda = anim.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    wav = _speechlike(seconds)
    T = num_frames(len(wav), anim.fps)
    # warm-up on 2 s (kernels, allocator, lazy init)
    anim.animate(wav[:32000], out=_NullSink((num_frames(32000, anim.fps), anim.num_vertices, 3)))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    feats = anim.features(wav, T)
    sync()
    t_enc = time.perf_counter() - t0
    style = anim.style_vector(None)
    t0 = time.perf_counter()
    predict_sequence(anim.model, feats, anim.model.template.detach().float().cpu(), style,
                     out=_NullSink((T, anim.num_vertices, 3)), window_frames=anim.window_frames)
    sync()
    t_dec = time.perf_counter() - t0
    t0 = time.perf_counter()
    anim.animate(wav, out=_NullSink((T, anim.num_vertices, 3)))
    sync()
    t_e2e = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row = {"device": anim.device.type, "seconds": seconds, "frames": T, "vertices": anim.num_vertices, "model": what,
           "threads": torch.get_num_threads(), "encoder_s_per_s": t_enc / seconds, "decoder_s_per_s": t_dec / seconds,
           "e2e_s_per_s": t_e2e / seconds, "peak_rss_mb": rss_mb}
    if cuda:
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        row["gpu"] = torch.cuda.get_device_name()
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("device", "audio s", "encoder s/s", "x RT", "decoder s/s", "x RT", "end-to-end s/s", "x RT", "peak RSS MB",
            "CUDA peak MB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['device']} | {r['seconds']:g} | error: {r['error']} |")
            continue
        cells = [r["device"], f"{r['seconds']:g}"]
        for k in ("encoder_s_per_s", "decoder_s_per_s", "e2e_s_per_s"):
            cells += [f"{r[k]:.4f}", f"{1.0 / max(r[k], 1e-12):.0f}x"]
        cells += [f"{r['peak_rss_mb']:.0f}", f"{r['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "all"])
    ap.add_argument("--durations", type=float, nargs="+", default=[5.0, 60.0, 600.0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--one", nargs=2, metavar=("DEVICE", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(bench_one(args.one[0], float(args.one[1]), args.checkpoint, args.threads)))
        return 0
    import torch
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            print("error: --device cuda but PyTorch sees no CUDA GPU", file=sys.stderr)
            return 2
        devices.remove("cuda")
    rows = []
    for dev in devices:
        for secs in args.durations:
            cmd = [sys.executable, "-m", "engine.bench", "--one", dev, str(secs), "--threads", str(args.threads)]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if r.returncode != 0:
                rows.append({"device": dev, "seconds": secs, "error": (r.stderr.strip().splitlines() or ["?"])[-1]})
            else:
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"  done {dev} {secs:g}s", file=sys.stderr)
    ok = [r for r in rows if "error" not in r]
    if ok:
        r0 = ok[0]
        print(f"model: {r0['model']}, V={r0['vertices']}, torch threads={r0['threads']}"
              + (f", GPU: {r0['gpu']}" if any('gpu' in r for r in ok) else ""))
    print(_table(rows))
    if args.json:
        from engine.fileio import atomic_write
        with atomic_write(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
