"""``python -m engine serve``: the warm engine's protocol (engine/serve.py).

The protocol tests run the server around tests/blender/fake_engine.py's work (the same
:class:`engine.serve.Server`, a handler that sleeps between progress lines), so cancel timing
is controllable and each test takes about a second; one slow test runs the real engine and
checks that warm requests write exactly what a cold ``python -m engine animate`` writes.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
FAKE = str(ROOT / "tests" / "blender" / "fake_engine.py")
CKPT = str(ROOT / "engine" / "assets" / "default.safetensors")


class Serve:
    """A server child process with a reader thread: ``send`` lines, ``until`` an event."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        e = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1, env=e, cwd=str(ROOT))
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            self.events.put(json.loads(line))  # every stdout line must be a protocol event

    def send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.proc.stdin.flush()

    def until(self, pred: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Events up to and including the first one matching ``pred``."""
        seen, t0 = [], time.monotonic()
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise AssertionError(f"timed out; events so far {seen}; stderr: {self.stderr()[-2000:]}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(ev)
            if pred(ev):
                return seen

    def end_of(self, rid: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        return [e for e in self.until(lambda e: e.get("event") == "end" and e.get("id") == rid, timeout)
                if e.get("id") == rid]

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> int:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def _wav(path: Path, seconds: float = 1.0) -> str:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return str(path)


def _animate(rid: str, wav: str, out: Path) -> dict[str, Any]:
    return {"id": rid, "argv": ["animate", "--audio", wav, "--out", str(out), "--checkpoint", CKPT]}


@pytest.fixture
def fake_server(tmp_path: Path):
    servers: list[Serve] = []

    def make(**env: str) -> Serve:
        s = Serve([sys.executable, FAKE, "serve"], env)
        servers.append(s)
        ready = s.until(lambda e: e["event"] == "ready", 30)[-1]
        assert ready["pid"] == s.proc.pid
        return s

    yield make
    for s in servers:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def test_several_requests_in_a_row_are_answered_in_order_with_their_ids(fake_server, tmp_path: Path) -> None:
    s = fake_server()
    wav = _wav(tmp_path / "a.wav", 1.0)
    for i in range(3):
        s.send(_animate(f"r{i}", wav, tmp_path / f"o{i}.pc2"))
    for i in range(3):
        evs = s.end_of(f"r{i}")
        kinds = [e["event"] for e in evs]
        assert kinds[0] == "start" and kinds[-1] == "end" and "done" in kinds, kinds
        assert evs[-1]["status"] == "ok"
        assert next(e for e in evs if e["event"] == "done")["out"] == str(tmp_path / f"o{i}.pc2")
        assert (tmp_path / f"o{i}.pc2").stat().st_size > 24
    assert s.close() == 0  # EOF on stdin: clean exit
    # the fake prints a non-JSON line per request: it went to stderr, never onto the protocol pipe
    assert "some library warning that is not JSON" in s.stderr()
    assert all(line.startswith("{") for line in s.raw)


def test_cancel_stops_the_running_request_promptly_and_the_server_lives_on(fake_server, tmp_path: Path) -> None:
    s = fake_server(PARLEY_FAKE_SLEEP="0.5")  # 5 progress lines, 0.5 s apart
    wav = _wav(tmp_path / "a.wav")
    s.send(_animate("slow", wav, tmp_path / "slow.pc2"))
    s.until(lambda e: e.get("event") == "progress" and e.get("id") == "slow")
    t0 = time.monotonic()
    s.send({"cancel": "slow"})
    evs = s.end_of("slow", timeout=10)
    waited = time.monotonic() - t0
    assert evs[-1]["status"] == "cancelled", evs
    assert waited < 1.5, f"cancel took {waited:.2f} s (one progress step is 0.5 s)"
    assert not any(e["event"] == "done" for e in evs)
    assert not (tmp_path / "slow.pc2").exists()
    pid = s.proc.pid
    s.send(_animate("next", wav, tmp_path / "next.pc2"))
    assert s.end_of("next")[-1]["status"] == "ok"
    assert s.proc.pid == pid and s.proc.poll() is None


def test_a_cancelled_queued_request_never_starts(fake_server, tmp_path: Path) -> None:
    s = fake_server(PARLEY_FAKE_SLEEP="0.2")
    wav = _wav(tmp_path / "a.wav")
    s.send(_animate("first", wav, tmp_path / "first.pc2"))
    s.send(_animate("queued", wav, tmp_path / "queued.pc2"))
    s.send({"cancel": "queued"})
    assert s.end_of("first")[-1]["status"] == "ok"
    evs = s.end_of("queued")
    assert [e["event"] for e in evs] == ["end"] and evs[0]["status"] == "cancelled"
    assert not (tmp_path / "queued.pc2").exists()


def test_bad_requests_are_errors_and_the_server_lives_on(fake_server, tmp_path: Path) -> None:
    s = fake_server()
    wav = _wav(tmp_path / "a.wav")
    bad = [("{this is not json", "unreadable request line"),
           (json.dumps({"id": "x1", "argv": "animate --audio a.wav"}), 'a request is {"id"'),
           (json.dumps({"id": "x2", "argv": ["animate", "--bogus"]}), "exited with status 2"),
           (json.dumps({"id": "x3", "argv": ["animate", "--audio", str(tmp_path / "no.wav"), "--out", "o.pc2"]}),
            "internal error: ")]  # the fake's own exception: reported, not fatal
    for i, (line, why) in enumerate(bad):
        s.send(line)
        err = s.until(lambda e: e.get("event") == "error")[-1]
        assert why in err["message"], err
        s.send(_animate(f"ok{i}", wav, tmp_path / f"ok{i}.pc2"))  # the server still answers
        assert s.end_of(f"ok{i}")[-1]["status"] == "ok"
    assert s.proc.poll() is None


def test_shutdown_message_exits_cleanly(fake_server) -> None:
    s = fake_server()
    s.send({"shutdown": True})
    assert s.proc.wait(timeout=10) == 0


def test_eof_mid_request_cancels_it_and_exits(fake_server, tmp_path: Path) -> None:
    s = fake_server(PARLEY_FAKE_SLEEP="2")
    s.send(_animate("long", _wav(tmp_path / "a.wav"), tmp_path / "long.pc2"))
    s.until(lambda e: e.get("event") == "progress")
    t0 = time.monotonic()
    assert s.close() == 0
    assert time.monotonic() - t0 < 4.0
    assert not (tmp_path / "long.pc2").exists()


@pytest.mark.slow
def test_real_engine_warm_requests_match_the_cold_cli(tmp_path: Path) -> None:
    """The real model: ready once, then several requests (one failing) whose files are exactly
    those of a cold ``python -m engine animate``; the second request does not reload the model."""
    wav = _wav(tmp_path / "a.wav", 2.0)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cold = tmp_path / "cold.pc2"
    subprocess.run([sys.executable, "-m", "engine", "animate", "--audio", wav, "--out", str(cold), "--device", "cpu",
                    "--progress", "none"], check=True, env=env, cwd=str(ROOT), capture_output=True)
    s = Serve([sys.executable, "-m", "engine", "serve", "--device", "cpu"])
    try:
        ready = s.until(lambda e: e["event"] == "ready", 180)[-1]
        assert ready["device"] == "cpu" and ready["checkpoint"].endswith("default.safetensors"), ready
        s.send({"id": "a", "argv": ["animate", "--audio", wav, "--out", str(tmp_path / "a.pc2"), "--device", "cpu"]})
        s.send({"id": "bad", "argv": ["animate", "--audio", str(tmp_path / "missing.wav"), "--out",
                                      str(tmp_path / "x.pc2")]})
        s.send({"id": "b", "argv": ["animate", "--audio", wav, "--out", str(tmp_path / "b.npy"), "--device", "cpu"]})
        a = s.end_of("a", 120)
        assert a[-1]["status"] == "ok", a
        bad = s.end_of("bad", 60)
        assert bad[-1]["status"] == "error" and "audio file not found" in bad[-2]["message"], bad
        b = s.end_of("b", 120)
        assert b[-1]["status"] == "ok", b
        assert (tmp_path / "a.pc2").read_bytes() == cold.read_bytes()
        from engine.exporters import read_animation

        frames_b, _ = read_animation(str(tmp_path / "b.npy"))
        frames_cold, _ = read_animation(str(cold))
        np.testing.assert_array_equal(frames_b, frames_cold)
        # speed (warm requests vs the cold start) is the bench's job, not a timed assertion here
        print(f"ready after {ready['seconds']} s; warm requests {a[-1]['seconds']} s, {b[-1]['seconds']} s")
    finally:
        assert s.close() == 0
