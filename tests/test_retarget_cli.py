"""``python -m engine fit`` and ``animate --target/--fit/--shapes`` end to end (subprocess, the
shipped checkpoint, the sample audio) and refused inputs that leave nothing behind."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from engine.exporters import read_pc2
from tests.retarget_common import character
from training.characters import write_obj

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO / "engine" / "assets" / "sample.wav"


def run(*args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def cm_head(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    c = character("cm_yup")
    return write_obj(d / "head.obj", c.vertices, c.faces), c


@pytest.mark.slow
def test_fit_then_animate_vertices(cm_head, tmp_path):
    obj, c = cm_head
    fit = tmp_path / "head.fit.npz"
    r = run("fit", "--mesh", obj, "--out", fit, "--preview", tmp_path / "fit.png", "--progress", "json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout.strip().splitlines()[-1])
    assert done["event"] == "done" and done["up"] == "y" and done["residual"] < 0.01
    assert (tmp_path / "fit.png").stat().st_size > 1000
    out = tmp_path / "a.pc2"
    r = run("animate", "--audio", AUDIO, "--target", obj, "--fit", fit, "--out", out, "--progress", "json")
    assert r.returncode == 0, r.stderr
    frames, _ = read_pc2(out)
    assert frames.shape[1:] == (len(c.vertices), 3)
    assert np.abs(frames - c.vertices[None]).max() > 0.3          # centimetres: the jaw moves ~cm
    # a changed mesh invalidates the fit
    moved = tmp_path / "moved.obj"
    write_obj(moved, c.vertices * 1.01, c.faces)
    r = run("animate", "--audio", AUDIO, "--target", moved, "--fit", fit, "--out", tmp_path / "b.pc2")
    assert r.returncode == 2 and "fit it again" in r.stderr and not (tmp_path / "b.pc2").exists()


@pytest.mark.slow
def test_animate_fits_on_the_fly_and_writes_weights(tmp_path):
    c = character("arkit")
    obj = write_obj(tmp_path / "arkit.obj", c.vertices, c.faces)
    np.savez(tmp_path / "shapes.npz", Basis=c.vertices, **c.shapes)
    out = tmp_path / "a.weights.json"
    r = run("animate", "--audio", AUDIO, "--target", obj, "--shapes", tmp_path / "shapes.npz", "--out", out,
            "--progress", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["path"] == "fit" and doc["fps"] == 30.0
    W = np.array(doc["weights"])
    assert W.shape == (json.loads(r.stdout.strip().splitlines()[-1])["frames"], len(doc["names"]))
    assert "cheekPuff" in doc["left_alone"] and W.max() > 0.2
    # no mesh: by names only, and it says so
    out2 = tmp_path / "b.weights.json"
    r = run("animate", "--audio", AUDIO, "--shapes", tmp_path / "shapes.npz", "--out", out2)
    assert r.returncode == 0, r.stderr
    assert json.loads(out2.read_text())["path"] == "names" and "by their names" in r.stderr


@pytest.mark.slow
def test_bad_mesh_cli_writes_nothing(tmp_path):
    box = trimesh.creation.box(extents=[0.2, 0.2, 0.2])
    obj = write_obj(tmp_path / "cube.obj", box.vertices, box.faces)
    r = run("fit", "--mesh", obj, "--out", tmp_path / "cube.fit.npz", "--progress", "json")
    assert r.returncode == 2
    assert json.loads(r.stdout.strip().splitlines()[-1])["event"] == "error"
    assert "no face found" in r.stderr and "--landmarks" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.obj"]
