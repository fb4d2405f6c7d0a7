"""Fast Whisper path (issue 14): our encoder-only module, the weight cache, fitted windows, and
the window mode recorded in checkpoints and honoured by inference and the training cache."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.encoders import EncoderError, EncoderSpec, build_encoder
from engine.encoders.whisper import log_mel_spectrogram
from engine.encoders.whisper_net import WhisperEncoderDims, WhisperEncoderNet

ROOT = Path(__file__).resolve().parents[1]


def _tiny_hf_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                        encoder_ffn_dim=64, max_source_positions=1500, decoder_layers=1,
                        decoder_attention_heads=4, decoder_ffn_dim=64, vocab_size=100, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(0)
    return WhisperEncoder(cfg).eval()


def _net_like(hf) -> WhisperEncoderNet:
    net = WhisperEncoderNet(WhisperEncoderDims.from_hf_config(hf.config))
    net.load_state_dict({k: v.clone() for k, v in hf.state_dict().items()}, strict=True, assign=True)
    return net.eval()


def test_net_is_bit_identical_to_transformers_on_a_full_window():
    hf = _tiny_hf_encoder()
    net = _net_like(hf)
    mel = torch.randn(2, 80, 3000)
    with torch.no_grad():
        ref = hf(mel, output_hidden_states=True)
        assert torch.equal(net(mel), ref.last_hidden_state)
        for i, h in enumerate(ref.hidden_states):   # embeddings, block 1, normed output
            assert torch.equal(net(mel, layer=i), h), i


def test_fitted_window_uses_only_the_first_positions():
    """A window of T frames adds position rows 0..T-1 and nothing else (whisper.cpp's audio_ctx)."""
    net = _net_like(_tiny_hf_encoder())
    mel = torch.randn(1, 80, 2 * 37)
    with torch.no_grad():
        out = net(mel)
        assert out.shape == (1, 37, 32)
        net.embed_positions.weight[37:] = 1e3           # rows past the window: no effect
        assert torch.equal(net(mel), out)
        net.embed_positions.weight[36] += torch.randn(32)  # the window's last row: changes the output
        assert not torch.allclose(net(mel), out)
    with pytest.raises(ValueError, match="mel frames"):
        net(torch.randn(1, 80, 3002))


def test_slaney_filters_equal_transformers():
    from transformers import WhisperFeatureExtractor

    from engine.encoders.whisper import _slaney_mel_filters

    for n in (80, 128):
        fe = WhisperFeatureExtractor(feature_size=n, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
        assert np.array_equal(np.asarray(fe.mel_filters), _slaney_mel_filters(n))


def test_fitted_mel_frames_are_the_full_windows_first_frames():
    rng = np.random.default_rng(0)
    n = 16000 * 2 + 123                                   # not on the 20 ms grid: the tail is kept too
    wav = torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.01)
    wav[12000:14000] *= 50                                # the loudest frame (the log-mel max) is inside
    full = log_mel_spectrogram(wav, window="full")
    fitted = log_mel_spectrogram(wav, window="fitted")
    assert full.shape == (1, 80, 3000) and fitted.shape == (1, 80, 2 * (n // 320))
    assert torch.equal(fitted, full[..., : fitted.shape[-1]])
    with pytest.raises(EncoderError, match="window must be"):
        log_mel_spectrogram(wav, window="half")


def test_spec_window_validation_and_defaults():
    assert EncoderSpec().window == "full"
    assert EncoderSpec.from_dict({"kind": "whisper", "name_or_path": None, "layer": -1}).window == "full"
    assert EncoderSpec.from_dict({"kind": "whisper", "window": "fitted"}).to_dict()["window"] == "fitted"
    with pytest.raises(EncoderError, match="window must be one of"):
        EncoderSpec("whisper", window="30s")
    with pytest.raises(EncoderError, match="whisper option"):
        EncoderSpec("hama", window="fitted")


def test_feature_cache_keys_old_specs_unchanged_and_never_packs_fitted(tmp_path):
    from training.features import FeatureCache, spec_hash

    old = {"kind": "whisper", "name_or_path": None, "layer": -1}       # as written before window modes
    old_hash = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    assert spec_hash(old) == old_hash == spec_hash({**old, "window": "full"})   # existing caches stay valid
    assert spec_hash({**old, "window": "fitted"}) != old_hash

    full, fitted = {**old, "window": "full"}, {**old, "window": "fitted"}
    cache = FeatureCache(tmp_path, [full, fitted], pack_seconds=28.0)
    assert cache.packs(full) and not cache.packs(fitted)

    class _Enc(torch.nn.Module):
        """Records the audio lengths it is asked to encode."""
        dim = 4

        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        def encode(self, wav):
            self.calls.append(len(wav))
            return torch.arange(len(wav) // 320 * 4, dtype=torch.float32).reshape(-1, 4)

    class _Clip:
        def __init__(self, name: str, n: int) -> None:
            self.name, self.source, self.num_frames, self._n = name, f"src-{name}", n // 320 * 30 // 50, n

        def load_wav(self):
            return np.zeros(self._n, np.float32)

    encs = {"full": _Enc(), "fitted": _Enc()}
    cache.set_encoder(full, encs["full"])
    cache.set_encoder(fitted, encs["fitted"])
    clips = [_Clip("a", 32000), _Clip("b", 48000)]
    cache.ensure(clips)
    assert len(encs["full"].calls) == 1                  # packed into one window
    assert encs["fitted"].calls == [32000, 48000]        # each clip alone, as inference encodes a file
    from safetensors.torch import load_file
    got = load_file(str(cache.path(fitted, clips[1])))["features"]
    assert torch.equal(got, encs["fitted"].encode(np.zeros(48000, np.float32)))


# ----------------------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    import os

    d = tmp_path_factory.mktemp("parley-cache")
    old = os.environ.get("PARLEY_CACHE_DIR")
    os.environ["PARLEY_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("PARLEY_CACHE_DIR")
    else:
        os.environ["PARLEY_CACHE_DIR"] = old


def test_weight_cache_written_once_then_read(cache_dir, monkeypatch):
    from engine.encoders import whisper_weights as ww
    from engine.encoders.whisper import offline_model_dir

    monkeypatch.setattr(ww, "_MEMO", {})
    dims, sd = ww.load_encoder_weights(offline_model_dir())
    path = ww.encoder_cache_path(offline_model_dir())
    assert path.parent == cache_dir and path.is_file()
    assert dims == WhisperEncoderDims(80, 384, 4, 6, 1536, 1500)
    monkeypatch.setattr(ww, "_MEMO", {})
    monkeypatch.setattr(ww, "_convert", lambda d: pytest.fail("converted again although the cache exists"))
    dims2, sd2 = ww.load_encoder_weights(offline_model_dir())
    assert dims2 == dims and all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_damaged_or_unwritable_cache_still_gives_the_same_weights(cache_dir, monkeypatch, tmp_path, capsys):
    from engine.encoders import whisper_weights as ww
    from engine.encoders.whisper import offline_model_dir

    monkeypatch.setattr(ww, "_MEMO", {})
    ref = ww.load_encoder_weights(offline_model_dir())[1]
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path / "c"))
    bad = ww.encoder_cache_path(offline_model_dir())
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a safetensors file")
    monkeypatch.setattr(ww, "_MEMO", {})
    sd = ww.load_encoder_weights(offline_model_dir())[1]
    assert "unreadable whisper weight cache" in capsys.readouterr().err
    assert all(torch.equal(ref[k], sd[k]) for k in ref)
    assert ww._read(bad)[0].d_model == 384                # rewritten in a readable form
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(blocker / "sub"))   # cannot create a folder under a file
    monkeypatch.setattr(ww, "_MEMO", {})
    sd = ww.load_encoder_weights(offline_model_dir())[1]
    assert "cannot write the whisper weight cache" in capsys.readouterr().err
    assert all(torch.equal(ref[k], sd[k]) for k in ref)


def test_full_window_encoder_matches_transformers_whisper_bit_for_bit(cache_dir):
    """Old checkpoints (window "full") get exactly the features the transformers encoder gave."""
    from engine.encoders.whisper import load_whisper_model

    enc = build_encoder({"kind": "whisper"})
    hf = load_whisper_model().get_encoder()
    wav = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 16000 * 3 + 50)).astype(np.float32) * 0.1)
    with torch.no_grad():
        ref = hf(log_mel_spectrogram(wav)).last_hidden_state[:, : wav.shape[1] // 320]
        assert torch.equal(enc(wav), ref)


def test_fitted_encoder_shapes_and_30s_equals_full(cache_dir):
    fitted = build_encoder({"kind": "whisper", "window": "fitted"})
    full = build_encoder({"kind": "whisper"})
    rng = np.random.default_rng(4)
    for n in (320, 16000, 16000 * 5 + 17):
        assert fitted.encode(rng.standard_normal(n).astype(np.float32) * 0.1).shape == (n // 320, 384)
    wav = rng.standard_normal(30 * 16000).astype(np.float32) * 0.1
    assert torch.equal(fitted.encode(wav), full.encode(wav))      # a fitted 30 s window is the full one
    short = wav[: 16000 * 3]
    assert not torch.allclose(fitted.encode(short), full.encode(short), atol=1e-3)   # a real change


def test_checkpoint_declared_window_is_what_inference_builds(cache_dir, tmp_path):
    from engine.inference import Animator
    from training.encoder_window import relabel_window

    shipped = ROOT / "engine" / "assets" / "default.safetensors"
    src = relabel_window(shipped, tmp_path / "full.safetensors", "full")
    dst = relabel_window(shipped, tmp_path / "fitted.safetensors", "fitted")
    a_full, a_fit = Animator.from_checkpoint(src, device="cpu"), Animator.from_checkpoint(dst, device="cpu")
    assert [e.spec.window for e in a_full.encoders] == ["full"]
    assert [e.spec.window for e in a_fit.encoders] == ["fitted"]
    wav = np.random.default_rng(5).standard_normal(16000 * 2).astype(np.float32) * 0.1
    from engine.encoders import interpolate_features
    want = interpolate_features(build_encoder({"kind": "whisper", "window": "fitted"}).encode(wav), 60)
    torch.testing.assert_close(a_fit.features(wav, 60), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a_full.features(wav, 60), want, atol=1e-3)


def test_fine_tune_from_a_full_checkpoint_declares_the_runs_window():
    """init_from a full-window default, trained on fitted features: the checkpoint says fitted."""
    from engine.checkpoint import load_checkpoint
    from training.recipes.base import recipe_for

    src = ROOT / "engine" / "assets" / "default.safetensors"
    recipe = recipe_for("composite_regional_lips")
    recipe.configure({"init_from": str(src), "lip_gap_weight": 0.0})
    topo = load_checkpoint(src).topology
    model = recipe.build_model({"encoders": [{"kind": "whisper", "window": "fitted"}]}, topo)
    assert model.checkpoint_config()["encoders"] == [{"kind": "whisper", "window": "fitted"}]
