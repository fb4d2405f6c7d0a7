"""Inference: audio of any length in, ``(T, V, 3)`` vertex animation out, in bounded memory.

:class:`Animator` is the public API used by the CLI, the Blender add-on and the evaluation code::

    anim = Animator.from_checkpoint("default", device="auto")
    frames = anim.animate("speech.wav")                 # (T, V, 3) float32 at anim.fps

How memory stays bounded for long audio (an hour is ~6.5 GB of float32 output at V=5000, so the
output itself is the only thing allowed to scale, and it can be a memmap / file, see ``out=``):

1. **Encoder** -- the audio is encoded in segments (``segment_seconds``, default 60 s) that
   overlap by ``overlap_seconds``; in each overlap the outer quarters are taken from the segment
   that has real audio context there and the middle half is cross-faded linearly.  Finished 50 Hz
   frames are resampled to the mesh rate on the fly (exactly
   :func:`engine.encoders.interpolate_features` over the whole clip) and projected by the 1x1
   conv, so only ``Z_audio`` (T x 256 floats: 30 KB per second of audio) is kept.
2. **AdaIN** (eq. 2) needs ``mu/sigma(Z_audio)`` over the whole clip: computed from ``Z_audio``.
3. **Decoder** -- kernel-3, stride-1 convolutions only, so an output frame depends on
   ``decoder_radius`` frames each side.  Frames are decoded in windows of ``window_frames`` plus
   that margin on each side and the margins are trimmed: identical to one pass (no cross-fade
   needed), each window written straight into the preallocated output.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from engine.checkpoint import DEFAULT_CHECKPOINT

__all__ = ["Animator", "DEFAULT_CHECKPOINT", "ProgressFn", "StreamingInterpolator", "decode_windows",
           "style_statistics_chunked", "resolve_device"]

ProgressFn = Callable[[str, float], None]
SPF = 320  # 16 kHz samples per 50 Hz feature frame


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but PyTorch sees no CUDA GPU "
                               "(install a CUDA build of torch 2.13, or use --device cpu / auto)")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


class StreamingInterpolator:
    """Linear ``align_corners=True`` resampling of a 50 Hz stream to ``num_frames`` mesh frames.

    Feed consecutive blocks of finished 50 Hz frames with :meth:`push`; it returns
    ``(first_mesh_frame, rows)`` for every mesh frame whose two source frames have arrived.  The
    concatenation of all outputs equals ``interpolate_features(all_frames, num_frames)``.
    """

    def __init__(self, num_src: int, num_frames: int) -> None:
        if num_src < 1 or num_frames < 1:
            raise ValueError("need at least one source and one output frame")
        self.num_src, self.num_frames = num_src, num_frames
        self.next_out = 0
        self.buf: Tensor | None = None   # source frames [buf_start, buf_start + len)
        self.buf_start = 0

    def _pos(self, j: np.ndarray) -> np.ndarray:
        # float32 arithmetic, as torch's upsample kernel does, so results match it to rounding
        if self.num_frames == 1 or self.num_src == 1:
            return np.zeros_like(j, dtype=np.float32)
        scale = np.float32((self.num_src - 1) / (self.num_frames - 1))
        return (scale * j.astype(np.float32)).astype(np.float32)

    def push(self, block: Tensor) -> tuple[int, Tensor]:
        buf = block if self.buf is None else torch.cat([self.buf, block], dim=0)
        have = self.buf_start + buf.shape[0]            # source frames [0, have) have arrived
        j0 = self.next_out
        j = np.arange(j0, self.num_frames)
        p = self._pos(j)
        lo = np.minimum(np.floor(p).astype(np.int64), self.num_src - 1)
        hi = np.minimum(lo + 1, self.num_src - 1)
        n_ok = int(np.searchsorted(hi, have, side="left"))   # hi is non-decreasing: frames with hi < have
        j1 = j0 + n_ok
        if n_ok:
            lo_t = torch.from_numpy(lo[:n_ok] - self.buf_start)
            hi_t = torch.from_numpy(hi[:n_ok] - self.buf_start)
            w = torch.from_numpy(p[:n_ok] - np.floor(p[:n_ok])).float().unsqueeze(1)
            a, b = buf[lo_t], buf[hi_t]
            rows = a * (1.0 - w) + b * w
        else:
            rows = buf[:0]
        self.next_out = j1
        # keep only the source frames later mesh frames can still need
        keep_from = int(lo[n_ok]) if j1 < self.num_frames else have
        keep_from = max(self.buf_start, min(keep_from, have))
        self.buf = buf[keep_from - self.buf_start:]
        self.buf_start = keep_from
        return j0, rows


def _segment_plan(num_samples: int, segment: int, overlap: int) -> list[tuple[int, int]]:
    """Sample ranges of encoder segments: starts on the 20 ms grid, consecutive ones overlap."""
    if num_samples <= segment:
        return [(0, num_samples)]
    hop = segment - overlap
    plan, s = [], 0
    while s + segment < num_samples:
        plan.append((s, s + segment))
        s += hop
    plan.append((s, num_samples))
    return plan


@torch.no_grad()
def style_statistics_chunked(model: nn.Module, reference: np.ndarray | Tensor, chunk: int = 512,
                             device: torch.device | None = None) -> Tensor:
    """``[mu(Z_face), sigma(Z_face)]`` of a reference ``(T', V, 3)`` without holding ``(T', 3V)`` twice.

    Eq. 1's temporal mean is accumulated first; the per-frame embedding ``W^T Norm(S_i)`` is then
    computed in chunks (only ``(T', C)`` is kept), and the style encoder runs on that.
    """
    device = device or model.W.device
    ref = reference
    n = ref.shape[0]
    if n < 1:
        raise ValueError("style reference has no frames")
    mean = torch.zeros(ref.shape[1], 3, dtype=torch.float64)
    for i in range(0, n, chunk):
        mean += torch.as_tensor(np.asarray(ref[i:i + chunk]), dtype=torch.float64).sum(0)
    mean = (mean / n).float().to(device)
    emb = []
    for i in range(0, n, chunk):
        x = torch.as_tensor(np.asarray(ref[i:i + chunk]), dtype=torch.float32).to(device)
        emb.append(model.embed((x - mean) / model.coord_scale))
    z = torch.cat(emb).t().unsqueeze(0)                               # (1, C, T')
    z_face = model.style_encoder(z)
    mu = z_face.mean(dim=2)
    sigma = torch.sqrt(z_face.var(dim=2, unbiased=False) + 1e-5)
    return torch.cat([mu, sigma], dim=1)[0]


@torch.no_grad()
def decode_windows(model: nn.Module, dec_in: Tensor, template: Tensor, out: np.ndarray,
                   window_frames: int = 1024, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Run decoder + eq. 3 over ``dec_in`` ``(T, C)`` in windows; writes ``out`` ``(T, V, 3)``."""
    T = dec_in.shape[0]
    r = int(model.decoder_radius)
    device = model.W.device
    tmpl = template.to(device).unsqueeze(0)
    n_win = max(1, math.ceil(T / window_frames))
    for k in range(n_win):
        t0, t1 = k * window_frames, min(T, (k + 1) * window_frames)
        a, b = max(0, t0 - r), min(T, t1 + r)
        x = dec_in[a:b].to(device).unsqueeze(0)
        y = model.decode_frames(x, tmpl)[0, t0 - a: t0 - a + (t1 - t0)]
        out[t0:t1] = y.float().cpu().numpy()
        if progress is not None:
            progress((k + 1) / n_win)
    return out


@dataclass
class _Encoders:
    modules: list[nn.Module]


class Animator:
    """Loaded model + encoders, ready to animate audio.  Thread-compatible, not thread-safe."""

    segment_seconds: float = 60.0
    overlap_seconds: float = 4.0
    window_frames: int = 1024

    def __init__(self, model: nn.Module, encoders: list[nn.Module], topology: Any, fps: float,
                 device: torch.device, checkpoint: Any = None) -> None:
        self.model = model.eval().to(device)
        self.encoders = [e.eval().to(device) for e in encoders]
        self.topology = topology
        self.fps = float(fps)
        self.device = device
        self.checkpoint = checkpoint

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike = "default", device: str = "auto") -> "Animator":
        """Load a ``.safetensors`` checkpoint (``'default'`` = the shipped model)."""
        from engine.checkpoint import build_model, load_checkpoint
        from engine.encoders import build_encoder

        if str(path) == "default":
            path = DEFAULT_CHECKPOINT
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"the default checkpoint {path} is missing; train it with "
                    "`python -m training.train --config training/configs/synthtalk_default.toml` "
                    "and copy runs/synthtalk_default/model.safetensors there, or pass --checkpoint")
        dev = resolve_device(device)
        ckpt = load_checkpoint(path)
        model = build_model(ckpt)
        enc_specs = ckpt.config.get("encoders") or [ckpt.encoder]
        if getattr(model, "encoders", None) is not None:
            encoders = list(model.encoders)
        else:
            encoders = [build_encoder(spec) for spec in enc_specs]
        model = model.float()
        return cls(model, encoders, ckpt.topology, ckpt.fps, dev, checkpoint=ckpt)

    @property
    def num_vertices(self) -> int:
        return int(self.model.num_vertices)

    # ------------------------------------------------------------------ inputs
    def _template(self, template: np.ndarray | None) -> Tensor:
        if template is None:
            return self.model.template.detach().float().cpu()
        t = np.asarray(template, dtype=np.float32)
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"template must be a (V, 3) array of vertex positions, got shape {t.shape}")
        if t.shape[0] != self.num_vertices:
            from engine.topology import TopologyMismatch
            raise TopologyMismatch(
                f"template has {t.shape[0]} vertices but this model animates the {self.num_vertices}-vertex "
                f"topology {getattr(self.topology, 'name', '')!r}; use a mesh with the same vertex count and order")
        if not np.isfinite(t).all():
            raise ValueError("template contains NaN or Inf coordinates")
        return torch.from_numpy(t)

    def style_statistics(self, style: np.ndarray) -> Tensor:
        s = style
        if s.ndim == 2 and s.shape[1] == 3 * self.num_vertices:
            s = s.reshape(s.shape[0], self.num_vertices, 3)
        if s.ndim != 3 or s.shape[1:] != (self.num_vertices, 3):
            from engine.topology import TopologyMismatch
            raise TopologyMismatch(
                f"style reference must be (frames, {self.num_vertices}, 3) on this model's topology, got shape {s.shape}")
        return style_statistics_chunked(self.model, s, device=self.device).cpu()

    # ------------------------------------------------------------------ stage 1: audio -> Z_audio
    @torch.no_grad()
    def audio_latent(self, wav: np.ndarray, num_frames: int, progress: Callable[[float], None] | None = None) -> Tensor:
        """``Z_audio`` ``(num_frames, C)`` for a mono 16 kHz waveform, segment by segment."""
        model = self.model
        n = len(wav)
        t50 = n // SPF
        if t50 < 1:
            raise ValueError(f"audio too short: {n} samples; need at least {SPF} (20 ms)")
        seg = int(self.segment_seconds * 16000) // SPF * SPF
        ov = int(self.overlap_seconds * 16000) // SPF * SPF
        plan = _segment_plan(t50 * SPF, seg, ov)
        z = torch.empty(num_frames, model.config.channels, dtype=torch.float32)
        interp = StreamingInterpolator(t50, num_frames)
        pending: Tensor | None = None        # features of the previous segment's overlap tail
        pending_start = 0
        for i, (s0, s1) in enumerate(plan):
            f0, f1 = s0 // SPF, s1 // SPF
            parts = []
            for enc in self.encoders:
                f = enc.encode(wav[s0:s1]).float()
                parts.append(f[: f1 - f0])
            feats = torch.cat(parts, dim=1)                      # (f1 - f0, C_in)
            if pending is not None:
                # Each segment's outermost frames saw padding instead of audio: the first and last
                # quarter of the overlap take only the segment that has real context there, the
                # middle half cross-fades linearly.
                r = pending.shape[0]
                m = r // 4
                ramp = ((torch.arange(r, dtype=torch.float32) - m + 1.0) / (r - 2 * m + 1.0)).clamp(0, 1).unsqueeze(1)
                feats = feats.clone()
                feats[:r] = pending * (1.0 - ramp) + feats[:r] * ramp
            if i < len(plan) - 1:
                nxt = plan[i + 1][0] // SPF
                done, pending = feats[: nxt - f0], feats[nxt - f0:]
                pending_start = nxt
            else:
                done, pending = feats, None
            j0, rows = interp.push(done)
            if rows.shape[0]:
                x = rows.to(self.device).unsqueeze(0)
                z[j0:j0 + rows.shape[0]] = model.audio_latent(x)[0].cpu()
            if progress is not None:
                progress((i + 1) / len(plan))
        del pending_start
        if interp.next_out != num_frames:  # pragma: no cover - guarded by StreamingInterpolator tests
            raise RuntimeError(f"internal error: produced {interp.next_out} of {num_frames} frames")
        return z

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def animate(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None, fps: float | None = None,
                style: np.ndarray | None = None, template: np.ndarray | None = None,
                progress: ProgressFn | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Animate speech: returns ``(T, V, 3)`` float32 with ``T = num_frames(len(audio), fps)``.

        ``audio``: a file path or a mono waveform (arrays are taken as 16 kHz unless ``sample_rate`` says
        otherwise; files carry their own rate).
        ``fps``: output frame rate (default: the checkpoint's).  ``style``: reference motion
        ``(T', V, 3)`` on this topology (any identity); ``None`` = the neutral training style.
        ``template``: a different neutral face ``(V, 3)`` on the same topology.
        ``progress(stage, fraction)`` with stage ``encode`` / ``decode``.
        ``out``: optional preallocated ``(T, V, 3)`` float32 array (e.g. ``np.memmap`` of the
        destination file) -- then nothing of output size is held in RAM.
        """
        from engine.audio import load_audio, num_frames as frames_for

        if isinstance(audio, np.ndarray) and sample_rate is None:
            sample_rate = 16000  # arrays are the engine's canonical 16 kHz unless told otherwise
        wav = load_audio(audio, sample_rate=sample_rate)
        fps = float(fps) if fps else self.fps
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        T = frames_for(len(wav), fps)
        tmpl = self._template(template)
        stage = (lambda name: (lambda f: progress(name, f))) if progress is not None else (lambda name: None)
        z_audio = self.audio_latent(wav, T, progress=stage("encode"))
        if style is not None:
            style_stats = self.style_statistics(np.asarray(style, dtype=np.float32) if not isinstance(style, np.memmap)
                                                else style)
        else:
            style_stats = self.model.neutral_style.detach().float().cpu()
        return self.decode(z_audio, style_stats, tmpl, out=out, progress=stage("decode"))

    @torch.no_grad()
    def decode(self, z_audio: Tensor, style_stats: Tensor, template: Tensor, out: np.ndarray | None = None,
               progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Eq. 2 + decoder + eq. 3 for a whole clip's ``Z_audio`` ``(T, C)``."""
        from engine.models.composite_regional import adain, instance_stats

        model = self.model
        T = z_audio.shape[0]
        if out is None:
            out = np.empty((T, self.num_vertices, 3), dtype=np.float32)
        elif out.shape != (T, self.num_vertices, 3):
            raise ValueError(f"out must have shape {(T, self.num_vertices, 3)}, got {out.shape}")
        sigma_p, mu_p = model.modulation(style_stats.to(self.device).unsqueeze(0))
        mu_a, sig_a = instance_stats(z_audio.unsqueeze(0))
        z_fuse = adain(z_audio.unsqueeze(0), sigma_p.cpu(), mu_p.cpu(), audio_stats=(mu_a, sig_a))[0]
        dec_in = model.decoder_input(z_fuse.to(self.device).unsqueeze(0), template.to(self.device).unsqueeze(0))[0]
        return decode_windows(model, dec_in, template, out, self.window_frames, progress)
