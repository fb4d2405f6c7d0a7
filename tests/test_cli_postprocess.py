"""``python -m engine animate --postprocess lipclose|none`` end to end: the shipped default model on
the bundled sample, the Animator option it maps to, bad values, topologies without inner-lip masks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import metrics as M
from tests.test_inference_animator import _tiny_checkpoint, speech_like

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "engine" / "assets" / "sample.wav"


def _animate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "animate", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_default_model_closes_lips_on_sample_by_default_and_not_with_none(tmp_path):
    """The user path: the default `animate` closes the lips where hama hears /p b m/; `--postprocess
    none` is the model alone, identical to the Animator's default; only the mouth moves."""
    from engine.audio import load_audio
    from engine.inference import Animator
    from engine.postprocess import LipCloseConfig, audio_bilabial_evidence, closure_events

    r1 = _animate("--audio", str(SAMPLE), "--out", str(tmp_path / "closed.npy"), "--progress", "none", "--device", "cpu")
    r0 = _animate("--audio", str(SAMPLE), "--out", str(tmp_path / "model.npy"), "--progress", "none",
                  "--device", "cpu", "--postprocess", "none")
    assert r1.returncode == 0 and r0.returncode == 0, r1.stderr + r0.stderr
    closed, model = np.load(tmp_path / "closed.npy"), np.load(tmp_path / "model.npy")
    anim = Animator.from_checkpoint("default", device="cpu")
    np.testing.assert_allclose(model, anim.animate(str(SAMPLE)), atol=1e-5)
    masks = anim.topology.masks
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    tmpl = anim.model.template.detach().float().numpy()
    thr = M.default_closure_threshold(tmpl, masks["face"])
    events = closure_events(audio_bilabial_evidence(load_audio(str(SAMPLE))), M.inner_lip_gap(model, up, lo),
                            anim.fps, LipCloseConfig())
    assert len(events) >= 3, events                    # the sample has several /p b m/ hama hears
    g0, g1 = M.inner_lip_gap(model, up, lo)[events], M.inner_lip_gap(closed, up, lo)[events]
    assert (g1 < thr).all(), (g1, thr)                 # lips meet at every event ...
    assert (g1 <= g0 + 1e-6).all(), (g0, g1)           # ... never opening them wider than the model had them
    assert (g0 >= thr).any(), g0                       # ... and closing some the model alone left apart
    moved = np.abs(closed - model).max(axis=(0, 2)) > 0
    assert not moved[masks["upper_face"]].any() and moved[up].all()
    far = np.ones(len(closed), bool)
    for e in events:
        far[max(0, e - 3):e + 4] = False                # hold 1 + ramp 2 frames either side
    np.testing.assert_array_equal(closed[far], model[far])


def test_bad_postprocess_value_is_refused_with_the_choices(tmp_path):
    r = _animate("--audio", str(SAMPLE), "--out", str(tmp_path / "o.npy"), "--postprocess", "lipsync")
    assert r.returncode == 2
    assert "unknown post-processing 'lipsync'" in r.stderr and "none, lipclose" in r.stderr
    assert not (tmp_path / "o.npy").exists()


def test_topology_without_inner_lip_masks(tmp_path):
    """Default: a warning and the model's output; an explicit lipclose: a clear error, no file."""
    import soundfile as sf
    from engine.checkpoint import load_checkpoint, save_checkpoint
    from engine.inference import Animator
    from engine.topology import Topology

    ckpt = tmp_path / "tiny.safetensors"
    topo = _tiny_checkpoint(ckpt)
    bare = Topology(vertices=topo.vertices, faces=topo.faces, name="bare",
                    masks={k: v for k, v in topo.masks.items() if not k.startswith("lip_")}, fps=30.0)
    anim = Animator.from_checkpoint(str(ckpt), device="cpu")
    c = load_checkpoint(ckpt)
    save_checkpoint(tmp_path / "bare.safetensors", anim.model, config=anim.model.checkpoint_config(), topology=bare,
                    encoder=c.encoder, fps=30.0, data_card={"dataset": "test"})
    sf.write(tmp_path / "a.wav", speech_like(0.6), 16000)
    base = ["--audio", str(tmp_path / "a.wav"), "--checkpoint", str(tmp_path / "bare.safetensors"), "--device", "cpu"]
    r = _animate(*base, "--out", str(tmp_path / "o.npy"), "--progress", "none")
    assert r.returncode == 0, r.stderr
    assert "no lip_upper_inner/lip_lower_inner masks" in r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), anim.animate(str(tmp_path / "a.wav")), atol=1e-5)
    r = _animate(*base, "--out", str(tmp_path / "x.npy"), "--progress", "json", "--postprocess", "lipclose")
    assert r.returncode == 2
    err = json.loads(r.stdout.strip().splitlines()[-1])
    assert err["event"] == "error" and "lip_upper_inner" in err["message"] and "'none'" in err["message"]
    assert not (tmp_path / "x.npy").exists() and not list(tmp_path.glob(".x.tmp*"))


def test_animator_option_is_checked_before_any_work():
    from tests.test_inference_animator import tiny_animator

    anim = tiny_animator()
    with pytest.raises(ValueError, match="unknown post-processing 'snap'"):
        anim.animate(np.zeros(10), postprocess="snap")   # a 10-sample clip would fail later, if at all
