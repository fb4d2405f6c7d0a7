"""``python -m engine serve``: a warm engine answering requests over stdin/stdout (JSON lines).

Why: every ``python -m engine animate`` pays ~4 s of imports and model loading before it
listens to a 5 s line.  The Blender add-on (and ``batch.py``) keeps one ``serve`` process
alive instead, so a click pays only the work itself.

Protocol (one JSON object per line, UTF-8; big arrays never travel on the pipe: requests name
files, and outputs are files written atomically by the commands themselves)::

    -> {"id": "r1", "argv": ["animate", "--audio", "a.wav", "--out", "a.pc2"]}   # any CLI command's arguments
    -> {"cancel": "r1"}                                                           # stop that request
    -> {"shutdown": true}                                    # (or EOF on stdin) cancel and exit 0
    <- {"event": "ready", "pid": 123, "version": "0.1.0", "device": "cpu", "checkpoint": "...", "seconds": 3.9, "cpu_seconds": 4.1}
    <- {"event": "start", "id": "r1"}                           # the request began (it may touch files now)
    <- {"event": "progress", "id": "r1", "stage": "encode", "fraction": 0.5}          # the CLI's events,
    <- {"event": "done", "id": "r1", "out": "a.pc2", "frames": 150, ...}              # tagged with the id
    <- {"event": "error", "id": "r1", "message": "..."}                               # this request failed
    <- {"event": "end", "id": "r1", "status": "ok|error|cancelled", "seconds": 0.41, "cpu_seconds": 0.7}  # always last

Requests run one at a time, in order, in the main thread, through the very handlers the CLI
uses (:func:`engine.cli.build_parser`), so a warm request and a ``python -m engine animate``
run give identical files.  What the server adds is an :class:`AnimatorCache` (the loaded model
and encoders, keyed by checkpoint file and device) and cancellation: a reader thread takes
``cancel`` lines while a request runs, and the request stops at its next progress event (after
the current encoder segment or decoder window).  A failing request (bad arguments, bad audio,
an unexpected exception) ends with ``error``; the server lives on.  The process's file
descriptor 1 is moved to stderr at start, so nothing but protocol lines reaches the pipe
(library prints and C-level output go to stderr).
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["AnimatorCache", "Cancelled", "Server", "run_cli_request"]


class Cancelled(Exception):
    """Raised inside a request at its next progress event after a ``cancel`` line arrived."""


@dataclass
class AnimatorCache:
    """The loaded :class:`engine.inference.Animator`, keyed by checkpoint file (path, size, mtime)
    and device.  One entry: a request for another checkpoint (or a retrained file at the same
    path) replaces it, so memory stays that of one model."""

    key: tuple[Any, ...] | None = None
    animator: Any = None
    loads: int = 0

    def get(self, checkpoint: str, device: str = "auto") -> Any:
        from engine.checkpoint import resolve_checkpoint_path
        from engine.inference import Animator, resolve_device

        path = resolve_checkpoint_path(checkpoint)
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns, str(resolve_device(device)))
        if key != self.key:
            self.animator, self.key = None, None  # free the old model before loading the new one
            self.animator = Animator.from_checkpoint(path, device=device)
            self.key = key
            self.loads += 1
        return self.animator


def run_cli_request(argv: Sequence[str], animators: AnimatorCache) -> int:
    """Run one CLI command in this process with ``--progress json`` and the warm animators."""
    from engine.cli import build_parser

    argv = list(argv)
    if argv and argv[0] == "serve":
        raise ValueError("'serve' cannot be requested from a running server")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # argparse already printed the usage error to stderr
        raise ValueError(f"invalid arguments for the engine: {' '.join(argv)} (see the engine's log)") from None
    if getattr(args, "func", None) is None:
        raise ValueError("no command given (e.g. 'animate')")
    if hasattr(args, "progress"):
        args.progress = "json"
    args.animators = animators
    return int(args.func(args) or 0)


class _RequestStream:
    """``sys.stdout`` while a request runs: complete JSON event lines are tagged with the request's
    id and sent to the protocol pipe; anything else goes to stderr.  Every event is also where a
    pending cancel takes effect."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = ""
        self.encoding = "utf-8"
        self.errored = False  # the command reported its own error event

    def write(self, text: str) -> int:
        self.buf += text
        while "\n" in self.buf:
            line, self.buf = self.buf.split("\n", 1)
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        s = self.server
        try:
            obj = json.loads(line) if line.lstrip().startswith("{") else None
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            if s.current is not None:
                obj["id"] = s.current
            self.errored = self.errored or obj["event"] == "error"
            s.send(obj)
        elif line.strip():
            print(line, file=sys.stderr, flush=True)
        if s.cancel_requested():
            raise Cancelled()

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@dataclass
class Server:
    """Reads requests from ``stdin``, answers on ``out`` (see the module docstring).

    ``handler(argv) -> exit status`` does one request's work, printing its JSON events; the
    default runs the engine CLI with the warm :class:`AnimatorCache`.  Tests and the add-on's
    stand-in engine pass their own handler and keep this protocol."""

    handler: Callable[[list[str]], int] | None = None
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    out: IO[str] | None = None
    animators: AnimatorCache = field(default_factory=AnimatorCache)
    current: str | None = None
    _requests: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    _cancelled: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    # ------------------------------------------------------------------ output
    def send(self, obj: dict[str, Any]) -> None:
        assert self.out is not None
        with self._lock:
            self.out.write(json.dumps(obj) + "\n")
            self.out.flush()

    def cancel_requested(self) -> bool:
        with self._lock:
            return self._stopping.is_set() or (self.current is not None and self.current in self._cancelled)

    # ------------------------------------------------------------------ input (reader thread)
    def _read(self) -> None:
        try:
            for line in self.stdin:
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self.send({"event": "error", "message": f"unreadable request line: {line.strip()[:200]}"})
                    continue
                if "cancel" in msg:
                    with self._lock:
                        self._cancelled.add(str(msg["cancel"]))
                elif msg.get("shutdown"):
                    break
                else:
                    self._requests.put(msg)
        finally:  # EOF (the add-on or Blender went away) or shutdown: stop the current request too
            self._stopping.set()
            self._requests.put(None)

    # ------------------------------------------------------------------ main loop
    def run(self, preload: Callable[[], dict[str, Any]] | None = None,
            warmup: Callable[[], None] | None = None) -> int:
        """Serve until EOF/shutdown; returns the exit status (0).  ``preload`` runs before
        ``ready`` (loading the model); its failure is reported and requests load on demand.
        ``warmup`` runs after it only when no request is waiting (a first click already queued
        would only wait longer for it)."""
        if self.out is None:
            self.out = sys.stdout
        threading.Thread(target=self._read, name="parley-serve-stdin", daemon=True).start()
        t0 = time.perf_counter()
        info: dict[str, Any] = {}
        if preload is not None:
            try:
                info = preload()
            except Exception as exc:  # noqa: BLE001 - a bad default checkpoint must not stop the server
                self.send({"event": "warning", "message": f"could not preload the model: {exc}"})
        if warmup is not None and info and self._requests.empty():
            try:
                warmup()
            except Exception as exc:  # noqa: BLE001 - only an optimisation
                self.send({"event": "warning", "message": f"warm-up failed: {exc}"})
        self.send({"event": "ready", "pid": os.getpid(), "version": _version(),
                   "seconds": round(time.perf_counter() - t0, 3),
                   "cpu_seconds": round(time.process_time(), 3), **info})  # since the process started
        while True:
            msg = self._requests.get()
            if msg is None or self._stopping.is_set():
                return 0
            self._serve_one(msg)

    def _serve_one(self, msg: dict[str, Any]) -> None:
        rid = str(msg.get("id", ""))
        argv = msg.get("argv")
        t0, c0 = time.perf_counter(), time.process_time()
        status, message = "ok", ""
        with self._lock:
            self.current = rid
        real_stdout = sys.stdout
        stream = _RequestStream(self)
        sys.stdout = stream  # type: ignore[assignment]
        try:
            if not rid or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError('a request is {"id": "...", "argv": ["animate", ...]}')
            if self.cancel_requested():  # cancelled while queued: never started, touched nothing
                raise Cancelled()
            self.send({"event": "start", "id": rid})
            rc = (self.handler or self._engine_handler)(argv)
            if rc != 0:
                status, message = "error", f"the command ended with status {rc}"
        except Cancelled:
            status = "cancelled"
        except SystemExit as exc:  # a handler's sys.exit / argparse error: this request only
            status, message = "error", f"the command exited with status {exc.code} (see the engine's log)"
        except Exception as exc:  # noqa: BLE001 - one request's failure never ends the server
            from engine.cli import EXPECTED_ERRORS

            status = "error"
            message = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, EXPECTED_ERRORS):
                traceback.print_exc(file=sys.stderr)
                message = f"internal error: {type(exc).__name__}: {message}"
        finally:
            sys.stdout = real_stdout
            with self._lock:
                self.current = None
                self._cancelled.discard(rid)
        if status == "error" and not stream.errored:  # a command's own error message says more
            self.send({"event": "error", "id": rid, "message": message})
        self.send({"event": "end", "id": rid, "status": status, "seconds": round(time.perf_counter() - t0, 3),
                   "cpu_seconds": round(time.process_time() - c0, 3)})  # all threads: load-independent cost

    def _engine_handler(self, argv: list[str]) -> int:
        return run_cli_request(argv, self.animators)


def _version() -> str:
    import engine

    return str(getattr(engine, "__version__", "?"))


def protect_stdout() -> IO[str]:
    """Move the protocol to a private copy of fd 1 and point fd 1 at stderr: whatever else
    prints (libraries, C code) can no longer corrupt the protocol."""
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return proto


def preload_model(animators: AnimatorCache, checkpoint: str, device: str) -> Callable[[], dict[str, Any]]:
    """Load the checkpoint and encoders; returns what ``ready`` reports."""

    def load() -> dict[str, Any]:
        import engine.cli_animate  # noqa: F401 - import the request path now, not at the first click

        anim = animators.get(checkpoint, device)
        return {"checkpoint": str(animators.key[0]) if animators.key else checkpoint, "device": str(anim.device)}

    return load


def warm_model(animators: AnimatorCache) -> Callable[[], None]:
    """Run 1 s of silence through the loaded model, so the first real request does not pay
    torch's first-call costs."""

    def warm() -> None:
        import numpy as np

        if animators.animator is not None:
            animators.animator.animate(np.zeros(16000, np.float32))

    return warm
