"""blender_addon.warm_engine without Blender: the add-on's one warm engine process.

Reuse across requests (same pid), cancel (the engine stays warm; a queued request returns at
once), a crash mid-request (the request fails with the exit code and the last error line; the
next request restarts it), a server killed while idle (the next request restarts it and
``take_notice`` says so once), restart when the interpreter/environment changes, and shutdown.
The engine is tests/blender/fake_engine.py's serve mode: the real protocol
(:class:`engine.serve.Server`) around fake work that can be slowed down or made to crash.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blender_addon import engine_process as ep
from blender_addon import formats
from blender_addon import warm_engine as we

FAKE = str(ROOT / "tests" / "blender" / "fake_engine.py")
CKPT = str(ROOT / "engine" / "assets" / "default.safetensors")
PREFIX = [sys.executable, FAKE]


@pytest.fixture(autouse=True)
def _no_engine_left():
    we.shutdown()
    yield
    we.shutdown()


def _env(**extra: str) -> dict[str, str]:
    env = ep.engine_env(str(ROOT))
    env.update(extra)
    return env


@pytest.fixture
def wav(tmp_path: Path) -> str:
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "a.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return str(tmp_path / "a.wav")


def _argv(wav: str, out: Path) -> list[str]:
    return ["animate", "--audio", wav, "--out", str(out), "--checkpoint", CKPT, "--progress", "json"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:  # exited between the two checks
        return False


def test_requests_reuse_one_process_and_give_the_engine_job_interface(wav: str, tmp_path: Path) -> None:
    env = _env()
    pids, stages = set(), []
    for i in range(3):
        job = we.submit(PREFIX, _argv(wav, tmp_path / f"o{i}.pc2"), env)
        st = job.wait(timeout=60)
        assert st.ok and st.finished, st.message
        assert st.result["out"] == str(tmp_path / f"o{i}.pc2") and st.stage == "done" and st.fraction == 1.0
        assert formats.read_pc2(str(tmp_path / f"o{i}.pc2")).shape[0] == st.result["frames"]
        pids.add(job.pid)
        stages = job.stages
    assert len(pids) == 1 and _alive(pids.pop())
    assert stages == ["encode", "decode", "write"]
    assert we.current() is not None and we.current().ready is not None  # 'ready' was seen
    assert we.take_notice() is None


def test_warm_request_keeps_its_warning_events(wav: str, tmp_path: Path) -> None:
    """A warning tagged with the request's id reaches that request (the line still succeeds)."""
    job = we.submit(PREFIX, _argv(wav, tmp_path / "o.pc2") + ["--transcript", str(tmp_path / "a.txt")], _env())
    st = job.wait(timeout=60)
    assert st.ok, st.message
    assert st.warnings == ["fake engine: transcript a.txt not used"]
    st2 = we.submit(PREFIX, _argv(wav, tmp_path / "o2.pc2"), _env()).wait(timeout=60)
    assert st2.ok and st2.warnings == []


def test_cancel_stops_the_request_and_the_engine_stays_warm(wav: str, tmp_path: Path) -> None:
    env = _env(PARLEY_FAKE_SLEEP="0.5")
    job = we.submit(PREFIX, _argv(wav, tmp_path / "slow.pc2"), env)
    t0 = time.monotonic()
    while job.poll().stage != "encode":
        assert time.monotonic() - t0 < 30, "no progress"
        time.sleep(0.02)
    pid = job.pid
    t0 = time.monotonic()
    job.cancel()
    assert time.monotonic() - t0 < 1.5  # stops at the next progress line (0.5 s apart)
    assert job.state.finished and not job.state.ok and job.state.message == "Cancelled."
    assert not (tmp_path / "slow.pc2").exists()
    assert _alive(pid) and not job.running
    nxt = we.submit(PREFIX, _argv(wav, tmp_path / "next.pc2"), env)
    assert nxt.wait(timeout=60).ok and nxt.pid == pid


def test_cancelling_a_queued_request_returns_at_once(wav: str, tmp_path: Path) -> None:
    env = _env(PARLEY_FAKE_SLEEP="0.4")
    first = we.submit(PREFIX, _argv(wav, tmp_path / "first.pc2"), env)
    queued = we.submit(PREFIX, _argv(wav, tmp_path / "queued.pc2"), env)
    t0 = time.monotonic()
    queued.cancel()  # not started: nothing to wait for
    assert time.monotonic() - t0 < 0.3 and queued.state.message == "Cancelled."
    assert first.wait(timeout=60).ok
    time.sleep(0.3)
    assert not (tmp_path / "queued.pc2").exists()


def test_engine_error_is_per_request(wav: str, tmp_path: Path) -> None:
    env = _env()
    bad = we.submit(PREFIX, ["animate", "--audio", wav], env)  # the fake's argparse refuses it
    st = bad.wait(timeout=60)
    assert st.finished and not st.ok and "exited with status 2" in st.message
    good = we.submit(PREFIX, _argv(wav, tmp_path / "ok.pc2"), env)
    assert good.wait(timeout=60).ok and good.pid == bad.pid


def test_the_engine_s_own_error_message_reaches_the_user(wav: str, tmp_path: Path) -> None:
    job = we.submit(PREFIX, _argv(wav, tmp_path / "x.pc2"), _env(PARLEY_FAKE_FAIL="1"))
    st = job.wait(timeout=60)
    assert not st.ok and st.message == "simulated engine failure: the audio is silent", st.message
    assert job.pid is not None and _alive(job.pid)


def test_crash_mid_request_fails_it_and_the_next_request_restarts(wav: str, tmp_path: Path) -> None:
    env = _env(PARLEY_FAKE_SLEEP="1.0")
    job = we.submit(PREFIX, _argv(wav, tmp_path / "x.pc2"), env)
    while job.poll().stage != "encode":
        time.sleep(0.02)
    pid = job.pid
    os.kill(pid, signal.SIGKILL)  # the OOM killer, a segfault in a native library…
    st = job.wait(timeout=30)
    assert not st.ok and "exit code -9" in st.message, st.message
    nxt = we.submit(PREFIX, _argv(wav, tmp_path / "y.pc2"), _env())
    assert nxt.wait(timeout=60).ok and nxt.pid != pid
    assert we.take_notice() is None  # the failed request already said it


def test_crash_message_names_the_exception(wav: str, tmp_path: Path) -> None:
    job = we.submit(PREFIX, _argv(wav, tmp_path / "x.pc2"), _env(PARLEY_FAKE_CRASH="1"))
    st = job.wait(timeout=60)
    assert not st.ok and "exit code 1" in st.message and "simulated crash inside the engine" in st.message
    assert "File \"" not in st.message and "Traceback" not in st.message, st.message  # one line for the UI


def test_killed_while_idle_restarts_on_the_next_request_and_says_so_once(wav: str, tmp_path: Path) -> None:
    env = _env()
    job = we.submit(PREFIX, _argv(wav, tmp_path / "a.pc2"), env)
    assert job.wait(timeout=60).ok
    old = job.pid
    os.kill(old, signal.SIGKILL)
    time.sleep(0.3)
    nxt = we.submit(PREFIX, _argv(wav, tmp_path / "b.pc2"), env)
    assert nxt.wait(timeout=60).ok and nxt.pid != old
    notice = we.take_notice()
    assert notice is not None and "had stopped" in notice and "exit code -9" in notice, notice
    assert we.take_notice() is None


def test_another_interpreter_or_environment_restarts_the_engine(wav: str, tmp_path: Path) -> None:
    a = we.submit(PREFIX, _argv(wav, tmp_path / "a.pc2"), _env())
    assert a.wait(timeout=60).ok
    b = we.submit(PREFIX, _argv(wav, tmp_path / "b.pc2"), _env(PARLEY_SOMETHING="1"))
    assert b.wait(timeout=60).ok and b.pid != a.pid
    assert not _alive(a.pid)


def test_shutdown_kills_the_engine(wav: str, tmp_path: Path) -> None:
    job = we.submit(PREFIX, _argv(wav, tmp_path / "a.pc2"), _env())
    assert job.wait(timeout=60).ok
    pid = job.pid
    we.shutdown()
    assert we.current() is None and not _alive(pid)


def test_a_missing_interpreter_is_a_readable_error() -> None:
    with pytest.raises(ep.EngineError, match="Check the interpreter path"):
        we.submit(["/nonexistent/python", "-m", "engine"], ["animate"], _env())


def test_the_engine_does_not_outlive_its_owner(wav: str, tmp_path: Path) -> None:
    """Blender quitting (here: a Python process that used the warm engine and exits without
    calling shutdown) leaves no engine behind: atexit stops it, EOF on its stdin would too."""
    import subprocess

    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from blender_addon import engine_process as ep, warm_engine as we\n"
            f"job = we.submit({PREFIX!r}, {_argv(wav, tmp_path / 'o.pc2')!r}, ep.engine_env({str(ROOT)!r}))\n"
            "assert job.wait(timeout=60).ok, job.state.message\n"
            "print(job.pid, flush=True)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    pid = int(out.stdout.split()[-1])
    t0 = time.monotonic()
    while _alive(pid) and time.monotonic() - t0 < 5:
        time.sleep(0.05)
    assert not _alive(pid), f"engine {pid} outlived the process that started it"


def test_an_engine_that_dies_at_import_names_the_missing_package(tmp_path: Path) -> None:
    """The Engine Python lacks a dependency: the server dies before reading the request; the
    request fails with the exception line (which the add-on turns into "Install Engine
    Dependencies"), however fast it died."""
    bad = tmp_path / "dies.py"
    bad.write_text("import sys\nsys.stderr.write('Traceback (most recent call last):\\n  File \"x\"\\n"
                   "ModuleNotFoundError: No module named \\'torch\\'\\n')\nsys.exit(1)\n")
    for delay in (0.0, 0.5):  # written before or after it died
        job = we.submit([sys.executable, str(bad)], ["animate", "--audio", "a.wav"], _env(D=str(delay)))
        time.sleep(delay)
        st = job.wait(timeout=30)
        assert not st.ok and "exit code 1" in st.message and "No module named 'torch'" in st.message, st.message
