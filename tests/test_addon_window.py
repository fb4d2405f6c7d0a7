"""The add-on in a real Blender window (Debian's Blender 3.4 under Xvfb), used like an animator does.

One Blender start runs tests/blender/window_driver.py, which installs the *legacy* zip through
Preferences > Add-ons > Install and plays every scenario with real clicks
(``INVOKE_DEFAULT`` in the viewport's context: ``invoke`` + ``modal`` + timers + status bar),
Esc key presses (``Window.event_simulate``), Undo/Redo and screenshots. The driver writes one
JSON result per scenario; each test below asserts on one of them and, on failure, prints that
scenario's part of the Blender log. Missing ``blender``/``xvfb-run`` is a failure that says
how to install them, never a skip.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BLENDER_DIR = ROOT / "tests" / "blender"
INSTALL_HINT = ("the real-window add-on tests need Debian's Blender and Xvfb: "
                "`sudo apt-get install -y blender xvfb python3-numpy` (or `make sysdeps`)")

SCENARIOS = [
    "install_legacy_zip", "parley_head_upright", "click_bake_cache_undo_redo", "click_bake_shapekeys_undo_redo",
    "esc_mid_run_cancels", "load_blend_mid_run_cancels", "disable_addon_mid_run",
    "engine_failures_report_cleanly", "preferences_buttons", "dialogue_all_strips",
    "dialogue_esc_keeps_finished_lines", "shipped_checkpoint_dropdown", "panel_draws_every_setting",
    "warm_two_clicks_reuse_engine", "warm_engine_killed_between_clicks", "shipped_methods_bake",
    "transcript_beside_audio",
]


LINE_5S = "Hello there. This is a five second line of speech, spoken for the Parley test."


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found: {INSTALL_HINT}")
    return path


def _speak(path: Path, text: str) -> None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is needed for the add-on tests (make sysdeps)")
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True)


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel (so the installer test needs no network)."""
    mod = name.replace("-", "_")
    dist = f"{mod}-{version}.dist-info"
    files = {f"{mod}/__init__.py": b"VALUE = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: parley-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for f, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{f},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for f, data in files.items():
            zf.writestr(f, data)
    return path


def _scenario_log(log: str, name: str) -> str:
    begin, end = f"=== BEGIN {name}", f"=== END {name}"
    if begin not in log:
        return log[-4000:]
    part = log.split(begin, 1)[1]
    return part.split(end, 1)[0][-6000:]


@pytest.fixture(scope="module")
def window_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    blender = _tool("blender")
    xvfb = _tool("xvfb-run")
    import build_addon

    work = tmp_path_factory.mktemp("window")
    legacy = build_addon.build_legacy(work / "dist", work / "build")
    scenes, shots, wheels = work / "scenes", work / "shots", work / "wheels"
    for d in (scenes, shots, wheels):
        d.mkdir()
    _speak(work / "line5s.wav", LINE_5S)
    (work / "not_audio.wav").write_text("this is not audio\n")
    for name, text in (("wav_a", "Hello Bob."), ("wav_b", "Hi Alice, how are you?"), ("wav_c", "Goodbye.")):
        _speak(work / f"{name}.wav", text)
    _wheel(wheels, "parley-test-dep", "1.0")
    bare = work / "bare_python"  # an engine interpreter without the engine's dependencies
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    cfg = {
        "repo": str(ROOT), "work": str(work), "scenes": str(scenes), "shots": str(shots),
        "legacy_zip": str(legacy), "engine_python": sys.executable,
        "python_without_torch": str(bare / "bin" / "python"),
        "fake_engine": str(BLENDER_DIR / "fake_engine.py"),
        "head_obj": str(ROOT / "engine" / "assets" / "default_head.obj"),
        "wav_5s": str(work / "line5s.wav"), "wav_5s_text": LINE_5S,
        "wav_a": str(work / "wav_a.wav"), "wav_b": str(work / "wav_b.wav"),
        "wav_c": str(work / "wav_c.wav"), "bad_wav": str(work / "not_audio.wav"), "wheels": str(wheels),
        "timeout": 240, "only": os.environ.get("PARLEY_WINDOW_ONLY", "").split(",") if
        os.environ.get("PARLEY_WINDOW_ONLY") else None,
    }
    cfg_path, results_path, log_path = work / "config.json", work / "results.json", work / "blender.log"
    cfg["log"] = str(log_path)  # Blender's console: reports of direct operator calls are read back from it
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_CONFIG=str(work / "user" / "config"),
               BLENDER_USER_SCRIPTS=str(work / "user" / "scripts"),
               BLENDER_USER_DATAFILES=str(work / "user" / "datafiles"), TMPDIR=str(work / "tmp"))
    (work / "tmp").mkdir()
    t0 = time.monotonic()
    with open(log_path, "w") as log_fh:
        proc = subprocess.run([xvfb, "-a", "-s", "-screen 0 1280x800x24", blender, "--factory-startup",
                               "--enable-event-simulate", "-p", "0", "0", "1280", "800",
                               "--python", str(BLENDER_DIR / "window_driver.py"), "--", str(cfg_path),
                               str(results_path)],
                              env=env, stdout=log_fh, stderr=subprocess.STDOUT, timeout=1500)
    log = log_path.read_text(errors="replace")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    return {"results": results, "log": log, "rc": proc.returncode, "seconds": time.monotonic() - t0,
            "shots": shots, "work": work, "cfg": cfg}


def _result(run: dict[str, Any], name: str) -> dict[str, Any]:
    res = run["results"]
    if "_driver" in res:
        pytest.fail(f"the driver itself failed:\n{res['_driver']['detail']}\n{run['log'][-4000:]}")
    assert name in res, (f"scenario {name} did not run (Blender exit {run['rc']}); Blender log:\n"
                         f"{_scenario_log(run['log'], name)}\n...\n{run['log'][-3000:]}")
    r = res[name]
    assert r["ok"], f"{name} failed:\n{r['detail']}\n--- Blender log of this scenario ---\n{_scenario_log(run['log'], name)}"
    return r


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.xdist_group("blender_window")
@pytest.mark.parametrize("name", SCENARIOS)
def test_window_scenario(window_run: dict[str, Any], name: str) -> None:
    if window_run["cfg"]["only"] and name not in window_run["cfg"]["only"]:
        pytest.fail(f"PARLEY_WINDOW_ONLY excludes {name}: unset it for a full run")
    r = _result(window_run, name)
    print(f"{name} ({r['seconds']} s): {r['detail']}")
    log = _scenario_log(window_run["log"], name)
    # Blender's own Python tracebacks start a line (the engine's output is indented: "  engine| …")
    assert not re.search(r"^Traceback", log, re.M), f"{name}: a traceback in Blender's log:\n{log}"


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.xdist_group("blender_window")
def test_window_blender_exits_cleanly(window_run: dict[str, Any]) -> None:
    """Blender quits by itself after the run (no timer or engine left to hang it) with status 0."""
    assert window_run["rc"] == 0, f"Blender exit status {window_run['rc']}:\n{window_run['log'][-4000:]}"
    assert "=== DRIVER DONE" in window_run["log"]
    assert window_run["results"].get("_blender", "").startswith("3.4"), window_run["results"].get("_blender")


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.xdist_group("blender_window")
def test_window_screenshots(window_run: dict[str, Any]) -> None:
    """The screenshots exist and differ: before, mid-bake (progress) and after."""
    shots = window_run["shots"]
    names = ["panel_before", "panel_during", "panel_after", "esc_mid_run"]
    if window_run["cfg"]["only"]:
        pytest.fail("PARLEY_WINDOW_ONLY set: screenshots are checked on a full run only")
    digests = {}
    for n in names:
        p = shots / f"{n}.png"
        assert p.is_file() and p.stat().st_size > 10_000, f"screenshot {n} missing or empty"
        digests[n] = hashlib.sha256(p.read_bytes()).hexdigest()
    assert len(set(digests.values())) == len(names), "identical screenshots: the UI did not change"
    keep = os.environ.get("PARLEY_WINDOW_SHOTS")
    if keep:  # copy them out for the README (see blender_addon/README.md)
        Path(keep).mkdir(parents=True, exist_ok=True)
        for p in shots.glob("*.png"):
            shutil.copyfile(p, Path(keep) / p.name)
