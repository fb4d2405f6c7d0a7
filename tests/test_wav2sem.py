"""Wav2Sem (paper 000): the encoder's pretraining step, its per-segment F_s on long audio, the eq. 7
fusion in every host (and that F_s survives the composite model's AdaIN), and a checkpoint that
carries the encoder and animates from the CLI without the pretraining files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.encoders.wav2sem import (Wav2SemConfig, Wav2SemEncoder, load_wav2sem, read_wav2sem_config,
                                     save_wav2sem, semantic_l1_loss)
from engine.models.composite_regional import CompositeRegionalConfig, CompositeRegionalModel, adain
from engine.models.faceformer import FaceFormerConfig, FaceFormerModel
from engine.models.selftalk import SelfTalkConfig, SelfTalkModel
from engine.models.semantic_fusion import SemanticFusion
from engine.topology import Topology

REPO = Path(__file__).resolve().parents[1]
V, FP = 24, 12
TINY = dict(channels=16, tcn_layers=1, layers=1, heads=2, mlp=32, out_dim=8, dropout=0.0,
            segment_seconds=1.0, overlap_seconds=0.5)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: one thread (two threads on a loaded 2-core machine spend their time synchronising)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_encoder(seed: int = 0) -> Wav2SemEncoder:
    torch.manual_seed(seed)
    return Wav2SemEncoder(Wav2SemConfig(**TINY)).eval()


def tiny_file(tmp_path: Path) -> Path:
    return save_wav2sem(tmp_path / "w2s.safetensors", tiny_encoder())


def tiny_topology() -> Topology:
    rng = np.random.default_rng(0)
    return Topology(rng.normal(size=(V, 3)).astype(np.float32) * 0.1, np.array([[0, 1, 2], [2, 3, 4]]),
                    masks={"lips": np.arange(6), "upper_face": np.arange(12, 20), "face": np.arange(V)}, fps=30.0)


def speechish(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    return (env * (0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) + 0.05 * rng.normal(size=n))).astype(np.float32)


# ---------------------------------------------------------------------- encoder + pretraining
def test_l1_loss_hand_value():
    assert semantic_l1_loss(torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(1.5)


def test_pretraining_steps_lower_the_loss_on_a_tiny_case():
    from training.wav2sem import pretrain_step
    enc = Wav2SemEncoder(Wav2SemConfig(**TINY))
    torch.manual_seed(0)
    wavs = [speechish(0.5 + 0.1 * i, seed=i) for i in range(4)]
    target = torch.randn(4, 8)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    losses = [pretrain_step(enc, opt, wavs, target) for _ in range(30)]
    assert losses[-1] < 0.6 * losses[0], losses[::5]


def test_save_load_round_trip_and_bad_file(tmp_path):
    p = tiny_file(tmp_path)
    assert read_wav2sem_config(p).out_dim == 8
    enc = load_wav2sem(p)
    assert not any(q.requires_grad for q in enc.parameters())
    w = speechish(0.9)
    torch.testing.assert_close(enc.encode(w), tiny_encoder().encode(w))
    with pytest.raises(ValueError, match="not found"):
        load_wav2sem(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------- any length (segments)
def test_short_clip_is_one_vector_long_audio_has_no_steps_at_joins():
    from training.wav2sem_analysis import join_smoothness
    enc = tiny_encoder()
    short = enc.encode(speechish(0.9))
    assert short.shape == (45, 8) and torch.allclose(short, short[:1].expand_as(short))   # eq. 5: one F_s
    wav = speechish(6.0, seed=3)
    assert enc.encode(wav).shape == (300, 8)
    j = join_smoothness(enc, wav)                          # 11 windows of 1 s overlapping by 0.5 s
    assert j["windows"] == 11 and j["max_window_step"] > 0
    # the cross-fade spreads a window-to-window change over the 25 overlap frames
    assert j["max_frame_step"] <= j["max_window_step"] / 25 * 1.05 + 1e-6


# ---------------------------------------------------------------------- fusion (eq. 7) in each host
def test_fusion_starts_as_identity_and_learns():
    fu = SemanticFusion(8, FP)
    f_p, f_s = torch.randn(2, 5, FP), torch.randn(2, 5, 8)
    torch.testing.assert_close(fu(f_p, f_s), f_p)
    fu(f_p, f_s).pow(2).sum().backward()
    assert fu.fc_s.weight.grad.abs().sum() > 0


def _features(t: int, fs: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    fp = torch.randn(1, t, FP, generator=g)
    fs = torch.randn(1, 1, 8, generator=g) if fs is None else fs
    return torch.cat([fp, fs.expand(1, t, 8)], dim=2)


HOSTS = {
    "composite_regional": lambda enc: CompositeRegionalModel.from_config(
        CompositeRegionalConfig(feature_dim=FP + 8, channels=16, encoders=enc, adain_stats="window").to_dict(),
        tiny_topology()),
    "selftalk": lambda enc: SelfTalkModel.from_config(
        SelfTalkConfig(feature_dim=FP + 8, d_model=16, period=4, dropout=0.0, encoders=enc).to_dict(), tiny_topology()),
    "faceformer": lambda enc: FaceFormerModel.from_config(
        FaceFormerConfig(feature_dim=FP + 8, num_subjects=2, d_model=16, period=4, dropout=0.0,
                         encoders=enc).to_dict(), tiny_topology()),
}


@pytest.mark.parametrize("kind", sorted(HOSTS))
def test_each_host_fuses_F_s_and_it_changes_the_output(tmp_path, kind):
    specs = [{"kind": "hama"}, {"kind": "wav2sem", "name_or_path": str(tiny_file(tmp_path))}]
    torch.manual_seed(0)
    model = HOSTS[kind](specs).eval()
    assert model.semantic_dim == 8 and model.config.semantic["out_dim"] == 8
    assert model.encoder_for({"kind": "wav2sem"}) is model.semantic.encoder
    with torch.no_grad():                                  # the decoders start at the template: give them a path
        for name, p in model.named_parameters():
            if p.dim() == 2 and p.abs().sum() == 0 and not name.startswith("semantic."):
                p.normal_(0, 0.1)
    tmpl = model.template[None]
    style = model.neutral_style()[None]
    x1 = _features(20, fs=torch.zeros(1, 1, 8))
    x2 = _features(20, fs=torch.ones(1, 1, 8))
    with torch.no_grad():
        y1, y2 = model.predict(x1, tmpl, style), model.predict(x2, tmpl, style)
        assert y1.shape == (1, 20, V, 3)
        torch.testing.assert_close(y1, y2)                 # fc_s starts at zero: F_s has no effect yet
        model.semantic.fusion.fc_s.weight.normal_(0, 1.0)
        y1, y2 = model.predict(x1, tmpl, style), model.predict(x2, tmpl, style)
    assert (y1 - y2).abs().max() > 1e-4                    # ... and once trained it changes the frames
    # the weights round-trip through the config alone (no pretrained file needed)
    rebuilt = type(model).from_config(model.checkpoint_config(), tiny_topology())
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_composite_fusion_survives_adain_and_would_not_before_it():
    """F_s is constant over time: added before eq. 2 it is removed by the instance normalisation."""
    z = torch.randn(1, 30, 16)
    sigma, mu = torch.rand(1, 16) + 0.5, torch.randn(1, 16)
    shift = torch.randn(1, 1, 16)
    torch.testing.assert_close(adain(z + shift, sigma, mu), adain(z, sigma, mu), atol=1e-5, rtol=1e-4)
    fu = SemanticFusion(8, 16)
    with torch.no_grad():
        fu.fc_s.weight.normal_()
    after = fu(adain(z, sigma, mu), torch.ones(1, 30, 8))
    assert (after - adain(z, sigma, mu)).abs().mean() > 0.1


def test_host_without_wav2sem_spec_refuses_a_semantic_config():
    with pytest.raises(ValueError, match="no 'wav2sem' encoder"):
        SelfTalkModel.from_config(SelfTalkConfig(feature_dim=FP, semantic=Wav2SemConfig(**TINY).to_dict()).to_dict(),
                                  tiny_topology())


def test_wav2sem_must_be_the_last_encoder(tmp_path):
    specs = [{"kind": "wav2sem", "name_or_path": str(tiny_file(tmp_path))}, {"kind": "hama"}]
    with pytest.raises(ValueError, match="last"):
        HOSTS["selftalk"](specs)


# ---------------------------------------------------------------------- checkpoint carries the encoder
@pytest.mark.slow
def test_checkpoint_carries_wav2sem_and_animates_from_the_cli_without_its_file(tmp_path):
    import soundfile as sf

    from engine.checkpoint import save_checkpoint
    from engine.inference import Animator
    w2s = tiny_file(tmp_path)
    specs = [{"kind": "hama", "name_or_path": None, "layer": -1},
             {"kind": "wav2sem", "name_or_path": str(w2s), "layer": -1}]
    torch.manual_seed(0)
    topo = tiny_topology()
    model = CompositeRegionalModel.from_config(
        CompositeRegionalConfig(feature_dim=191 + 8, channels=16, encoders=specs).to_dict(), topo)
    with torch.no_grad():
        model.semantic.fusion.fc_s.weight.normal_()
    ckpt = tmp_path / "w2s_host.safetensors"
    save_checkpoint(ckpt, model, config=model.checkpoint_config(), topology=topo, encoder=specs[0], fps=30.0,
                    data_card={"dataset": "test"}, half=True)
    w2s.unlink()                                            # a user's machine has no pretraining run
    anim = Animator.from_checkpoint(str(ckpt), device="cpu")
    assert anim.encoders[1] is anim.model.semantic.encoder
    wav = speechish(1.5)
    sf.write(tmp_path / "a.wav", wav, 16000)
    out = tmp_path / "out.npy"
    r = subprocess.run([sys.executable, "-m", "engine", "animate", "--audio", str(tmp_path / "a.wav"),
                        "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(out), anim.animate(str(tmp_path / "a.wav")), atol=1e-5)


# ---------------------------------------------------------------------- analysis on tiny cases
def test_word_frames_and_pair_distance_hand_values():
    from training.wav2sem_analysis import pair_distance_ratio, word_frames
    words = [["the", 0.0, 0.1], ["Ship,", 0.1, 0.2]]
    assert word_frames(words, "ship", 30.0, 10).tolist() == [3, 4, 5]
    with pytest.raises(KeyError):
        word_frames(words, "sheep", 30.0, 10)
    v = {"a": np.array([0.0, 0.0]), "b": np.array([1.0, 0.0]), "c": np.array([0.0, 2.0])}
    # all pairs: |ab| = 1, |ac| = 2, |bc| = sqrt(5); ratio of ab = 1 / mean
    assert pair_distance_ratio(v, [("a", "b")])["a/b"] == pytest.approx(3 / (3 + 5 ** 0.5))


def test_linear_probe_separates_separable_phones_and_not_noise():
    from training.wav2sem_analysis import linear_probe, pca2
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    centres = torch.randn(4, 6, generator=g) * 4
    x = centres[y] + torch.randn(200, 6, generator=g) * 0.3
    assert linear_probe(x[:100], y[:100], x[100:], y[100:], 4) == 1.0
    noise = torch.randn(200, 6, generator=g)
    assert linear_probe(noise[:100], y[:100], noise[100:], y[100:], 4) < 0.5
    line = np.outer(np.arange(5.0), [1.0, 2.0, 0.0])
    p = pca2(line)
    assert p.shape == (5, 2) and np.allclose(p[:, 1], 0, atol=1e-9)


def test_selftalk_recipe_with_wav2sem_uses_only_the_whisper_part_as_recogniser_latent(tmp_path):
    """L_lat compares the lip reader's latent with the speech encoder's features (x_e2), never F_s."""
    from training.recipes.selftalk import SelfTalkRecipe, latent_consistency_loss
    recipe = SelfTalkRecipe()
    recipe.configure({"w_ctc": 0.0})
    specs = [{"kind": "hama"}, {"kind": "wav2sem", "name_or_path": str(tiny_file(tmp_path))}]
    torch.manual_seed(0)
    cfg = SelfTalkConfig(feature_dim=FP + 8, d_model=16, period=4, dropout=0.0, encoders=specs)
    model = recipe.build_model(cfg.to_dict(), tiny_topology())
    aux = recipe.build_aux(model, {})
    model.eval(), aux.eval()                 # no dropout: the two computations below must agree
    feats = _features(24)
    tmpl = model.template[None]
    batch = {"features": feats, "vertices": tmpl.unsqueeze(1).expand(1, 24, V, 3) + 0.01,
             "template": tmpl, "subject": torch.zeros(1, dtype=torch.long)}
    out = recipe.loss(model, aux, batch, 0)
    latent, _ = aux["lip_reader"](model.offsets(feats))
    assert out.terms["lat"] == pytest.approx(float(latent_consistency_loss(latent, feats[..., :FP])), rel=1e-5)
    out.total.backward()
    assert model.semantic.fusion.fc_s.weight.grad is not None
    assert all(p.grad is None for p in model.semantic.encoder.parameters())   # the encoder stays frozen
