"""Stand-in for ``python -m engine animate`` speaking the same CLI and progress protocol.

Used by the add-on tests for what the real engine cannot be made to do on demand: fail after
some progress, or run slowly enough to be cancelled. Deterministic output: the template (or the
checkpoint's topology vertices) plus small per-frame sinusoidal offsets.

Behaviour switches (environment): PARLEY_FAKE_FAIL=1 → error event + exit 2 after some progress;
PARLEY_FAKE_CRASH=1 → traceback on stderr, exit 1, no protocol; PARLEY_FAKE_SLEEP=<s> → sleep
between progress lines (for cancel tests); PARLEY_FAKE_PIDFILE=<path> → write own pid there;
PARLEY_FAKE_ARGV=<path> → append the request's arguments there as one JSON line (pass-through tests).
``--transcript F`` → a warning event naming F (the real engine warns only when it cannot use it;
the fake always does, so the add-on's warning path can be checked).

``fake_engine.py serve`` is the warm engine's stand-in: the real protocol
(:class:`engine.serve.Server`) with this fake work as the request handler, so cancel takes
effect at the fake's progress lines exactly as at the real engine's. There PARLEY_FAKE_CRASH=1
kills the whole process during a request (traceback on stderr, exit 1), as a real crash would.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def read_obj_vertices(path: str) -> np.ndarray:
    with open(path) as fh:
        return np.array([[float(x) for x in ln.split()[1:4]] for ln in fh if ln.startswith("v ")], np.float32)


def checkpoint_vertices(path: str) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(path)["topology.vertices"].astype(np.float32)


def fake_frames(template: np.ndarray, t_count: int) -> np.ndarray:
    t = np.arange(t_count, dtype=np.float32)[:, None, None]
    v = np.arange(len(template), dtype=np.float32)[None, :, None]
    axis = np.array([1.0, 0.5, -0.25], np.float32)[None, None, :]
    return (template[None] + 0.02 * np.sin(0.3 * t + 0.1 * v) * axis).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return serve()
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--audio", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint")
    p.add_argument("--template")
    p.add_argument("--style")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", default="json")
    p.add_argument("--postprocess", choices=["lipclose", "none"])
    p.add_argument("--transcript")
    a = p.parse_args(argv)
    if os.environ.get("PARLEY_FAKE_ARGV"):
        with open(os.environ["PARLEY_FAKE_ARGV"], "a") as fh:
            fh.write(json.dumps(list(argv) if argv is not None else sys.argv[1:]) + "\n")
    import soundfile as sf  # here, not at the top: tests import fake_frames where these are missing

    from engine.audio import num_frames
    from engine.exporters import write_pc2

    if os.environ.get("PARLEY_FAKE_PIDFILE"):
        with open(os.environ["PARLEY_FAKE_PIDFILE"], "w") as fh:
            fh.write(str(os.getpid()))
    delay = float(os.environ.get("PARLEY_FAKE_SLEEP", "0"))
    if os.environ.get("PARLEY_FAKE_CRASH"):
        if SERVING:  # a real crash of the warm process, not an exception its server would report
            import traceback

            try:
                raise RuntimeError("simulated crash inside the engine")
            except RuntimeError:
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
            os._exit(1)
        raise RuntimeError("simulated crash inside the engine")
    print("some library warning that is not JSON", flush=True)
    if a.transcript:
        emit(event="warning", message=f"fake engine: transcript {os.path.basename(a.transcript)} not used")
    info = sf.info(a.audio)
    t_count = num_frames(int(round(info.frames * 16000 / info.samplerate)), a.fps)
    for i in range(5):
        emit(event="progress", stage="encode", fraction=i / 5)
        time.sleep(delay)
    if os.environ.get("PARLEY_FAKE_FAIL"):
        emit(event="error", message="simulated engine failure: the audio is silent")
        return 2
    template = read_obj_vertices(a.template) if a.template else checkpoint_vertices(a.checkpoint)
    frames = fake_frames(template, t_count)
    emit(event="progress", stage="decode", fraction=1.0)
    write_pc2(a.out, frames, fps=a.fps)
    emit(event="progress", stage="write", fraction=1.0)
    emit(event="done", out=a.out, frames=t_count, vertices=len(template), fps=a.fps)
    return 0


SERVING = False


def serve() -> int:
    """The warm engine's protocol around the fake work (see the module docstring)."""
    global SERVING
    from engine.serve import Server, protect_stdout

    SERVING = True
    if os.environ.get("PARLEY_FAKE_PIDFILE"):
        with open(os.environ["PARLEY_FAKE_PIDFILE"], "w") as fh:
            fh.write(str(os.getpid()))
    return Server(handler=main, out=protect_stdout()).run(preload=lambda: {"device": "fake"})


if __name__ == "__main__":
    raise SystemExit(main())
