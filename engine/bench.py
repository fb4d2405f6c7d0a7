"""Side-by-side speed and memory benchmark: ``python -m engine.bench``.

One run, one process (cold starts excepted, which need fresh children), every method measured
under the same conditions so the ratios between rows mean something on a shared machine:

* **methods** -- every shipped checkpoint (``engine/assets/*.safetensors``: the default, SelfTalk,
  the FaceFormer baseline, ...) plus any ``--checkpoints`` files (e.g. a candidate default);
* **lengths** -- ``--durations`` (default 1, 5, 20, 60 and 600 s of speech-like audio);
* **compute** -- encoder, decoder and end to end (encoder + style + decoder into a sink that keeps
  nothing, as when streaming to a file) as real-time factors (audio s / compute s), and the end
  to end time of ``--peer`` (FaceFormer) divided by each method's: "× FaceFormer";
* **peak memory** -- the process's resident set sampled every 5 ms during each row (all loaded
  models included, so it is an upper bound for one method), and on CUDA
  ``torch.cuda.max_memory_allocated``;
* **warm request** -- a 5 s line animated into a PC2 file by an already loaded model, median of
  3: the latency a warm engine (the add-on's long-lived process) pays per click, measured here
  in-process.  ``warm_request`` is the hook a server benchmark can call with its own client;
* **cold CLI** -- wall and CPU seconds of a fresh ``python -m engine animate`` on a 5 s line
  writing a PC2, and the same run split into stages (:mod:`engine.bench_cold`);
* ``--hour`` (not in the default run: ~3-4 min of compute and a 7 GB PC2) -- one hour of audio
  through the cold CLI into a PC2: wall time, real-time factor and the child's peak memory.

``--device cuda`` runs everything on the GPU (``make bench-gpu``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PeakRSS", "bench_method", "hour_row", "main", "speechlike", "warm_request"]

DEFAULT_DURATIONS = (1.0, 5.0, 20.0, 60.0, 600.0)
WARM_SECONDS = 5.0


class _NullSink:
    """``out[a:b] = frames`` that keeps only a checksum (frames streamed away)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        self.total = 0.0

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.total += float(value[:, :1].sum())


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms from
    ``/proc/self/statm``; where that does not exist, the process's lifetime peak ``ru_maxrss``)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss_mb(self) -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page / 2**20
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def _loop(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> "PeakRSS":
        self.peak_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
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


def _write_wav(path: Path, seconds: float) -> Path:
    """Speech-like audio as 16-bit WAV, written in blocks (an hour is 115 MB, never all in RAM)."""
    import soundfile as sf

    with sf.SoundFile(str(path), "w", samplerate=16000, channels=1, subtype="PCM_16") as fh:
        done = 0.0
        while done < seconds:
            block = min(600.0, seconds - done)
            fh.write(speechlike(block, seed=int(done)))
            done += block
    return path


def _sync(anim: Any) -> None:
    if anim.device.type == "cuda":
        import torch
        torch.cuda.synchronize()


def warm_request(anim: Any, wav: np.ndarray, out: Path) -> float:
    """Seconds for one request to an already loaded model: audio -> PC2 file, as a warm engine
    serves a click (everything after the request arrives, nothing of the process start)."""
    from engine.audio import num_frames
    from engine.cli_animate import open_output

    t0 = time.perf_counter()
    T = num_frames(len(wav), anim.fps)
    with open_output(out, T, anim.num_vertices, anim.fps) as buf:
        anim.animate(wav, out=buf)
    _sync(anim)
    return time.perf_counter() - t0


def bench_method(anim: Any, durations: list[float], work: Path) -> list[dict[str, Any]]:
    """Rows of encoder / decoder / end-to-end seconds per audio second for one loaded model."""
    import torch

    from engine.audio import num_frames
    from engine.models.windowing import predict_sequence

    cuda = anim.device.type == "cuda"
    anim.animate(speechlike(2.0), out=_NullSink((num_frames(32000, anim.fps), anim.num_vertices, 3)))  # warm-up
    rows = []
    for secs in durations:
        wav = speechlike(secs)
        T = num_frames(len(wav), anim.fps)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem:
            _sync(anim)
            t0 = time.perf_counter()
            feats = anim.features(wav, T)
            _sync(anim)
            t1 = time.perf_counter()
            style = anim.style_vector(None)
            predict_sequence(anim.model, feats, anim.model.template.detach().float().cpu(), style,
                             out=_NullSink((T, anim.num_vertices, 3)), window_frames=anim.window_frames)
            _sync(anim)
            t2 = time.perf_counter()
        del feats
        row = {"seconds": secs, "frames": T, "encoder_s": t1 - t0, "decoder_s": t2 - t1, "e2e_s": t2 - t0,
               "peak_rss_mb": mem.peak_mb}
        if cuda:
            row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    wav = speechlike(WARM_SECONDS)
    times = [warm_request(anim, wav, work / "warm.pc2") for _ in range(3)]
    (work / "warm.pc2").unlink(missing_ok=True)
    rows.append({"seconds": WARM_SECONDS, "warm_request_s": statistics.median(times)})
    return rows


def hour_row(checkpoint: str, work: Path, device: str, seconds: float = 3600.0,
             postprocess: str = "lipclose") -> dict[str, Any]:
    """One cold ``python -m engine animate`` on ``seconds`` of audio into a PC2: wall time, real-time
    factor and the child's peak resident memory (``wait4``'s ``ru_maxrss``). ``postprocess`` is the
    CLI's (lipclose by default: its hama pass costs about 0.1 CPU s per audio second, one thread)."""
    import subprocess

    wav = _write_wav(work / "hour.wav", seconds)
    out = work / "hour.pc2"
    cmd = [sys.executable, "-m", "engine", "animate", "--audio", str(wav), "--out", str(out),
           "--checkpoint", checkpoint, "--device", device, "--progress", "none", "--postprocess", postprocess]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    size = out.stat().st_size if out.exists() else 0
    out.unlink(missing_ok=True)
    wav.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"hour run failed: {(err.strip().splitlines() or ['?'])[-1]}")
    return {"checkpoint": checkpoint, "postprocess": postprocess, "audio_s": seconds, "wall_s": wall, "x_rt": seconds / wall,
            "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "pc2_gb": size / 1e9}


# ----------------------------------------------------------------------------- report
def _x(s: float | None) -> str:
    if not s:
        return "–"
    x = 1.0 / s
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


def speed_table(results: dict[str, Any], peer: str | None) -> str:
    head = ["method", "window", "audio s", "encoder ×RT", "decoder ×RT", "end-to-end ×RT", "s per audio s",
            f"× {peer}" if peer else "", "peak RSS MB"]
    cuda = any("cuda_peak_mb" in r for m in results["methods"] for r in m.get("rows", []))
    if cuda:
        head.append("CUDA peak MB")
    head = [h for h in head if h]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_peer = {r["seconds"]: r for m in results["methods"] if m["name"] == peer for r in m.get("rows", [])
               if "e2e_s" in r}
    for secs in results["durations"]:
        for m in results["methods"]:
            if "error" in m:
                continue
            r = next((r for r in m["rows"] if r.get("seconds") == secs and "e2e_s" in r), None)
            if r is None:
                continue
            s = secs
            cells = [m["name"], m["window"], f"{secs:g}", _x(r["encoder_s"] / s), _x(r["decoder_s"] / s),
                     _x(r["e2e_s"] / s), f"{r['e2e_s'] / s:.4f}"]
            if peer:
                p = by_peer.get(secs)
                cells.append(f"{p['e2e_s'] / r['e2e_s']:.1f}×" if p else "–")
            cells.append(f"{r['peak_rss_mb']:.0f}")
            if cuda:
                cells.append(f"{r.get('cuda_peak_mb', float('nan')):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def start_table(results: dict[str, Any]) -> str:
    from engine.bench_cold import STAGES

    head = ["method", "load s (in-process)", f"warm {WARM_SECONDS:g} s request s", "cold CLI wall s",
            "cold CLI CPU s", "interpreter"] + list(STAGES)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in results["methods"]:
        if "error" in m:
            lines.append(f"| {m['name']} | error: {m['error']} |")
            continue
        warm = next((r["warm_request_s"] for r in m["rows"] if "warm_request_s" in r), None)
        cold, st = m.get("cold", {}), m.get("stages", {})
        cells = [m["name"], f"{m['load_s']:.2f}", f"{warm:.3f}" if warm is not None else "–",
                 f"{cold['cold_cli_wall_s']:.2f}" if cold else "–", f"{cold['cold_cli_cpu_s']:.2f}" if cold else "–"]
        cells += [f"{st[k]:.2f}" if k in st else "–" for k in ("interpreter",) + STAGES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _methods(extra: list[str]) -> list[tuple[str, str]]:
    """(row name, checkpoint path) of every shipped file (aliases once) and the extra ones."""
    from engine.checkpoint import shipped_checkpoints

    seen: dict[str, str] = {}
    for name, path in shipped_checkpoints().items():
        if path.stem == name:
            seen[name] = str(path)
    for p in extra:
        stem = Path(p).stem if Path(p).stem != "model" else Path(p).parent.name   # runs/<run>/model.safetensors
        seen[stem if stem not in seen else str(p)] = str(p)
    return list(seen.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--durations", type=float, nargs="+", default=list(DEFAULT_DURATIONS))
    ap.add_argument("--checkpoints", nargs="*", default=[], help="extra checkpoint files to time beside the shipped ones")
    ap.add_argument("--only", nargs="*", default=None, help="time only these methods (names as in the table)")
    ap.add_argument("--peer", default="faceformer", help="method the '× peer' column divides by ('' to skip)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-CLI and stage timings (fresh processes)")
    ap.add_argument("--hour", action="store_true", help="also run 1 h of audio through the CLI into a PC2 (long)")
    ap.add_argument("--hour-seconds", type=float, default=3600.0, help=argparse.SUPPRESS)
    ap.add_argument("--hour-postprocess", choices=["lipclose", "none"], default="lipclose",
                    help="--hour: the CLI's --postprocess (default lipclose, as the CLI)")
    ap.add_argument("--workdir", default=None, help="scratch folder (the --hour PC2 needs ~7 GB)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    import torch

    from engine.bench_cold import cold_cli, cold_stages
    from engine.inference import Animator
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    methods = _methods(args.checkpoints)
    if args.only is not None:
        methods = [(n, p) for n, p in methods if n in args.only]
        if not methods:
            print(f"error: --only {args.only} matches none of the methods", file=sys.stderr)
            return 2
    names = [n for n, _ in methods]
    peer = args.peer if args.peer in names else None
    results: dict[str, Any] = {"device": args.device, "durations": args.durations, "threads": torch.get_num_threads(),
                               "load_average_start": os.getloadavg()[0], "cpu_count": os.cpu_count(), "methods": []}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        line = _write_wav(work / "line5.wav", WARM_SECONDS)
        for name, path in methods:
            entry: dict[str, Any] = {"name": name, "checkpoint": path}
            try:
                t0 = time.perf_counter()
                anim = Animator.from_checkpoint(path, device=args.device)
                entry["load_s"] = time.perf_counter() - t0
                entry["window"] = "+".join(getattr(e.spec, "window", "full") for e in anim.encoders)
                entry["rows"] = bench_method(anim, args.durations, work)
                del anim
                if not args.no_cold:
                    entry["cold"] = cold_cli(line, path, work, args.device, args.threads)
                    entry["stages"] = cold_stages(line, path, work, args.device, args.threads)
            except Exception as exc:  # noqa: BLE001 - one broken method must not hide the others' rows
                entry["error"] = f"{type(exc).__name__}: {exc}"
            results["methods"].append(entry)
            print(f"  done {name}", file=sys.stderr, flush=True)
        if args.hour:
            default = dict(methods).get("default", methods[0][1])
            results["hour"] = hour_row(default, work, args.device, args.hour_seconds, args.hour_postprocess)
    results["load_average_end"] = os.getloadavg()[0]
    print(f"device: {args.device}" + (f" ({results['gpu']})" if "gpu" in results else "") + f", torch {torch.__version__}"
          + f", torch threads: {results['threads']}, load average {results['load_average_start']:.1f} -> "
          f"{results['load_average_end']:.1f} on {results['cpu_count']} CPUs")
    print(speed_table(results, peer))
    print()
    print(start_table(results))
    if "hour" in results:
        h = results["hour"]
        print(f"\n1 h row (--postprocess {h['postprocess']}): {h['audio_s']:g} s of audio -> PC2 ({h['pc2_gb']:.1f} GB) "
              f"in {h['wall_s']:.0f} s wall "
              f"= {h['x_rt']:.1f}× real time, {h['cpu_s']:.0f} CPU s, peak RSS {h['peak_rss_mb']:.0f} MB")
    if args.json:
        from engine.fileio import atomic_write
        with atomic_write(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if any("error" in m for m in results["methods"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
