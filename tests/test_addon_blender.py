"""The add-on in real Blender 4.5 (main venv's bpy) and 5.0 (.venv-bpy5), end to end.

Each Blender version runs tests/blender/addon_suite.py once in a subprocess (bpy must be
imported after BLENDER_USER_RESOURCES points at an empty folder, and 4.5/5.0 cannot share an
environment). The suite installs the freshly built extension zip and runs every check: each
bake mode verified vertex-exact against the engine's output at several frames, failure /
cancel / bake rollback leave the scene unchanged, topology mismatch refused, batch script end
to end. This test fails listing every failed check with its traceback.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "blender"))

EXPECTED_CHECKS = [
    "install_enable", "prefs_pip_command", "generate_cache", "generate_shapekeys_absolute",
    "generate_shapekeys_relative", "two_clips_coexist", "engine_failure_leaves_scene_unchanged",
    "real_engine_bad_audio_unchanged", "cancel_kills_engine_and_leaves_scene_unchanged",
    "bake_failure_rolls_back", "topology_mismatch_refused", "request_from_panel_settings",
    "panel_and_preferences_draw", "batch_end_to_end",
    "batch_from_installed_extension_with_scene", "parley_head_and_dialogue_strips",
    "warm_engine_reused_then_stopped_by_disable", "transcript_beside_audio_reaches_engine_and_report",
]

PYTHONS = {"4.5": ROOT / ".venv" / "bin" / "python", "5.0": ROOT / ".venv-bpy5" / "bin" / "python"}


def _has_bpy(python: Path) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", "import importlib.util as u; "
                           "raise SystemExit(u.find_spec('bpy') is None)"]).returncode == 0


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import build_addon

    out = tmp_path_factory.mktemp("dist")
    return build_addon.build(out, out / "build")


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.5", "5.0"])
def test_addon_in_real_blender(version: str, addon_zip: Path, tmp_path: Path) -> None:
    import assets

    python = PYTHONS[version]
    if not _has_bpy(python):
        pytest.fail(f"bpy for Blender {version} is not installed in {python.parent.parent} (run `make install`)")
    cfg = assets.build_all(tmp_path / "work", sys.executable)
    cfg["zip"] = str(addon_zip)
    cfg_path, out_path = tmp_path / "config.json", tmp_path / "results.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "work" / "blender_user"))
    proc = subprocess.run([str(python), str(ROOT / "tests" / "blender" / "addon_suite.py"), str(cfg_path),
                           str(out_path)], env=env, capture_output=True, text=True, timeout=1200)
    assert out_path.exists(), f"the suite wrote no results (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out_path.read_text())
    assert proc.returncode == 0, f"Blender exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert results["_blender"].startswith(version), results["_blender"]
    failed = {k: v["detail"] for k, v in results.items() if isinstance(v, dict) and not v["ok"]}
    missing = [c for c in EXPECTED_CHECKS if c not in results]
    report = "\n".join(f"{k} ({v.get('seconds')} s): {v['detail'][:300]}" for k, v in results.items()
                       if isinstance(v, dict))
    print(f"Blender {results['_blender']}, engine: {cfg['engine']}\n{report}")
    assert not failed, "\n\n".join(f"[{k}]\n{v}" for k, v in failed.items())
    assert not missing, f"checks that did not run: {missing}"
    if cfg["engine"] == "real":
        assert not results["real_engine_bad_audio_unchanged"]["detail"].startswith("SKIP")
