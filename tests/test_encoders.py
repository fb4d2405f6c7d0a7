"""Encoder interface, feature interpolation, HF wav2vec2/HuBERT (tiny random configs), hama."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.encoders import (
    AudioEncoder,
    EncoderError,
    EncoderSpec,
    build_encoder,
    frames_at_50hz,
    interpolate_features,
)


# ----------------------------------------------------------------------------- interface
def test_frames_at_50hz():
    assert frames_at_50hz(0) == 0
    assert frames_at_50hz(319) == 0
    assert frames_at_50hz(320) == 1
    assert frames_at_50hz(16000) == 50
    assert frames_at_50hz(16319) == 50
    with pytest.raises(EncoderError):
        frames_at_50hz(-1)


def test_interpolate_upsample_hand_computed():
    # positions with align_corners=True: 0, 0.5, 1, 1.5, 2
    x = torch.tensor([[0.0], [10.0], [20.0]])
    out = interpolate_features(x, 5)
    assert out.shape == (5, 1)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0]))
    # two frames -> four: positions 0, 1/3, 2/3, 1 ; two channels
    x = torch.tensor([[0.0, 1.0], [3.0, -1.0]])
    out = interpolate_features(x, 4)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(out[:, 1], torch.tensor([1.0, 1 / 3, -1 / 3, -1.0]))


def test_interpolate_downsample_batch_and_edge_cases():
    x = torch.arange(5.0).reshape(1, 5, 1).repeat(2, 1, 1)
    x[1] *= -1
    out = interpolate_features(x, 3)  # positions 0, 2, 4
    assert out.shape == (2, 3, 1)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 2.0, 4.0]))
    torch.testing.assert_close(out[1, :, 0], torch.tensor([0.0, -2.0, -4.0]))
    torch.testing.assert_close(interpolate_features(x, 2)[0, :, 0], torch.tensor([0.0, 4.0]))
    # same length is identity; one input frame is held constant
    assert torch.equal(interpolate_features(x, 5), x)
    torch.testing.assert_close(interpolate_features(torch.tensor([[7.0, 8.0]]), 3), torch.tensor([[7.0, 8.0]] * 3))
    # 50 Hz -> 30 fps for 2 s of audio: exactly num_frames frames, ends preserved
    f = torch.randn(100, 4)
    g = interpolate_features(f, 60)
    assert g.shape == (60, 4)
    torch.testing.assert_close(g[0], f[0])
    torch.testing.assert_close(g[-1], f[-1])
    with pytest.raises(EncoderError):
        interpolate_features(f, 0)
    with pytest.raises(EncoderError):
        interpolate_features(torch.zeros(4), 3)


def test_interpolate_is_differentiable():
    f = torch.randn(1, 10, 3, requires_grad=True)
    interpolate_features(f, 17).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_spec_validation_and_roundtrip():
    s = EncoderSpec("hubert", "some/dir", layer=3)
    assert EncoderSpec.from_dict(s.to_dict()) == s
    assert EncoderSpec().kind == "whisper" and EncoderSpec().name_or_path is None
    with pytest.raises(EncoderError, match="unknown encoder kind 'mfcc'"):
        EncoderSpec("mfcc")
    with pytest.raises(EncoderError, match="needs name_or_path"):
        EncoderSpec("wav2vec2")
    with pytest.raises(EncoderError, match="unknown EncoderSpec fields"):
        EncoderSpec.from_dict({"kind": "whisper", "size": "tiny"})
    with pytest.raises(EncoderError):
        build_encoder(42)  # type: ignore[arg-type]


class _Identityish(AudioEncoder):
    """Toy encoder: feature = mean of each 320-sample frame + window start marker.

    Frame features depend only on their own samples, so chunked encode must
    reproduce the unchunked values exactly, whatever the windowing.
    """

    window_seconds = 1.0
    overlap_seconds = 0.2

    def __init__(self):
        super().__init__(EncoderSpec("whisper"), 1)
        self.calls = []

    def forward(self, wav):
        self.calls.append(wav.shape[1])
        n = wav.shape[1] // 320
        return wav[:, : n * 320].reshape(wav.shape[0], n, 320).mean(-1, keepdim=True)


def test_window_plan_and_chunked_encode_exact():
    enc = _Identityish()
    n = int(3.3 * 16000)
    plan = enc._window_plan(n)
    # hop = 0.8 s = 12800; windows start 0, 12800, 25600, then last moved back to end at n
    assert plan[:3] == [(0, 16000), (12800, 28800), (25600, 41600)]
    assert plan[-1][1] == n and plan[-1][1] - plan[-1][0] <= 16000 and plan[-1][0] % 320 == 0
    wav = np.random.RandomState(0).randn(n).astype(np.float32)
    out = enc.encode(wav)
    ref = torch.from_numpy(wav[: (n // 320) * 320].reshape(-1, 320).mean(-1, keepdims=True))
    assert out.shape == (n // 320, 1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    # progress callback reaches 1.0
    seen = []
    enc.encode(wav, progress=seen.append)
    assert seen[-1] == 1.0 and len(seen) == len(plan)
    # short audio is one window
    assert enc._window_plan(16000) == [(0, 16000)]
    # the result is an ordinary tensor that can feed a trainable layer
    lin = torch.nn.Linear(1, 2)
    lin(out).sum().backward()
    assert lin.weight.grad is not None


# ----------------------------------------------------------------------------- HF models
def _tiny_config(kind: str, **kw):
    from transformers import HubertConfig, Wav2Vec2Config

    cls = Wav2Vec2Config if kind == "wav2vec2" else HubertConfig
    return cls(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        vocab_size=12,
        **kw,
    )


def _save_tiny(kind: str, path, feature_extractor: dict | None = None, **kw):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cls = Wav2Vec2Model if kind == "wav2vec2" else HubertModel
    cls(_tiny_config(kind, **kw)).save_pretrained(path)
    if feature_extractor is not None:
        Wav2Vec2FeatureExtractor(**feature_extractor).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_tiny_hf_encoder_shapes_and_layers(kind, tmp_path):
    path = _save_tiny(kind, tmp_path / kind)
    enc = build_encoder({"kind": kind, "name_or_path": path})
    assert enc.dim == 32
    for seconds in (0.2, 1.0, 2.5):
        n = int(seconds * 16000)
        out = enc.encode(np.random.RandomState(1).randn(n).astype(np.float32) * 0.1)
        assert out.shape == (n // 320, 32) and torch.isfinite(out).all()
    # layer selection: hidden state 0 differs from the output; out of range is refused
    wav = torch.randn(1, 16000) * 0.1
    with torch.no_grad():
        last = enc(wav)
        first = build_encoder(EncoderSpec(kind, path, layer=0))(wav)
    assert last.shape == first.shape == (1, 50, 32)
    assert not torch.allclose(last, first)
    with pytest.raises(EncoderError, match="out of range"):
        build_encoder(EncoderSpec(kind, path, layer=5))


def test_tiny_hf_forward_differentiable(tmp_path):
    enc = build_encoder(EncoderSpec("hubert", _save_tiny("hubert", tmp_path / "h")))
    enc.train()
    enc.freeze_feature_encoder()
    wav = torch.randn(2, 8000) * 0.1
    out = enc(wav)
    assert out.shape == (2, 25, 32)
    out.pow(2).mean().backward()
    grads = [p.grad for n, p in enc.named_parameters() if "encoder.layers" in n]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for n, p in enc.named_parameters() if "feature_extractor" in n)


def test_hf_chunked_encode_matches_single_window_before_seam(tmp_path):
    enc = build_encoder(EncoderSpec("wav2vec2", _save_tiny("wav2vec2", tmp_path / "w")))
    enc.window_seconds, enc.overlap_seconds = 2.0, 0.5
    n = 5 * 16000
    wav = np.random.RandomState(2).randn(n).astype(np.float32) * 0.1
    out = enc.encode(wav)
    assert out.shape == (250, 32)
    first = enc.encode(wav[:32000])
    seam = 24000 // 320  # second window starts at hop = 1.5 s
    torch.testing.assert_close(out[:seam], first[:seam], atol=1e-5, rtol=1e-5)


def test_hf_normalisation_follows_feature_extractor(tmp_path):
    """Normalised input makes the features invariant to gain and DC offset."""
    x = np.random.RandomState(3).randn(16000).astype(np.float32) * 0.1
    y = 3.0 * x + 0.5
    # layer-norm conv stack and no preprocessor config -> normalise (large/lv60 convention)
    auto = build_encoder(EncoderSpec("wav2vec2", _save_tiny("wav2vec2", tmp_path / "a", feat_extract_norm="layer")))
    assert auto.normalize
    torch.testing.assert_close(auto.encode(x), auto.encode(y), atol=1e-4, rtol=1e-4)
    # explicit feature-extractor config wins
    off = build_encoder(
        EncoderSpec(
            "wav2vec2",
            _save_tiny("wav2vec2", tmp_path / "b", feature_extractor={"do_normalize": False}, feat_extract_norm="layer"),
        )
    )
    assert not off.normalize
    assert not torch.allclose(off.encode(x), off.encode(y), atol=1e-3)


def test_hf_errors(tmp_path):
    path = _save_tiny("wav2vec2", tmp_path / "w")
    with pytest.raises(EncoderError, match="is a 'wav2vec2' model, not hubert"):
        build_encoder(EncoderSpec("hubert", path))
    with pytest.raises(EncoderError, match="could not load wav2vec2"):
        build_encoder(EncoderSpec("wav2vec2", str(tmp_path / "missing")))


# ----------------------------------------------------------------------------- hama
@pytest.fixture(scope="module")
def hama_encoder():
    pytest.importorskip("hama")
    return build_encoder(EncoderSpec("hama"))


@pytest.mark.parametrize("num_samples", [3200, 16000, 16000 + 319, 16000 + 320, 7 * 16000])
def test_hama_shape_and_alignment(hama_encoder, num_samples):
    wav = np.random.RandomState(4).randn(num_samples).astype(np.float32) * 0.05
    out = hama_encoder.encode(wav)
    assert out.shape == (num_samples // 320, 191)
    # log-posteriors: each frame is a distribution
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(out.shape[0]), atol=1e-3, rtol=1e-3)


def test_hama_recognises_speech_and_long_audio(hama_encoder, tmp_path):
    import shutil
    import subprocess
    from math import gcd

    import soundfile as sf
    from scipy.signal import resample_poly

    from engine.encoders.hama_features import hama_log_posteriors

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed: run `make sysdeps` (apt package espeak-ng)")
    p = tmp_path / "s.wav"
    subprocess.run([exe, "-w", str(p), "Put the map on the table."], check=True, capture_output=True)
    x, sr = sf.read(p, dtype="float32")
    g = gcd(sr, 16000)
    x = resample_poly(x, 16000 // g, sr // g).astype(np.float32)
    raw = hama_log_posteriors(x)
    assert raw.shape[0] in (len(x) // 320, len(x) // 320 + 1)
    feats = hama_encoder.encode(x)
    from hama import ASRModel

    blank = ASRModel().blank_id
    speech_frames = (feats.argmax(-1) != blank).sum().item()
    assert speech_frames >= 10, "hama found no phonemes in clear synthetic speech"
    # bilabials /p/ and /m/ must be recognised somewhere
    tokens = ASRModel().decoder_tokens
    labels = {tokens[i] for i in feats.argmax(-1).tolist()}
    assert {"p", "m"} <= labels, labels
    # 25 s of audio runs in several windows and keeps exact alignment
    long = np.tile(x, int(np.ceil(25 * 16000 / len(x))))[: 25 * 16000]
    out = hama_encoder.encode(long)
    assert out.shape == (1250, 191)
    with pytest.raises(EncoderError, match="single output"):
        build_encoder(EncoderSpec("hama", layer=2))
