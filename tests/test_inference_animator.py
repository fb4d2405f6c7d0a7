"""Animator: windowed decoding equals one pass, any length works, inputs are validated, CLI end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.inference import Animator
from engine.models.windowing import predict_sequence
from engine.models.composite_regional import CompositeRegionalConfig, CompositeRegionalModel
from engine.topology import Topology, TopologyMismatch
from tests.test_train_support import ToneEncoder, grid_face

REPO = Path(__file__).resolve().parents[1]


def tiny_animator(seed: int = 0, channels: int = 16) -> Animator:
    torch.manual_seed(seed)
    verts, faces, masks = grid_face()
    topo = Topology(vertices=verts, faces=faces, masks=masks, fps=30.0, name="tinygrid")
    enc = ToneEncoder()
    cfg = CompositeRegionalConfig(feature_dim=enc.dim, channels=channels,
                                  encoders=[{"kind": "hama", "name_or_path": None, "layer": -1}])
    model = CompositeRegionalModel(cfg, torch.from_numpy(verts))
    with torch.no_grad():  # non-trivial weights everywhere (BN scales start at 0 otherwise)
        for name, p in model.named_parameters():
            if "bn2.weight" in name:
                p.fill_(0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return Animator(model, [enc], topo, 30.0, torch.device("cpu"))


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    f = 200 + 800 * (np.sin(2 * np.pi * 0.7 * t) > 0)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t)
    return (0.2 * env * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def one_pass(anim: Animator, wav: np.ndarray, fps: float = 30.0) -> np.ndarray:
    """Reference: whole-clip encoder.encode + interpolate + model forward in one call."""
    from engine.audio import load_audio, num_frames
    from engine.encoders import interpolate_features
    wav = load_audio(wav, sample_rate=16000)
    T = num_frames(len(wav), fps)
    feats = interpolate_features(anim.encoders[0].encode(wav), T)
    with torch.no_grad():
        return anim.model(feats.unsqueeze(0))[0].numpy()


def test_short_clip_matches_one_pass():
    anim = tiny_animator()
    wav = speech_like(0.2)
    out = anim.animate(wav)
    assert out.shape == (6, anim.num_vertices, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, one_pass(anim, wav), atol=2e-5)


def test_windowed_segmented_inference_equals_one_pass():
    """Small segments/windows force many encoder segments and decoder windows: same result."""
    anim = tiny_animator()
    wav = speech_like(9.0, seed=1)
    ref = one_pass(anim, wav)
    anim.window_frames = 37
    anim.segment_seconds, anim.overlap_seconds = 60.0, 4.0
    np.testing.assert_allclose(anim.animate(wav), ref, atol=2e-5)
    # 2 s encoder segments overlapping by 0.4 s: the outer quarters of each overlap come from the
    # segment with real context and ToneEncoder's receptive field (40 ms) is shorter than a quarter,
    # so segmenting is exact here (whisper's attention makes it approximate, by design)
    anim.segment_seconds, anim.overlap_seconds = 2.0, 0.4
    np.testing.assert_allclose(anim.animate(wav), ref, atol=2e-5)


@pytest.mark.parametrize("adain_stats", ["window", "clip"])
def test_predict_sequence_exact_for_any_window(adain_stats):
    """Finite receptive field: windows with trimmed margins equal one pass, for any window size."""
    anim = tiny_animator()
    m = anim.model
    m.config.adain_stats, m.config.adain_window = adain_stats, 21
    assert m.receptive_field == (10 + m.decoder_radius if adain_stats == "window" else m.decoder_radius)
    feats = torch.randn(203, m.config.feature_dim)
    with torch.no_grad():
        ref = m(feats.unsqueeze(0))[0].numpy()
    style = m.neutral_style()
    for w in (1, 16, 17, 50, 10_000):
        part = predict_sequence(m, feats, m.template, style, window_frames=w)
        np.testing.assert_allclose(part, ref, atol=1e-5)
    if adain_stats == "window":  # and the windows really are local: a far-away change leaves frame 0 alone
        far = feats.clone()
        far[m.receptive_field + 1:] += 3.0
        np.testing.assert_allclose(predict_sequence(m, far, m.template, style)[0], ref[0], atol=1e-5)
        near = feats.clone()
        near[8] += 3.0   # inside frame 0's statistics window (and decoder reach): it matters
        assert np.abs(predict_sequence(m, near, m.template, style)[0] - ref[0]).max() > 1e-4


def test_long_input_runs_in_windows(monkeypatch):
    """120 s of audio with a tiny model: runs, right length, progress reaches 1 for both stages."""
    anim = tiny_animator()
    wav = speech_like(120.0, seed=2)
    seen: dict[str, float] = {}
    out = anim.animate(wav, progress=lambda s, f: seen.__setitem__(s, f))
    assert out.shape == (3600, anim.num_vertices, 3)
    assert np.isfinite(out).all()
    assert seen == {"encode": 1.0, "decode": 1.0}


def test_fps_template_and_style_inputs():
    anim = tiny_animator()
    wav = speech_like(1.0)
    assert anim.animate(wav, fps=60).shape[0] == 60
    other = anim.model.template.numpy() * 1.3
    out = anim.animate(wav, template=other)
    base = anim.animate(wav)
    # a different identity moves the result (template and its embedding both enter the decoder)
    assert np.abs(out - base).max() > 1e-3
    style = anim.model.template.numpy()[None] + 0.05 * np.random.default_rng(0).standard_normal((40, anim.num_vertices, 3))
    assert anim.animate(wav, style=style.astype(np.float32)).shape == base.shape
    with pytest.raises(TopologyMismatch, match="vertices"):
        anim.animate(wav, template=np.zeros((10, 3), np.float32))
    with pytest.raises(TopologyMismatch, match="topology"):
        anim.animate(wav, style=np.zeros((5, 10, 3), np.float32))


def _tiny_checkpoint(path: Path) -> Animator:
    """A checkpoint whose encoder spec is the real (fast, numpy) hama encoder, so a fresh process can load it."""
    from engine.checkpoint import save_checkpoint
    torch.manual_seed(0)
    verts, faces, masks = grid_face()
    topo = Topology(vertices=verts, faces=faces, masks=masks, fps=30.0, name="tinygrid")
    spec = {"kind": "hama", "name_or_path": None, "layer": -1}
    cfg = CompositeRegionalConfig(feature_dim=191, channels=16, encoders=[spec])
    model = CompositeRegionalModel(cfg, torch.from_numpy(verts))
    save_checkpoint(path, model, config=model.checkpoint_config(), topology=topo, encoder=spec, fps=30.0,
                    data_card={"dataset": "test"}, half=True)
    return topo


def test_from_checkpoint_and_cli_pc2_with_json_progress(tmp_path):
    import soundfile as sf
    from engine.exporters import read_pc2

    ckpt = tmp_path / "tiny.safetensors"
    topo = _tiny_checkpoint(ckpt)
    anim = Animator.from_checkpoint(str(ckpt), device="cpu")
    assert anim.fps == 30.0 and anim.num_vertices == topo.num_vertices
    wav = speech_like(1.5)
    sf.write(tmp_path / "a.wav", wav, 16000)
    out = tmp_path / "out.pc2"
    r = subprocess.run([sys.executable, "-m", "engine", "animate", "--audio", str(tmp_path / "a.wav"),
                        "--checkpoint", str(ckpt), "--out", str(out), "--progress", "json", "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    stages = {e["stage"] for e in events if e["event"] == "progress"}
    assert {"encode", "decode", "write"} <= stages
    done = events[-1]
    assert done == {"event": "done", "out": str(out), "frames": 45, "vertices": topo.num_vertices, "fps": 30.0}
    frames, _ = read_pc2(out)
    np.testing.assert_allclose(frames, anim.animate(str(tmp_path / "a.wav"), postprocess="lipclose"), atol=1e-5)
    assert not list(tmp_path.glob(".out.tmp*"))  # the temporary file was renamed away


def test_cli_refuses_wrong_topology_template_and_pickles(tmp_path):
    import soundfile as sf

    ckpt = tmp_path / "tiny.safetensors"
    _tiny_checkpoint(ckpt)
    sf.write(tmp_path / "a.wav", speech_like(0.5), 16000)
    wrong = Topology(vertices=np.random.rand(7, 3).astype(np.float32), faces=np.array([[0, 1, 2]]),
                     masks={}, name="other")
    wrong.save(tmp_path / "wrong.obj")
    base = [sys.executable, "-m", "engine", "animate", "--audio", str(tmp_path / "a.wav"), "--out",
            str(tmp_path / "o.npy"), "--progress", "json"]
    r = subprocess.run(base + ["--checkpoint", str(ckpt), "--template", str(tmp_path / "wrong.obj")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    err = json.loads(r.stdout.strip().splitlines()[-1])
    assert err["event"] == "error" and "7 vertices" in err["message"] and "expects" in err["message"]
    assert not (tmp_path / "o.npy").exists()
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x02}q\x00.")  # a pickle
    r = subprocess.run(base + ["--checkpoint", str(pt)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "pickle" in json.loads(r.stdout.strip().splitlines()[-1])["message"].lower()


def test_cli_streams_npy_and_mdd_identically(tmp_path):
    import soundfile as sf
    from engine.exporters import read_animation

    ckpt = tmp_path / "tiny.safetensors"
    _tiny_checkpoint(ckpt)
    sf.write(tmp_path / "a.wav", speech_like(0.7), 16000)
    got = {}
    for ext in ("npy", "mdd", "pc2"):
        out = tmp_path / f"o.{ext}"
        r = subprocess.run([sys.executable, "-m", "engine", "animate", "--audio", str(tmp_path / "a.wav"),
                            "--checkpoint", str(ckpt), "--out", str(out), "--progress", "none"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        got[ext], fps = read_animation(out)
        if ext == "mdd":
            assert fps == 30.0
    assert got["npy"].shape == (21, 168, 3)
    np.testing.assert_array_equal(got["npy"], got["mdd"])
    np.testing.assert_array_equal(got["npy"], got["pc2"])
