"""Cold start (issue 14): the commands import only what they need, and still work."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "torch._dynamo", "sympy")   # ~30 % of a cold start before issue 14


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_animate_imports_no_transformers_and_writes_the_animation(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 150)).astype(np.float32), 16000)
    out = tmp_path / "a.npy"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "animate", "--audio", str(wav),
                        "--out", str(out), "--progress", "none", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = _imported(r.stderr)
    assert "torch" in mods and "engine.encoders.whisper_net" in mods
    assert not [m for m in mods if m.split(".")[0] in HEAVY or m in HEAVY], sorted(m for m in mods if "dynamo" in m)[:5]
    frames = np.load(out)
    assert frames.shape == (30, 5672, 3) and np.isfinite(frames).all()


def test_info_does_not_import_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine", "info", "default", "--json"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"kind": "composite_regional"' in r.stdout
    assert "torch" not in _imported(r.stderr)
