"""Any character in real Blender 4.5 (main venv's bpy) and 5.0 (.venv-bpy5), with the real engine
and the shipped checkpoint: tests/blender/character_suite.py (Fit stored/re-used/invalidated,
overlays, Generate onto another topology as vertices and as the character's own shape keys,
sparse/dense weight curves on NLA tracks, name-only rigs, a refused fit, picked landmarks, a
Y-up centimetre head). One Blender start per version; each check is reported with its detail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "blender"))

from tests.test_addon_blender import PYTHONS, _has_bpy  # noqa: E402

#: 5.0 reruns what depends on the Blender version (ID properties, overlays, slotted actions /
#: channelbags, NLA strips and their slots); the engine paths are the same in both and run on 4.5 only
VERSION_SPECIFIC = ["fit_stored_reused_invalidated", "overlays_landmarks_and_template", "generate_shape_keys_sparse_nla",
                    "second_clip_stacks_and_dense_option"]
EXPECTED = ["fit_stored_reused_invalidated", "overlays_landmarks_and_template", "generate_vertices_other_topology",
            "generate_shape_keys_sparse_nla", "second_clip_stacks_and_dense_option", "shape_keys_by_name_without_fit",
            "refused_fit_changes_nothing_then_picked_landmarks_work", "y_up_centimetre_head_fits_with_auto_axis"]


@pytest.fixture(scope="module")
def character_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import assets
    import build_addon
    import character_assets

    from engine.topology import Topology

    work = tmp_path_factory.mktemp("chars")
    cfg: dict[str, Any] = character_assets.build_characters(work)
    assets.speak(work / "hello_world.wav", "Hello world, this is Parley speaking.")
    assets.speak(work / "second_clip.wav", "Bob bought a map.")
    topo = Topology.load(ROOT / "engine" / "assets" / "default_head.obj")
    cfg.update(repo=str(ROOT), engine_python=sys.executable, engine="real",
               checkpoint=str(ROOT / "engine" / "assets" / "default.safetensors"),
               wav_a=str(work / "hello_world.wav"), wav_b=str(work / "second_clip.wav"),
               template_fingerprint=topo.fingerprint(), template_vertices=topo.num_vertices,
               zip=str(build_addon.build(work / "dist", work / "dist" / "build")))
    return cfg


@pytest.mark.blender
@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.5", "5.0"])
def test_any_character_in_real_blender(version: str, character_inputs: dict[str, Any], tmp_path: Path) -> None:
    python = PYTHONS[version]
    if not _has_bpy(python):
        pytest.fail(f"bpy for Blender {version} is not installed in {python.parent.parent} (run `make install`)")
    cfg = dict(character_inputs, work=str(tmp_path / "work"))
    (tmp_path / "work").mkdir()
    if version != "4.5":
        cfg["only"] = VERSION_SPECIFIC
    if os.environ.get("PARLEY_CHAR_ONLY"):
        cfg["only"] = os.environ["PARLEY_CHAR_ONLY"].split(",")
    cfg_path, out_path = tmp_path / "config.json", tmp_path / "results.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "work" / "blender_user"), OMP_NUM_THREADS="2")
    proc = subprocess.run([str(python), str(ROOT / "tests" / "blender" / "character_suite.py"), str(cfg_path),
                           str(out_path)], env=env, capture_output=True, text=True, timeout=1500)
    assert out_path.exists(), f"no results (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out_path.read_text())
    assert proc.returncode == 0, f"Blender exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert results["_blender"].startswith(version), results["_blender"]
    print("\n".join(f"{k} ({v.get('seconds')} s): {v['detail'][:400]}" for k, v in results.items()
                    if isinstance(v, dict)))
    failed = {k: v["detail"] for k, v in results.items() if isinstance(v, dict) and not v["ok"]}
    assert not failed, "\n\n".join(f"[{k}]\n{v}" for k, v in failed.items())
    missing = [c for c in (cfg.get("only") or EXPECTED) if c not in results]
    assert not missing, f"checks that did not run: {missing}"
    if os.environ.get("PARLEY_CHAR_ONLY"):
        pytest.fail("PARLEY_CHAR_ONLY set: unset it for a full run")
