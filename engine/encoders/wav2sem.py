"""Wav2Sem (Li et al., CVPR 2025, paper 000): a sentence-level semantic vector from the audio itself.

The paper's encoder, equation by equation (read beside Sec. 3.2-3.5):

* **eq. 2** ``Z = TCN(A)`` -- a temporal convolutional network over the audio.  Here over an
  80-bin log-mel spectrogram (10 ms hop): one stride-2 convolution to 50 Hz (the paper's output
  rate is 49 Hz, one vector per ~20 ms) then ``tcn_layers`` residual dilated kernel-3 blocks;
* **eqs. 3-4** ``Z^l = Z^l' + MLP(LN(Z^l'))`` with ``Z^l' = Z^{l-1} + MHSA(LN(Z^{l-1}))`` -- a
  pre-norm transformer encoder (:class:`torch.nn.TransformerEncoderLayer` with ``norm_first``);
* **eq. 5** ``F_s = 1/N sum_i Z_i`` -- the mean over time (padding frames excluded), followed by a
  linear head to the teacher's width (384 for all-MiniLM-L6-v2);
* **eq. 8** ``L = || F_CLS - F_s ||_1`` -- :func:`semantic_l1_loss`, against a frozen text encoder's
  sentence embedding of the transcript (``variant = "c"``: the first token, the paper's CLS;
  ``"m"``: the mean of the tokens).  The teacher and the pretraining loop live in
  :mod:`training.wav2sem`.

Scaled down from the paper (7 TCN blocks of 512 channels + 12 transformer layers of width 768 with
8 heads and MLP 3072, 200 epochs of LibriSpeech-960 on a GPU): ``channels = 192``, 3 TCN blocks,
3 transformer layers, 4 heads, MLP 768 (~1.7 M parameters, 3.4 MB in fp16), pretrained on the
SynthTalk training clips on 2 shared CPU cores.  The linear head exists because the width differs
from the teacher's (the paper's C equals BERT's 768, so its F_s *is* the pooled Z).  The input is a
log-mel spectrogram instead of the raw waveform: the paper's TCN front end learns a filterbank from
960 h; 1.2 h of speech cannot.

**Any length (the issue's segment rule).**  ``F_s`` is one vector per sentence.  As an
:class:`engine.encoders.AudioEncoder` the module returns it for every 50 Hz frame of its window
(``forward``), and :meth:`AudioEncoder.encode` runs windows of ``segment_seconds`` overlapping by
``overlap_seconds`` and cross-fades the overlaps linearly.  So a clip up to ``segment_seconds`` long
gets exactly the paper's single vector, and longer audio gets one vector per window, blended
linearly between neighbouring windows: ``F_s(t)`` is continuous, so no step appears at a join.
Training features (the harness's cache, per clip, never packed with other clips -- ``packable``)
and inference (:class:`engine.inference.Animator`) both call ``encode``, so they agree.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import AudioEncoder, EncoderError, EncoderSpec, SAMPLES_PER_FRAME

__all__ = ["Wav2SemConfig", "Wav2Sem", "Wav2SemEncoder", "log_mel", "semantic_l1_loss", "save_wav2sem",
           "load_wav2sem", "VARIANTS"]

VARIANTS = ("c", "m")
N_FFT, HOP = 400, 160  # 25 ms window, 10 ms hop at 16 kHz


@dataclass
class Wav2SemConfig:
    """Architecture (stored with the weights, and in every host checkpoint that carries them)."""

    variant: str = "c"               # teacher target: "c" first token (CLS), "m" mean of tokens
    n_mels: int = 80
    channels: int = 128              # C (paper: 512 in the TCN, 768 in the transformer)
    tcn_layers: int = 2              # paper: 7
    layers: int = 2                  # paper: 12
    heads: int = 4                   # paper: 8
    mlp: int = 512                   # paper: 3072
    stride: int = 8                  # 100 Hz mel -> 12.5 Hz tokens (paper: 49 Hz)
    out_dim: int = 384               # teacher width (all-MiniLM-L6-v2)
    dropout: float = 0.1
    segment_seconds: float = 6.0     # one F_s per window of this length ...
    overlap_seconds: float = 3.0     # ... neighbours overlap and are cross-faded

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Wav2SemConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EncoderError(f"unknown Wav2Sem options {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if cfg.variant not in VARIANTS:
            raise EncoderError(f"Wav2Sem variant must be 'c' or 'm', got {cfg.variant!r}")
        if not 0 <= cfg.overlap_seconds < cfg.segment_seconds:
            raise EncoderError("Wav2Sem overlap_seconds must be in [0, segment_seconds)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MEL: dict[int, Tensor] = {}


def log_mel(wav: Tensor, n_mels: int = 80) -> Tensor:
    """``(B, S)`` 16 kHz -> ``(B, n_mels, S // 160)`` log-mel, a fixed per-frame map (no per-clip
    normalisation, so a frame's value does not depend on how much audio surrounds it)."""
    if n_mels not in _MEL:
        from .whisper import _mel_filters
        with torch.inference_mode(False):
            _MEL[n_mels] = _mel_filters(n_mels).clone()
    window = torch.hann_window(N_FFT, device=wav.device)
    spec = torch.stft(wav.float(), N_FFT, HOP, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = spec[..., : wav.shape[-1] // HOP].abs() ** 2
    mel = torch.matmul(_MEL[n_mels].to(wav.device).T, power)
    return (mel.clamp_min(1e-10).log10().clamp_min(-8.0) + 4.0) / 4.0


class TCNBlock(nn.Module):
    """Residual dilated kernel-3 convolution: ``x + conv(GELU(conv_d(LN(x))))`` on ``(B, C, N)``."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.gelu(self.conv1(self.norm(x))))


class Wav2Sem(nn.Module):
    """Log-mel -> TCN (eq. 2) -> transformer (eqs. 3-4) -> masked mean (eq. 5) -> head: ``F_s (B, out_dim)``."""

    def __init__(self, config: Wav2SemConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        if config.stride not in (2, 4, 8):
            raise EncoderError(f"Wav2Sem stride must be 2, 4 or 8, got {config.stride}")
        self.front = nn.Conv1d(config.n_mels, c, 5, stride=2, padding=2)                  # 100 Hz -> 50 Hz
        self.down = nn.ModuleList(nn.Conv1d(c, c, 5, stride=2, padding=2)                 # -> 100 / stride Hz
                                  for _ in range(int(math.log2(config.stride)) - 1))
        self.tcn = nn.Sequential(*[TCNBlock(c, 2 ** i) for i in range(config.tcn_layers)])  # eq. 2
        layer = nn.TransformerEncoderLayer(c, config.heads, config.mlp, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)           # eqs. 3-4
        self.transformer = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, config.out_dim)

    def tokens(self, wav: Tensor) -> Tensor:
        """``Z`` of eq. 2: ``(B, S)`` -> ``(B, N, C)``, ``N = S // (160 * stride)`` tokens."""
        z = F.gelu(self.front(log_mel(wav, self.config.n_mels)))
        for conv in self.down:
            z = F.gelu(conv(z))
        z = self.tcn(z).transpose(1, 2)
        return z[:, : max(1, wav.shape[-1] // (HOP * self.config.stride))]

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``F_s`` of each clip ``(B, out_dim)``; ``lengths`` (samples) masks right padding."""
        z = self.tokens(wav)
        n = z.shape[1]
        if lengths is None:
            valid = torch.ones(z.shape[0], n, dtype=torch.bool, device=z.device)
        else:
            hop = HOP * self.config.stride
            valid = torch.arange(n, device=z.device)[None] < (lengths.to(z.device) // hop).clamp_min(1)[:, None]
        z = self.transformer(z, src_key_padding_mask=~valid)
        z = self.norm(z) * valid.unsqueeze(-1)
        pooled = z.sum(1) / valid.sum(1, keepdim=True).clamp_min(1)                      # eq. 5
        return self.head(pooled)


def semantic_l1_loss(f_s: Tensor, target: Tensor) -> Tensor:
    """Eq. 8: ``|| F_CLS - F_s ||_1``, averaged over the elements of the batch."""
    return (f_s - target).abs().mean()


class Wav2SemEncoder(AudioEncoder):
    """Wav2Sem as an audio encoder of the engine: ``F_s`` repeated on every 50 Hz frame of a window.

    Windows of ``segment_seconds`` overlapping by ``overlap_seconds`` are cross-faded by
    :meth:`AudioEncoder.encode` (see the module docstring).  ``packable = False``: the harness's
    feature cache must encode each clip on its own (several sentences in one window would share
    one semantic vector).
    """

    packable = False

    def __init__(self, config: Wav2SemConfig, spec: EncoderSpec | None = None) -> None:
        super().__init__(spec or EncoderSpec(kind="wav2sem"), config.out_dim)
        self.config = config
        self.window_seconds = config.segment_seconds
        self.overlap_seconds = config.overlap_seconds
        self.net = Wav2Sem(config)

    def forward(self, wav: Tensor) -> Tensor:
        n = wav.shape[-1] // SAMPLES_PER_FRAME
        return self.net(wav).unsqueeze(1).expand(-1, n, -1)


def save_wav2sem(path: str | os.PathLike, encoder: Wav2SemEncoder, extra: dict | None = None) -> Path:
    """Weights (float32 safetensors) + architecture JSON, written atomically."""
    from safetensors.torch import save_file

    from engine.fileio import atomic_path
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.net.state_dict().items()}
    meta = {"wav2sem": json.dumps({"config": encoder.config.to_dict(), **(extra or {})})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_wav2sem_config(path: str | os.PathLike) -> Wav2SemConfig:
    """The architecture stored in a pretrained Wav2Sem file (no weights read)."""
    from safetensors import safe_open
    p = Path(path)
    if not p.is_file():
        raise EncoderError(f"Wav2Sem weights {p} not found; pretrain them with "
                           "`python -m training.wav2sem --variant c --out runs/wav2sem_c`")
    with safe_open(str(p), "pt") as fh:
        meta = fh.metadata() or {}
    if "wav2sem" not in meta:
        raise EncoderError(f"{p} is not a Wav2Sem weight file (no 'wav2sem' metadata)")
    return Wav2SemConfig.from_dict(json.loads(meta["wav2sem"])["config"])


def load_wav2sem(spec: EncoderSpec | str | os.PathLike) -> Wav2SemEncoder:
    """Build the encoder of a spec (``name_or_path`` = a file written by :func:`save_wav2sem`), frozen."""
    from safetensors.torch import load_file
    if not isinstance(spec, EncoderSpec):
        spec = EncoderSpec(kind="wav2sem", name_or_path=str(spec))
    if not spec.name_or_path:
        raise EncoderError("encoder kind 'wav2sem' needs name_or_path (a pretrained Wav2Sem .safetensors)")
    enc = Wav2SemEncoder(read_wav2sem_config(spec.name_or_path), spec)
    enc.net.load_state_dict(load_file(str(spec.name_or_path)), strict=True)
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()
