"""hama phoneme log-posteriors as a fixed 191-d, 50 Hz phonetic feature.

Why: a phoneme recogniser's posteriors carry exactly the information a mouth
needs (which sound, when) and little speaker identity, and ``hama`` ships its
weights on PyPI with a numpy-only runtime, so it works offline everywhere.
It is not differentiable and has no trainable parameters.

``hama.ASRModel.transcribe_waveform`` only returns decoded phonemes, so we
feed its inference session the same inputs it does and keep the raw
``log_probs`` output (verified against hama 1.7.0, which the project pins).
The session emits ``S // 320 + 1`` frames for ``S`` samples and at most 1500
frames (30 s) per call; we drop the trailing extra frame and run 10 s windows
(its cost per second grows with window length: ~0.07 s/s at 10 s, ~0.12 s/s
at 20 s, ~0.18 s/s at 30 s on 2 cores).
"""
from __future__ import annotations

import threading

import numpy as np
import torch
from torch import Tensor

from . import (
    AudioEncoder,
    EncoderError,
    EncoderSpec,
    _pad_or_trim_frames,
    frames_at_50hz,
)

__all__ = ["HAMA_DIM", "HamaEncoder", "hama_log_posteriors"]

HAMA_DIM = 191
_LOCK = threading.Lock()
_MODEL = None


def _model():
    """One hama ASRModel per process (its session is reused across calls)."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            try:
                from hama import ASRModel
            except ImportError:
                raise EncoderError("the 'hama' encoder needs the hama package: pip install hama==1.7.0") from None
            m = ASRModel()
            for attr in ("session", "_waveform_input_name", "_waveform_lengths_input_name", "_log_probs_output_name"):
                if not hasattr(m, attr):
                    raise EncoderError(
                        f"this hama version lacks ASRModel.{attr}; Parley was written against hama==1.7.0"
                    )
            if getattr(m, "model_sample_rate", 16000) != 16000:
                raise EncoderError(f"hama model expects {m.model_sample_rate} Hz audio; Parley feeds 16 kHz")
            _MODEL = m
    return _MODEL


def hama_log_posteriors(wav16k: np.ndarray) -> np.ndarray:
    """(S,) float32 16 kHz audio, S <= 30 s -> (S // 320, 191) log-posteriors."""
    m = _model()
    wav = np.ascontiguousarray(wav16k, dtype=np.float32).reshape(1, -1)
    feeds = {
        m._waveform_input_name: wav,
        m._waveform_lengths_input_name: np.array([wav.shape[1]], dtype=np.int64),
    }
    outs = m.session.run([m._log_probs_output_name], feeds)
    lp = np.asarray(outs[0], dtype=np.float32)[0]
    if lp.ndim != 2 or lp.shape[1] != HAMA_DIM:
        raise EncoderError(f"unexpected hama output shape {lp.shape}; expected (T, {HAMA_DIM})")
    return lp


class HamaEncoder(AudioEncoder):
    """Frozen phoneme-posterior features (log-probabilities over 191 IPA tokens incl. blank)."""

    window_seconds = 10.0
    overlap_seconds = 1.0

    def __init__(self, spec: EncoderSpec | None = None) -> None:
        spec = spec or EncoderSpec("hama")
        if spec.kind != "hama":
            raise EncoderError(f"HamaEncoder got spec kind {spec.kind!r}")
        if spec.layer != -1:
            raise EncoderError("hama has a single output; leave layer at -1")
        super().__init__(spec, HAMA_DIM)
        _model()  # load now so errors show at build time, not mid-animation

    def forward(self, wav: Tensor) -> Tensor:
        """(B, S) -> (B, S // 320, 191). Not differentiable (numpy runtime); no gradient flows."""
        if wav.dim() != 2:
            raise EncoderError(f"forward() takes a (B, S) batch, got shape {tuple(wav.shape)}")
        if wav.shape[1] > 30 * 16000:
            raise EncoderError("hama takes at most 30 s per call; use encode() for long audio")
        n = frames_at_50hz(wav.shape[1])
        x = wav.detach().float().cpu().numpy()
        feats = [torch.from_numpy(hama_log_posteriors(row)) for row in x]
        out = _pad_or_trim_frames(torch.stack(feats), n, tolerance=2)
        return out.to(wav.device)
