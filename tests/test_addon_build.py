"""build_addon.py: a valid extension zip (Blender's own validator), engine bundled, honest
permissions; and a mypy type check of the add-on against fake-bpy-module."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import build_addon


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    return build_addon.build(out, out / "build")


def test_zip_is_valid_and_complete(built: Path) -> None:
    ext = build_addon.find_blender_ext()
    assert ext is not None
    proc = subprocess.run([sys.executable, str(ext), "validate", str(built)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = set(zipfile.ZipFile(built).namelist())
    for f in ("blender_manifest.toml", "__init__.py", "bake.py", "batch.py", "engine_process.py", "operators.py",
              "panel.py", "preferences.py", "session.py", "formats.py", "engine_requirements.txt",
              "engine/__init__.py", "engine/__main__.py", "engine/cli.py", "engine/exporters.py"):
        assert f in names, f"{f} missing from {built.name}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assets = ROOT / "engine" / "assets"
    for a in assets.iterdir() if assets.is_dir() else []:
        if a.is_file():
            assert f"engine/assets/{a.name}" in names, f"asset {a.name} not bundled"


def test_manifest_fields_and_permissions(built: Path) -> None:
    with zipfile.ZipFile(built) as z:
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
        reqs = z.read("engine_requirements.txt").decode()
    src = tomllib.loads((ROOT / "addon_manifest.toml").read_text())
    assert "parley" not in manifest  # build-only table stripped
    assert manifest["id"] == "parley" and manifest["type"] == "add-on"
    assert manifest["version"] == src["version"] and manifest["blender_version_min"] == "4.2.0"
    assert set(manifest["permissions"]) == {"files", "network"}
    assert "install" in manifest["permissions"]["network"].lower()  # network only for the installer
    assert built.name == f"parley-{src['version']}.zip"
    assert "torch==2.13.0" in reqs.splitlines()


def test_dump_manifest_round_trips() -> None:
    data = {"a": "x \"q\"", "n": 3, "b": True, "l": ["p", "q"], "t": {"k": "v"}}
    assert tomllib.loads(build_addon.dump_manifest(data)) == data


def test_broken_manifest_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "addon_manifest.toml"
    bad.write_text((ROOT / "addon_manifest.toml").read_text().replace('tagline = "', 'tagline = "Ends with a dot.'))
    with pytest.raises(build_addon.BuildError, match="tagline|punctuation"):
        build_addon.build(tmp_path / "out", tmp_path / "build", manifest=bad)


def test_mypy_addon_against_fake_bpy() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "blender_addon" / "mypy.ini"),
                           str(ROOT / "blender_addon"), str(ROOT / "build_addon.py")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_legacy_zip_has_the_same_files_under_one_folder(built: Path, tmp_path: Path) -> None:
    """Blender 3.x installs a zip holding one package folder whose __init__ has bl_info; the
    legacy zip carries exactly the extension's files (minus the 4.2+ manifest)."""
    legacy = build_addon.build_legacy(tmp_path / "out", tmp_path / "build")
    assert legacy.name == built.name.replace(".zip", "-legacy.zip")
    names = set(zipfile.ZipFile(legacy).namelist())
    assert all(n.startswith("parley/") for n in names), sorted(names)[:5]
    inner = {n.removeprefix("parley/") for n in names}
    ext = set(zipfile.ZipFile(built).namelist()) - {"blender_manifest.toml"}
    assert inner == {n for n in ext if not n.endswith("/")}, inner ^ ext
    init = zipfile.ZipFile(legacy).read("parley/__init__.py").decode()
    assert "bl_info = {" in init and '"blender": (3, 4, 0)' in init
