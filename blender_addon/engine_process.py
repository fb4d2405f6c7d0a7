"""Run the Parley engine in a child process and follow its JSON progress protocol.

Why a child process: inference needs torch, which Blender's bundled Python usually lacks,
and a long clip would freeze the UI if run in Blender's main thread. The engine prints one
JSON object per line on stdout (``--progress json``, see the interface contract):

    {"event": "progress", "stage": "encode", "fraction": 0.42}
    {"event": "done", "out": "...", "frames": T, "vertices": V, "fps": 30.0}
    {"event": "error", "message": "..."}          (exit code 2)

This module never imports ``bpy`` so it can be tested, and used by ``batch.py``, with any
Python. Lines are read by a background thread into a queue so :meth:`EngineJob.poll` never
blocks the caller (a Blender modal timer calls it a few times per second).
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Python modules the engine needs in the interpreter that runs it.
ENGINE_PROBE_CODE = (
    "import json, torch, engine; "
    "print(json.dumps({'torch': torch.__version__, 'cuda': bool(torch.cuda.is_available()), "
    "'engine': getattr(engine, '__version__', '?')}))"
)


class EngineError(RuntimeError):
    """The engine could not be started or reported a failure; the message is for the user."""


@dataclass
class AnimateRequest:
    """Everything one ``python -m engine animate`` run needs (paths are absolute)."""

    audio: str
    out: str
    checkpoint: str | None = None  # None = the engine's default checkpoint
    template: str | None = None
    style: str | None = None
    fps: float | None = None
    device: str = "auto"
    postprocess: str | None = None  # --postprocess lipclose|none; None = the engine's default (lipclose)
    transcript: str | None = None  # --transcript: the words spoken (a text file), which time the lip closures


def build_animate_command(python: str, req: AnimateRequest, entry: Sequence[str] = ("-m", "engine")) -> list[str]:
    """The argument vector for one animate run (no shell: paths with spaces are safe).
    ``entry`` is what follows the interpreter; tests point it at a stand-in engine script."""
    cmd = [python, *entry, "animate", "--audio", req.audio, "--out", req.out]
    if req.checkpoint:
        cmd += ["--checkpoint", req.checkpoint]
    if req.template:
        cmd += ["--template", req.template]
    if req.style:
        cmd += ["--style", req.style]
    if req.fps:
        cmd += ["--fps", _fmt_float(req.fps)]
    if req.postprocess:
        cmd += ["--postprocess", req.postprocess]
    if req.transcript:
        cmd += ["--transcript", req.transcript]
    cmd += ["--device", req.device.lower(), "--progress", "json"]
    return cmd


def transcript_beside(audio: str, postprocess: str | None) -> str | None:
    """The line's transcript by the dialogue-pipeline convention: ``line.txt`` next to ``line.wav``
    (None if there is none, or if the lips are not being closed, which is all it is used for)."""
    if postprocess == "none":
        return None
    path = os.path.splitext(audio)[0] + ".txt"
    return path if os.path.isfile(path) else None


def _fmt_float(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def engine_env(engine_root: str | None, extra_paths: Sequence[str] = ()) -> dict[str, str]:
    """Environment for the child: ``engine_root`` (folder holding the ``engine`` package) and
    the add-on's private dependency folder go first on PYTHONPATH; output is unbuffered so
    progress lines arrive as they are printed."""
    env = dict(os.environ)
    paths = [p for p in [engine_root, *extra_paths] if p and os.path.isdir(p)]
    old = env.get("PYTHONPATH")
    if old:
        paths.append(old)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    # Blender sets PYTHONHOME-like variables for its own Python; a user-chosen venv must not see them.
    for var in ("PYTHONHOME", "PYTHONNOUSERSITE"):
        env.pop(var, None)
    return env


def parse_line(line: str) -> dict[str, Any] | None:
    """One protocol event, or None for a line that is not a JSON object with an ``event``
    (warnings from libraries end up on stdout sometimes; they go to the log instead)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        return None
    return obj


def probe_interpreter(python: str, env: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``import torch, engine`` in ``python``; returns {'ok': bool, 'torch', 'cuda', 'error'}.
    Used to decide whether Blender's own Python can run the engine and to list devices."""
    try:
        proc = subprocess.run(
            [python, "-c", ENGINE_PROBE_CODE], env=env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": f"could not run {python}: {exc}"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        return {"ok": False, "error": tail[-1] if tail else f"exit code {proc.returncode}"}
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            info = json.loads(line)
        except ValueError:
            continue
        if isinstance(info, dict):
            info["ok"] = True
            return info
    return {"ok": False, "error": "the probe printed nothing"}


@dataclass
class JobState:
    """What the caller needs after each poll."""

    stage: str = "start"
    fraction: float = 0.0
    finished: bool = False
    ok: bool = False
    result: dict[str, Any] = field(default_factory=dict)  # the 'done' event
    message: str = ""  # error for the user when finished and not ok
    warnings: list[str] = field(default_factory=list)  # the engine's 'warning' events (the line still baked)


class EngineJob:
    """One engine child process. ``start`` → repeated ``poll`` → finished; ``cancel`` kills."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None):
        self.cmd = list(cmd)
        self.env = env
        self.cwd = cwd
        self.state = JobState()
        self.log: deque[str] = deque(maxlen=200)  # non-protocol stdout + stderr, for error messages
        self.stages: list[str] = []  # progress stages in the order they were first reported
        self._proc: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._open_streams = 0
        self._error_event: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> EngineJob:
        try:
            self._proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                encoding="utf-8", errors="replace",
            )
        except OSError as exc:
            raise EngineError(f"Could not start the engine with '{self.cmd[0]}': {exc}. "
                              "Check the interpreter path in the Parley preferences.") from exc
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            assert stream is not None
            t = threading.Thread(target=self._pump, args=(name, stream), daemon=True)
            t.start()
            self._threads.append(t)
            self._open_streams += 1
        return self

    def _pump(self, name: str, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put((name, line))
        finally:
            self._queue.put((name, None))

    def poll(self) -> JobState:
        """Drain available output without blocking; update and return the state."""
        st = self.state
        if st.finished or self._proc is None:
            return st
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            self._handle(name, line)
        if self._open_streams <= 0 and self._proc.poll() is not None:
            self._finish(self._proc.returncode)
        return st

    def wait(self, timeout: float | None = None, interval: float = 0.05,
             on_progress: Any = None) -> JobState:
        """Synchronous use (batch mode, tests, the operator's ``execute``): poll until finished."""
        return wait_for_job(self, timeout, interval, on_progress)

    def cancel(self, grace: float = 3.0) -> None:
        """Terminate the child (then kill it if it ignores SIGTERM) and mark the job cancelled."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        for t in self._threads:
            t.join(timeout=1.0)
        if not self.state.finished:
            self.state.finished = True
            self.state.ok = False
            self.state.message = "Cancelled."

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- protocol ------------------------------------------------------------------------
    def _handle(self, name: str, line: str) -> None:
        event = parse_line(line) if name == "stdout" else None
        if event is None:
            if line.strip():
                self.log.append(line.rstrip())
            return
        kind = event["event"]
        if kind == "progress":
            self.state.stage = str(event.get("stage", self.state.stage))
            if self.state.stage not in self.stages:
                self.stages.append(self.state.stage)
            try:
                self.state.fraction = min(1.0, max(0.0, float(event.get("fraction", 0.0))))
            except (TypeError, ValueError):
                pass
        elif kind == "done":
            self.state.result = event
        elif kind == "warning":
            self.state.warnings.append(str(event.get("message", "")))
        elif kind == "error":
            self._error_event = str(event.get("message", "unknown engine error"))

    def _finish(self, returncode: int) -> None:
        st = self.state
        st.finished = True
        if returncode == 0 and st.result and self._error_event is None:
            out = st.result.get("out")
            if out and not os.path.exists(str(out)):
                st.message = f"The engine reported success but its output {out} does not exist."
            else:
                st.ok = True
                st.fraction = 1.0
                st.stage = "done"
            return
        if self._error_event:
            st.message = self._error_event
        elif returncode == 0:
            st.message = "The engine exited without reporting a result (is it an up-to-date Parley engine?)."
        else:
            st.message = f"The engine failed (exit code {returncode}).{crash_summary(list(self.log))}"
            if self.log:  # the whole output stays available to whoever reads the console
                print("Parley engine output:\n" + "\n".join("  engine| " + ln for ln in self.log),
                      file=sys.stderr, flush=True)


def wait_for_job(job: Any, timeout: float | None, interval: float, on_progress: Any = None) -> JobState:
    """Poll ``job`` (an :class:`EngineJob` or a warm engine's job: ``poll``, ``cancel``, ``state``)
    until it finishes, reporting each new (stage, fraction); past ``timeout`` s it is cancelled."""
    t0 = time.monotonic()
    last: tuple[str | None, float | None] = (None, None)
    while not job.poll().finished:
        if on_progress is not None and (job.state.stage, job.state.fraction) != last:
            last = (job.state.stage, job.state.fraction)
            on_progress(job.state)
        if timeout is not None and time.monotonic() - t0 > timeout:
            job.cancel()
            job.state.message = f"The engine did not finish within {timeout:.0f} s and was stopped."
            break
        time.sleep(interval)
    return job.state


def crash_summary(log: list[str]) -> str:
    """One readable line about a crash: the exception of a Python traceback (its last line,
    never the frames), else the last output lines."""
    lines = [ln for ln in log if ln.strip()]
    if not lines:
        return ""
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        exc = next((ln for ln in reversed(lines) if not ln.startswith((" ", "\t", "Traceback"))), lines[-1])
        return f" {exc.strip()}"
    return " Last output: " + " | ".join(lines[-3:])


def default_python() -> str:
    """The interpreter running this code (Blender's own Python inside Blender)."""
    return sys.executable


def find_engine_root(addon_dir: str | os.PathLike[str]) -> str | None:
    """Folder that contains the ``engine`` package: the add-on itself once built (the engine is
    bundled inside the extension zip) or the repository root when run from a source checkout."""
    here = Path(addon_dir)
    for cand in (here, here.parent):
        if (cand / "engine" / "__init__.py").is_file():
            return str(cand)
    return None
