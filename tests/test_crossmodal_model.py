"""Paper 001's pipeline through the model interface: windows, templates, checkpoints, and the whole
chain (renders -> regressor -> transcoder -> checkpoint -> CLI) on a tiny configuration."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint, save_checkpoint
from engine.models.crossmodal import CrossModalConfig, CrossModalModel
from engine.models.windowing import predict_sequence
from engine.topology import Topology

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """Two torch threads on this shared 2-core machine were 25x slower than one (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(template: torch.Tensor) -> CrossModalModel:
    torch.manual_seed(0)
    cfg = CrossModalConfig(feature_dim=6, latent=8, image_size=16, channels=4, speech_width=8, speech_heads=2,
                           speech_layers=2, speech_radius=3, regressor_width=4, image_batch=7)
    m = CrossModalModel(cfg, template)
    with torch.no_grad():                        # move the regressor off its rest-pose start
        m.regressor.fc.weight.normal_(0, 5.0)
        m.neutral_code_r.normal_()
    return m.eval()


@torch.no_grad()
def test_exact_windows_equal_one_pass_and_any_template_gets_the_motion():
    tmpl = torch.randn(30, 3) * 0.05
    m = _tiny(tmpl)
    assert m.receptive_field == 1 + 2 * 3
    feats = torch.randn(50, 6)
    whole = m.predict(feats[None], tmpl[None])[0].numpy()
    win = predict_sequence(m, feats, tmpl, m.neutral_style(), window_frames=16)
    assert win.shape == (50, 30, 3)
    np.testing.assert_allclose(win, whole, atol=2e-5)
    assert np.abs(whole - tmpl.numpy()).max() > 1e-4                # it moves
    other = tmpl + 0.01
    np.testing.assert_allclose(m.predict(feats[None], other[None])[0].numpy() - other.numpy(),
                               whole - tmpl.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="features must be"):
        m.predict(torch.randn(1, 5, 7), tmpl[None])


@torch.no_grad()
def test_deneutralisation_flag_changes_the_decoded_images():
    tmpl = torch.zeros(10, 3)
    m = _tiny(tmpl)
    feats = torch.randn(1, 4, 6)
    a = m.images(feats)
    m.config.deneutralize = False
    assert a.shape == (1, 4, 3, 16, 16) and not torch.allclose(a, m.images(feats))


@torch.no_grad()
def test_checkpoint_round_trip_fp16(tmp_path):
    topo = Topology.load(ROOT / "engine/assets/default_head.obj")
    m = _tiny(torch.as_tensor(topo.vertices, dtype=torch.float32))
    path = save_checkpoint(tmp_path / "x.safetensors", m, config=m.checkpoint_config(), topology=topo,
                           encoder={"kind": "whisper"}, fps=30.0, data_card={}, half=True)
    back = build_model(load_checkpoint(path))
    feats = torch.randn(1, 9, 6)
    t = torch.as_tensor(topo.vertices, dtype=torch.float32)[None]
    np.testing.assert_allclose(back.predict(feats, t).numpy(), m.predict(feats, t).numpy(), atol=2e-3)
    with pytest.raises(ValueError, match="unknown crossmodal model options"):
        CrossModalConfig.from_dict({"latnet": 3})


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A SynthTalk corpus of 8 clips (train speakers 0 and 1, test speaker 10): CI has no `make data`."""
    from training.synthtalk import generate as G

    out = tmp_path_factory.mktemp("xm_corpus")
    G.generate(out, G.preset("small", clips=8), workers=1, progress=False)
    return out


@pytest.mark.slow
def test_three_stages_train_from_configs_and_the_cli_animates_a_wav(tmp_path, tiny_corpus):
    """The whole chain at toy scale: the stage configs, then ``python -m engine animate``."""
    run = [sys.executable, "-m", "training.crossmodal"]
    r = tmp_path / "renders"
    subprocess.run(run + ["renders", "--config", "training/configs/crossmodal_renders.toml", f'out="{r}"', f'data_root="{tiny_corpus}"',
                          "size=32", "r_clips_per_identity=2", "r_test_identity=10", "r_test_clips=1", "s_train=24", "s_val=4"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=1200)
    subprocess.run(run + ["regressor", "--config", "training/configs/crossmodal_regressor.toml", f'renders="{r}"',
                          f'out="{tmp_path / "reg"}"', "image_size=16", "width=4", "steps=3", "batch_size=4"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=1200)
    subprocess.run(run + ["transcoder", "--config", "training/configs/crossmodal_transcoder.toml", f'renders="{r}"',
                          f'out="{tmp_path / "tc"}"', f'regressor="{tmp_path / "reg" / "regressor.safetensors"}"',
                          f'feature_cache="{tmp_path / "cache"}"', f'data_root="{tiny_corpus}"', "image_size=16", "steps=2", "latent=16",
                          "speech_width=16", "batch_clips=2", "batch_s=4", "paired_fraction=0.5"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=1200)
    ckpt = tmp_path / "tc" / "crossmodal.safetensors"
    out = tmp_path / "a.npy"
    subprocess.run([sys.executable, "-m", "engine", "animate", "--audio", "engine/assets/sample.wav",
                    "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu"], cwd=ROOT, check=True, capture_output=True, text=True, timeout=1200)
    frames = np.load(out)
    import soundfile as sf
    info = sf.info(ROOT / "engine/assets/sample.wav")
    assert frames.shape[1:] == (5672, 3) and abs(frames.shape[0] - info.duration * 30) <= 2
    assert np.isfinite(frames).all()
