"""The warm engine: one ``python -m engine serve`` child kept alive for the whole Blender session.

Why: a fresh ``python -m engine animate`` per click pays ~4 s of imports and model loading
before it hears the audio. The add-on starts one server (in the background: ``Popen`` returns at
once and the model loads while the user carries on) and sends every Generate, dialogue line and
``batch.py`` clip to it as a request (protocol: :mod:`engine.serve`). No ``bpy`` here, so
batch mode and the tests use it from any Python.

Lifecycle (the owner is this module: :func:`submit` / :func:`shutdown`):

* started on first use, or at add-on enable when the preference says so;
* reused while the interpreter, the engine entry and the environment stay the same, restarted
  when they change (another Engine Python in the preferences);
* a request's ``cancel`` asks the server to stop it (it does, at its next progress event); a
  server that does not answer within ``grace`` seconds is killed;
* a server that died (crash, OOM killer, someone's ``kill``) fails the request it was running
  with its exit code and last error line; the next request starts a new one, and
  :func:`take_notice` says once that it had stopped;
* stopped by the add-on's ``unregister``, at interpreter exit (``atexit``), and by EOF on its
  stdin if Blender dies without either.

A :class:`WarmJob` has the interface of :class:`engine_process.EngineJob` (``poll``, ``wait``,
``cancel``, ``state``, ``running``, ``pid``), so sessions and operators do not care which ran.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import IO, Any

from .engine_process import (
    EngineError,
    JobState,
    crash_summary,
    parse_line,
    wait_for_job,
)

__all__ = ["WarmEngine", "WarmJob", "current", "shutdown", "start", "submit", "take_notice"]


class WarmEngine:
    """One ``serve`` child process: requests are written to its stdin; its stdout events are
    read by a thread into a queue and dispatched to the jobs (by id) in the caller's thread."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str] | None, key: tuple[Any, ...]):
        self.cmd = list(cmd)
        self.env = env
        self.key = key
        self.log: deque[str] = deque(maxlen=200)
        self.ready: dict[str, Any] | None = None  # the 'ready' event once the model is loaded
        self.started_at = 0.0
        self.ready_after: float | None = None  # seconds from Popen to 'ready' read (bench)
        self.jobs: dict[str, WarmJob] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 0
        self._ids = itertools.count(1)
        self.death_reported = False  # a job was failed with the death message
        self._write_lock = threading.Lock()

    # -- process -------------------------------------------------------------------------
    def start(self) -> WarmEngine:
        self.started_at = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.cmd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, bufsize=1, encoding="utf-8", errors="replace")
        except OSError as exc:
            raise EngineError(f"Could not start the engine with '{self.cmd[0]}': {exc}. "
                              "Check the interpreter path in the Parley preferences.") from exc
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            assert stream is not None
            threading.Thread(target=self._pump, args=(name, stream), daemon=True,
                             name=f"parley-warm-{name}").start()
            self._open_streams += 1
        return self

    def _pump(self, name: str, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put((name, line))
        finally:
            self._queue.put((name, None))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stop(self, grace: float = 2.0) -> None:
        """Ask the server to exit (EOF on its stdin), kill it if it does not; fail open jobs."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=grace)
        for job in list(self.jobs.values()):
            job._end(False, "The engine was stopped.")
        self.jobs.clear()

    def kill(self) -> None:
        """Ours, not a crash: the next request restarts it without a notice."""
        self.death_reported = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)

    # -- requests ------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise EngineError("The engine is not running.")
        with self._write_lock:
            try:
                proc.stdin.write(json.dumps(msg) + "\n")
                proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise EngineError(f"The engine stopped accepting requests ({exc}).") from exc

    def submit(self, argv: Sequence[str]) -> WarmJob:
        rid = f"r{next(self._ids)}"
        job = WarmJob(self, rid)
        self.jobs[rid] = job
        try:
            self.send({"id": rid, "argv": list(argv)})
        except EngineError:
            if self._proc is None or self._proc.poll() is None:
                self.jobs.pop(rid, None)
                raise
            # it died before reading the request (e.g. a missing package at import): the job
            # fails at its first poll with the exit code and the error line, like any crash
        return job

    def drain(self) -> None:
        """Dispatch the output read so far; notice a dead server (fails its open jobs)."""
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            event = parse_line(line) if name == "stdout" else None
            if event is None:
                if line.strip():
                    self.log.append(line.rstrip())
                continue
            job = self.jobs.get(str(event.get("id", "")))
            if job is not None:
                job._handle(event)
                if job.state.finished:
                    self.jobs.pop(job.rid, None)
            elif event["event"] == "ready":
                self.ready = event
                self.ready_after = time.monotonic() - self.started_at
            elif event["event"] in ("warning", "error"):
                self.log.append(f"{event['event']}: {event.get('message', '')}")
        if self._open_streams <= 0 and self._proc is not None and self._proc.poll() is not None and self.jobs:
            msg = self.death_message()
            self.death_reported = True
            for job in list(self.jobs.values()):
                job._end(False, msg)
            self.jobs.clear()

    def death_message(self) -> str:
        return f"The engine failed (exit code {self.returncode}).{crash_summary(list(self.log))}"

    def dead_and_drained(self) -> bool:
        return self._open_streams <= 0 and not self.alive


class WarmJob:
    """One request to a :class:`WarmEngine`, with :class:`engine_process.EngineJob`'s interface."""

    def __init__(self, engine: WarmEngine, rid: str):
        self.engine = engine
        self.rid = rid
        self.state = JobState()
        self.stages: list[str] = []
        self.started = False  # the server began it ('start' event): it may be touching files
        self.engine_seconds: float | None = None  # the server's own wall time for it ('end' event)
        self.engine_cpu_seconds: float | None = None  # and its CPU time (all threads)
        self._error: str | None = None

    @property
    def log(self) -> deque[str]:
        return self.engine.log

    @property
    def pid(self) -> int | None:
        return self.engine.pid

    @property
    def running(self) -> bool:
        return not self.state.finished and self.engine.alive

    def poll(self) -> JobState:
        if not self.state.finished:
            self.engine.drain()
        return self.state

    def wait(self, timeout: float | None = None, interval: float = 0.02, on_progress: Any = None) -> JobState:
        return wait_for_job(self, timeout, interval, on_progress)

    def cancel(self, grace: float = 5.0) -> None:
        """Ask the server to stop this request. One that has not started yet is skipped by the
        server (it touches nothing), so this returns at once even while the model still loads;
        a running one is waited for (up to ``grace`` s, so the caller may then delete the
        request's files) and a server that does not stop it in time is killed."""
        if self.state.finished:
            return
        eng = self.engine
        try:
            eng.send({"cancel": self.rid})
        except EngineError:
            pass
        eng.drain()
        t0 = time.monotonic()
        while self.started and self.rid in eng.jobs and not eng.dead_and_drained() and time.monotonic() - t0 < grace:
            eng.drain()
            time.sleep(0.01)
        if self.started and self.rid in eng.jobs and eng.alive:
            print(f"Parley: the engine did not stop request {self.rid} within {grace:.0f} s; killing it",
                  file=sys.stderr, flush=True)
            eng.kill()
        eng.jobs.pop(self.rid, None)
        self._end(False, "Cancelled.")

    # -- protocol ------------------------------------------------------------------------
    def _handle(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        st = self.state
        if kind == "start":
            self.started = True
        elif kind == "progress":
            st.stage = str(event.get("stage", st.stage))
            if st.stage not in self.stages:
                self.stages.append(st.stage)
            try:
                st.fraction = min(1.0, max(0.0, float(event.get("fraction", 0.0))))
            except (TypeError, ValueError):
                pass
        elif kind == "done":
            st.result = event
        elif kind == "warning":
            st.warnings.append(str(event.get("message", "")))
        elif kind == "error":
            self._error = self._error or str(event.get("message", "unknown engine error"))
        elif kind == "end":
            self.engine_seconds = event.get("seconds")
            self.engine_cpu_seconds = event.get("cpu_seconds")
            status = event.get("status")
            if status == "ok" and st.result:
                out = st.result.get("out")
                if out and not os.path.exists(str(out)):
                    self._end(False, f"The engine reported success but its output {out} does not exist.")
                else:
                    self._end(True, "")
            elif status == "cancelled":
                self._end(False, "Cancelled.")
            else:
                self._end(False, self._error or "The engine ended the request without a result.")

    def _end(self, ok: bool, message: str) -> None:
        st = self.state
        if st.finished:
            return
        st.finished, st.ok, st.message = True, ok, message
        if ok:
            st.fraction, st.stage = 1.0, "done"


# ------------------------------------------------------------------------------ the one owner
_ENGINE: WarmEngine | None = None
_NOTICE: list[str] = []  # "the engine had stopped" messages not yet shown


def _key(python: str, entry: Sequence[str], env: dict[str, str] | None) -> tuple[Any, ...]:
    return (python, tuple(entry), tuple(sorted((env or {}).items())))


def _option(argv: Sequence[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def start(python: str, entry: Sequence[str], env: dict[str, str] | None,
          checkpoint: str | None = None, device: str | None = None) -> WarmEngine:
    """The running server for this interpreter/entry/environment, started if needed (returns at
    once: the model loads in the background)."""
    global _ENGINE
    key = _key(python, entry, env)
    eng = _ENGINE
    if eng is not None and eng.key == key and eng.alive:
        return eng
    if eng is not None:
        eng.drain()
        if not eng.alive and eng.key == key and not eng.death_reported:  # died while nobody waited for it
            log = list(eng.log)
            why = crash_summary(log) if any(ln.startswith("Traceback") for ln in log) else ""
            _NOTICE.append(f"the engine had stopped (exit code {eng.returncode}{';' + why if why else ''}); "
                           "it was restarted")
        eng.stop()
        _ENGINE = None
    cmd = [python, *entry, "serve"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    if device:
        cmd += ["--device", device]
    _ENGINE = WarmEngine(cmd, env, key).start()
    return _ENGINE


def submit(prefix: Sequence[str], argv: Sequence[str], env: dict[str, str] | None) -> WarmJob:
    """Send one CLI command (``argv`` without the interpreter ``prefix`` = [python, *entry]) to
    the warm server, starting or restarting it as needed."""
    python, entry = prefix[0], list(prefix[1:])
    return start(python, entry, env, _option(argv, "--checkpoint"), _option(argv, "--device")).submit(argv)


def current() -> WarmEngine | None:
    return _ENGINE


def take_notice() -> str | None:
    """Once: why the previous server was replaced (it had died while idle), for a report."""
    return _NOTICE.pop(0) if _NOTICE else None


def shutdown() -> None:
    """Stop the server (add-on disable, interpreter exit, tests)."""
    global _ENGINE
    eng, _ENGINE = _ENGINE, None
    if eng is not None:
        eng.stop()
    _NOTICE.clear()


atexit.register(shutdown)
