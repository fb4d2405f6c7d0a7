"""Any character in a real Blender window (Debian's Blender 3.4 under Xvfb), used like an animator does.

One Blender start runs tests/blender/window_character.py: the rig of tests/blender/window_driver.py
(legacy zip installed through Preferences, real clicks through ``INVOKE_DEFAULT`` in the viewport,
Esc by ``Window.event_simulate``, reports read back, screenshots) with the scenarios of
window_character.py: click Fit (+ undo/redo, overlays), Esc during Fit, Generate onto a character
of another topology as vertices and as its own shape keys (NLA), and a refused fit. Each test
asserts on one scenario's JSON result and prints its detail (with measured times).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "blender"))

from tests.test_addon_window import _result, _scenario_log, _speak, _tool  # noqa: E402

SCENARIOS = ["char_click_fit_undo", "char_esc_cancels_fit", "char_generate_vertices_undo",
             "char_generate_shape_keys_nla", "char_refused_fit"]


@pytest.fixture(scope="module")
def char_window_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    blender = _tool("blender")
    xvfb = _tool("xvfb-run")
    import build_addon
    import character_assets

    work = tmp_path_factory.mktemp("charwin")
    legacy = build_addon.build_legacy(work / "dist", work / "build")
    scenes, shots = work / "scenes", work / "shots"
    for d in (scenes, shots):
        d.mkdir()
    _speak(work / "line5s.wav", "Hello there. Bob bought a big map, and we will animate my own face now.")
    cfg: dict[str, Any] = character_assets.build_characters(work / "chars")
    cfg.update({
        "repo": str(ROOT), "work": str(work), "scenes": str(scenes), "shots": str(shots),
        "legacy_zip": str(legacy), "engine_python": sys.executable,
        "fake_engine": str(ROOT / "tests" / "blender" / "fake_engine.py"),
        "head_obj": str(ROOT / "engine" / "assets" / "default_head.obj"),
        "wav_5s": str(work / "line5s.wav"), "timeout": 300,
        # install_legacy_zip also prepares the dialogue scene of the main window suite (unused here)
        "wav_a": str(work / "line5s.wav"), "wav_b": str(work / "line5s.wav"), "wav_c": str(work / "line5s.wav"),
        "only": ["install_legacy_zip", *SCENARIOS],
    })
    cfg_path, results_path, log_path = work / "config.json", work / "results.json", work / "blender.log"
    cfg["log"] = str(log_path)
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_CONFIG=str(work / "user" / "config"),
               BLENDER_USER_SCRIPTS=str(work / "user" / "scripts"),
               BLENDER_USER_DATAFILES=str(work / "user" / "datafiles"), TMPDIR=str(work / "tmp"))
    (work / "tmp").mkdir()
    t0 = time.monotonic()
    with open(log_path, "w") as log_fh:
        proc = subprocess.run([xvfb, "-a", "-s", "-screen 0 1280x800x24", blender, "--factory-startup",
                               "--enable-event-simulate", "-p", "0", "0", "1280", "800",
                               "--python", str(ROOT / "tests" / "blender" / "window_character.py"), "--",
                               str(cfg_path), str(results_path)],
                              env=env, stdout=log_fh, stderr=subprocess.STDOUT, timeout=1800)
    log = log_path.read_text(errors="replace")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    keep = os.environ.get("PARLEY_WINDOW_SHOTS")
    if keep:  # copy the screenshots out for the README
        Path(keep).mkdir(parents=True, exist_ok=True)
        for p in shots.glob("char_*.png"):
            shutil.copyfile(p, Path(keep) / p.name)
    return {"results": results, "log": log, "rc": proc.returncode, "seconds": time.monotonic() - t0,
            "shots": shots, "work": work, "cfg": cfg}


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_character_window_scenario(char_window_run: dict[str, Any], name: str) -> None:
    _result(char_window_run, "install_legacy_zip")
    r = _result(char_window_run, name)
    print(f"{name} ({r['seconds']} s): {r['detail']}")
    log = _scenario_log(char_window_run["log"], name)
    assert not re.search(r"^Traceback", log, re.M), f"{name}: a traceback in Blender's log:\n{log}"


@pytest.mark.blender
@pytest.mark.slow
def test_character_window_screenshots_and_exit(char_window_run: dict[str, Any]) -> None:
    """Blender quits cleanly; the panel screenshots exist and differ (unfitted, fitted, curves, refused)."""
    assert char_window_run["rc"] == 0, f"Blender exit status {char_window_run['rc']}:\n{char_window_run['log'][-4000:]}"
    digests = set()
    for n in ("char_panel_unfitted", "char_panel_fitted", "char_shape_keys_curves", "char_fit_refused"):
        p = char_window_run["shots"] / f"{n}.png"
        assert p.is_file() and p.stat().st_size > 10_000, f"screenshot {n} missing or empty"
        digests.add(p.read_bytes())
    assert len(digests) == 4, "identical screenshots: the UI did not change"
