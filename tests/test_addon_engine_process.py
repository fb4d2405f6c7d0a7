"""blender_addon.engine_process without Blender: command line, protocol parsing, job states,
cancel/kill, and the error messages users see. Uses tests/blender/fake_engine.py, which
speaks the engine's CLI and progress protocol and can be told to fail, crash or stall."""
from __future__ import annotations

import json
import os
import struct
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

FAKE = str(ROOT / "tests" / "blender" / "fake_engine.py")


def test_build_animate_command_exact() -> None:
    req = ep.AnimateRequest(audio="/a b/c.wav", out="/t/o.pc2", checkpoint="/m.safetensors",
                            template="/t/tmpl.obj", style=None, fps=24.0, device="CUDA")
    assert ep.build_animate_command("/py", req) == [
        "/py", "-m", "engine", "animate", "--audio", "/a b/c.wav", "--out", "/t/o.pc2",
        "--checkpoint", "/m.safetensors", "--template", "/t/tmpl.obj", "--fps", "24",
        "--device", "cuda", "--progress", "json"]
    req2 = ep.AnimateRequest(audio="a.wav", out="o.pc2", fps=29.97)
    cmd = ep.build_animate_command("py", req2, entry=("x.py",))
    assert cmd[:3] == ["py", "x.py", "animate"] and cmd[cmd.index("--fps") + 1] == "29.97"
    assert "--checkpoint" not in cmd and "--template" not in cmd and "--style" not in cmd
    assert "--postprocess" not in cmd                      # the engine's default (lipclose)
    cmd3 = ep.build_animate_command("py", ep.AnimateRequest(audio="a.wav", out="o.pc2", postprocess="none"))
    assert cmd3[cmd3.index("--postprocess") + 1] == "none"
    assert "--transcript" not in cmd3
    cmd4 = ep.build_animate_command("py", ep.AnimateRequest(audio="a.wav", out="o.pc2", transcript="/d/a b.txt"))
    assert cmd4[cmd4.index("--transcript") + 1] == "/d/a b.txt"


def test_transcript_beside_the_audio(tmp_path: Path) -> None:
    """line.txt next to line.wav is the line's transcript, unless the lips are not being closed."""
    audio = tmp_path / "line 1.wav"
    assert ep.transcript_beside(str(audio), None) is None
    (tmp_path / "line 1.txt").write_text("Bob met Pam.", encoding="utf-8")
    assert ep.transcript_beside(str(audio), None) == str(tmp_path / "line 1.txt")
    assert ep.transcript_beside(str(audio), "lipclose") == str(tmp_path / "line 1.txt")
    assert ep.transcript_beside(str(audio), "none") is None
    assert ep.transcript_beside(str(tmp_path / "line 2.flac"), None) is None


@pytest.mark.parametrize("line,expected", [
    ('{"event":"progress","stage":"encode","fraction":0.42}\n', {"event": "progress", "stage": "encode", "fraction": 0.42}),
    ('{"event":"done","out":"x"}', {"event": "done", "out": "x"}),
    ("Some warning from a library", None),
    ('{"no_event": 1}', None),
    ('{"event": 3}', None),
    ("{broken json", None),
    ("[1, 2]", None),
])
def test_parse_line(line: str, expected: dict | None) -> None:
    assert ep.parse_line(line) == expected


def test_engine_env_puts_engine_root_and_deps_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/old")
    monkeypatch.setenv("PYTHONHOME", "/blender/python")
    deps = tmp_path / "deps"
    deps.mkdir()
    env = ep.engine_env(str(ROOT), [str(deps), str(tmp_path / "missing")])
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(deps), "/old"]
    assert "PYTHONHOME" not in env and env["PYTHONUNBUFFERED"] == "1"


@pytest.fixture()
def wav(tmp_path: Path) -> str:
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(16000, np.float32) + 0.01, 16000)  # 1.0 s -> 30 frames at 30 fps
    return str(path)


@pytest.fixture()
def ckpt(tmp_path: Path) -> str:
    from safetensors.numpy import save_file

    verts = np.arange(12, dtype=np.float32).reshape(4, 3)
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int64)
    meta = {"kind": "fake", "fps": 25.0, "topology": {"name": "quad", "fingerprint": "v4-f2-abc", "masks": ["lips"]},
            "data_card": {"dataset": "none"}}
    path = tmp_path / "m.safetensors"
    save_file({"topology.vertices": verts, "topology.faces": faces}, str(path), metadata={"parley": json.dumps(meta)})
    return str(path)


def _job(tmp_path: Path, wav: str, ckpt: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> ep.EngineJob:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    req = ep.AnimateRequest(audio=wav, out=str(tmp_path / "out.pc2"), checkpoint=ckpt, fps=30)
    return ep.EngineJob(ep.build_animate_command(sys.executable, req, entry=(FAKE,)),
                        env=ep.engine_env(str(ROOT)), cwd=str(tmp_path))


def test_job_success_reports_progress_and_result(tmp_path: Path, wav: str, ckpt: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, wav, ckpt, monkeypatch).start()
    seen = []
    st = job.wait(timeout=120, on_progress=lambda s: seen.append(s.stage))
    assert st.finished and st.ok, st.message
    assert st.result == {"event": "done", "out": str(tmp_path / "out.pc2"), "frames": 30, "vertices": 4, "fps": 30.0}
    assert st.fraction == 1.0 and seen  # the callback ran
    assert job.stages == ["encode", "decode", "write"]
    assert "some library warning that is not JSON" in job.log  # non-protocol lines kept for errors
    frames = formats.read_pc2(str(tmp_path / "out.pc2"))
    assert frames.shape == (30, 4, 3)
    np.testing.assert_allclose(frames[0], np.arange(12, dtype=np.float32).reshape(4, 3), atol=0.03)


def test_job_keeps_warning_events_and_still_succeeds(tmp_path: Path, wav: str, ckpt: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    req = ep.AnimateRequest(audio=wav, out=str(tmp_path / "out.pc2"), checkpoint=ckpt, fps=30,
                            transcript=str(tmp_path / "clip.txt"))
    st = ep.EngineJob(ep.build_animate_command(sys.executable, req, entry=(FAKE,)), env=ep.engine_env(str(ROOT)),
                      cwd=str(tmp_path)).start().wait(timeout=120)
    assert st.ok and st.warnings == ["fake engine: transcript clip.txt not used"]


def test_job_error_event_becomes_the_message(tmp_path: Path, wav: str, ckpt: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    st = _job(tmp_path, wav, ckpt, monkeypatch, PARLEY_FAKE_FAIL="1").start().wait(timeout=120)
    assert st.finished and not st.ok
    assert st.message == "simulated engine failure: the audio is silent"


def test_job_crash_message_names_exit_code_and_last_output(tmp_path: Path, wav: str, ckpt: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    st = _job(tmp_path, wav, ckpt, monkeypatch, PARLEY_FAKE_CRASH="1").start().wait(timeout=120)
    assert not st.ok and st.message.startswith("The engine failed (exit code 1).")
    assert "RuntimeError: simulated crash inside the engine" in st.message


def test_progress_fraction_is_clamped_and_bad_values_ignored(tmp_path: Path) -> None:
    script = tmp_path / "odd.py"
    script.write_text(
        "import json\n"
        "for f in (1.7, 'x', -2):\n"
        "    print(json.dumps({'event': 'progress', 'stage': 'decode', 'fraction': f}), flush=True)\n"
        "raise SystemExit(3)\n")
    job = ep.EngineJob([sys.executable, str(script)]).start()
    fractions = []
    while not job.poll().finished:
        fractions.append(job.state.fraction)
        time.sleep(0.01)
    assert 0.0 <= min(fractions + [job.state.fraction]) and max(fractions + [job.state.fraction]) <= 1.0
    assert job.state.message == "The engine failed (exit code 3)."


def test_cancel_kills_the_process(tmp_path: Path, wav: str, ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "pid"
    job = _job(tmp_path, wav, ckpt, monkeypatch, PARLEY_FAKE_SLEEP="5", PARLEY_FAKE_PIDFILE=str(pidfile)).start()
    t0 = time.monotonic()
    while job.poll().stage != "encode":
        assert time.monotonic() - t0 < 60, "no progress"
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    job.cancel()
    assert not job.running and job.state.finished and not job.state.ok and job.state.message == "Cancelled."
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "out.pc2").exists()


def test_timeout_stops_the_engine(tmp_path: Path, wav: str, ckpt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(tmp_path, wav, ckpt, monkeypatch, PARLEY_FAKE_SLEEP="5").start()
    st = job.wait(timeout=1.0)
    assert not st.ok and "did not finish within 1 s" in st.message and not job.running


def test_missing_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    job = ep.EngineJob(["/nonexistent/python", "-m", "engine"])
    with pytest.raises(ep.EngineError, match="Check the interpreter path"):
        job.start()


def test_done_without_output_file_is_a_failure(tmp_path: Path) -> None:
    script = tmp_path / "liar.py"
    script.write_text('import json; print(json.dumps({"event": "done", "out": "/nonexistent.pc2"}))\n')
    st = ep.EngineJob([sys.executable, str(script)]).start().wait(timeout=60)
    assert not st.ok and "does not exist" in st.message


def test_probe_interpreter(tmp_path: Path) -> None:
    # an interpreter without torch: this Python with site-packages disabled (-S)
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    bad = ep.probe_interpreter(str(bare), ep.engine_env(str(tmp_path)), timeout=60)
    assert not bad["ok"] and bad["error"] == "ModuleNotFoundError: No module named 'torch'"
    missing = ep.probe_interpreter(str(tmp_path / "nope"), {}, timeout=10)
    assert not missing["ok"] and "could not run" in missing["error"]
    good = ep.probe_interpreter(sys.executable, ep.engine_env(str(ROOT)), timeout=120)
    assert good["ok"] and good["torch"].startswith("2.") and isinstance(good["cuda"], bool)


def test_read_checkpoint_info_from_header_only(ckpt: str) -> None:
    info = formats.read_checkpoint_info(ckpt)
    assert (info.kind, info.fps, info.num_vertices, info.fingerprint, info.masks) == ("fake", 25.0, 4, "v4-f2-abc", ["lips"])
    assert info.summary() == "fake, 4 vertices, 25 fps"


def test_read_checkpoint_info_refuses_non_parley_files(tmp_path: Path) -> None:
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x02pickle")
    with pytest.raises(formats.FormatError, match="only loads .safetensors"):
        formats.read_checkpoint_info(str(pt))
    bogus = tmp_path / "x.safetensors"
    bogus.write_bytes(struct.pack("<Q", 2) + b"{}")
    with pytest.raises(formats.FormatError, match="not a Parley checkpoint"):
        formats.read_checkpoint_info(str(bogus))


def test_addon_fingerprint_matches_engine_topology() -> None:
    from engine.topology import Topology

    v = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    f = np.array([[0, 1, 2], [2, 3, 4], [0, 4, 1]], np.int64)
    assert formats.fingerprint(5, f) == Topology(vertices=v, faces=f, masks={}).fingerprint()


def test_pc2_reader_matches_engine_writer_and_rejects_truncation(tmp_path: Path) -> None:
    from engine.exporters import write_pc2

    frames = np.random.default_rng(1).normal(size=(7, 5, 3)).astype(np.float32)
    path = tmp_path / "a.pc2"
    write_pc2(path, frames, fps=30.0)
    np.testing.assert_array_equal(formats.read_pc2(str(path)), frames)
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(formats.FormatError, match="truncated"):
        formats.read_pc2(str(path))


def test_crash_summary_keeps_the_exception_not_the_frames() -> None:
    from blender_addon.engine_process import crash_summary

    tb = ["Traceback (most recent call last):", '  File "x.py", line 3, in main', "    boom()",
          "RuntimeError: simulated crash"]
    assert crash_summary(tb) == " RuntimeError: simulated crash"
    assert crash_summary(["a", "b", "c", "d"]) == " Last output: b | c | d"
    assert crash_summary(["", "  "]) == ""
