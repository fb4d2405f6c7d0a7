"""Inference: audio of any length in, ``(T, V, 3)`` vertex animation out, in bounded memory.

:class:`Animator` is the public API used by the CLI, the Blender add-on and the evaluation code::

    anim = Animator.from_checkpoint("default", device="auto")     # a shipped name or a .safetensors path
    frames = anim.animate("speech.wav")                 # (T, V, 3) float32 at anim.fps

It works with any :class:`engine.models.base.TalkingFaceModel` and calls only that interface.
How memory stays bounded for long audio (an hour is ~6.5 GB of float32 output at V=5000, so the
output itself is the only thing allowed to scale, and it can be a memmap / file, see ``out=``):

1. **Encoder** -- the audio is encoded in segments (``segment_seconds``, default 60 s) that
   overlap by ``overlap_seconds``; in each overlap the outer quarters are taken from the segment
   that has real audio context there and the middle half is cross-faded linearly.  Finished 50 Hz
   frames are resampled to the mesh rate on the fly (exactly
   :func:`engine.encoders.interpolate_features` over the whole clip), so only the mesh-rate
   features are kept (an hour of whisper tiny features at 30 fps: ~170 MB).
2. **Style** -- ``model.style_from_reference(reference)`` or ``model.neutral_style()``.
3. **Model** -- :func:`engine.models.windowing.predict_sequence`: exact windows for models with a
   finite receptive field, cross-faded chunks for the others; each window is written straight
   into the output.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from engine.checkpoint import DEFAULT_CHECKPOINT

__all__ = ["Animator", "DEFAULT_CHECKPOINT", "ProgressFn", "StreamingInterpolator", "resolve_device"]

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
        """Load a shipped checkpoint by name (``default``, see ``python -m engine info --list``) or a
        ``.safetensors`` file."""
        from engine.checkpoint import build_model, load_checkpoint
        from engine.encoders import build_encoder

        dev = resolve_device(device)
        ckpt = load_checkpoint(path)
        model = build_model(ckpt)
        if getattr(model, "encoders", None) is not None:
            encoders = list(model.encoders)
        else:
            # an encoder the model carries (e.g. Wav2Sem's, in its weights) before one built from its spec
            encoders = [model.encoder_for(spec) or build_encoder(spec)
                        for spec in (ckpt.config.get("encoders") or [ckpt.encoder])]
        return cls(model.float(), encoders, ckpt.topology, ckpt.fps, dev, checkpoint=ckpt)

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

    @torch.no_grad()
    def style_vector(self, style: np.ndarray | None) -> Tensor:
        """The model's style vector for a reference motion ``(T', V, 3)`` (or ``(T', 3V)``); ``None``
        = the model's neutral style."""
        if style is None:
            return self.model.neutral_style().detach().float().cpu()
        s = style if isinstance(style, np.memmap) else np.asarray(style, dtype=np.float32)
        if s.ndim == 2 and s.shape[1] == 3 * self.num_vertices:
            s = s.reshape(s.shape[0], self.num_vertices, 3)
        if s.ndim != 3 or s.shape[1:] != (self.num_vertices, 3):
            from engine.topology import TopologyMismatch
            raise TopologyMismatch(
                f"style reference must be (frames, {self.num_vertices}, 3) on this model's topology, got shape {s.shape}")
        return self.model.style_from_reference(s).detach().float().cpu()

    # ------------------------------------------------------------------ stage 1: audio -> features
    @torch.no_grad()
    def features(self, wav: np.ndarray, num_frames: int, progress: Callable[[float], None] | None = None) -> Tensor:
        """Encoder features at the mesh rate ``(num_frames, F)`` for a mono 16 kHz waveform, segment by segment."""
        n = len(wav)
        t50 = n // SPF
        if t50 < 1:
            raise ValueError(f"audio too short: {n} samples; need at least {SPF} (20 ms)")
        seg = int(self.segment_seconds * 16000) // SPF * SPF
        ov = int(self.overlap_seconds * 16000) // SPF * SPF
        plan = _segment_plan(t50 * SPF, seg, ov)
        z: Tensor | None = None
        interp = StreamingInterpolator(t50, num_frames)
        pending: Tensor | None = None        # features of the previous segment's overlap tail
        for i, (s0, s1) in enumerate(plan):
            f0, f1 = s0 // SPF, s1 // SPF
            feats = torch.cat([enc.encode(wav[s0:s1]).float()[: f1 - f0].cpu() for enc in self.encoders], dim=1)
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
            else:
                done, pending = feats, None
            j0, rows = interp.push(done)
            if z is None:
                z = torch.empty(num_frames, feats.shape[1], dtype=torch.float32)
            z[j0:j0 + rows.shape[0]] = rows
            if progress is not None:
                progress((i + 1) / len(plan))
        if interp.next_out != num_frames or z is None:  # pragma: no cover - guarded by StreamingInterpolator tests
            raise RuntimeError(f"internal error: produced {interp.next_out} of {num_frames} frames")
        return z

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def animate(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None, fps: float | None = None,
                style: np.ndarray | None = None, template: np.ndarray | None = None,
                progress: ProgressFn | None = None, out: Any = None, postprocess: str | None = "none",
                transcript: str | Sequence[tuple[str, float, float]] | None = None) -> np.ndarray:
        """Animate speech: returns ``(T, V, 3)`` float32 with ``T = num_frames(len(audio), fps)``.

        ``audio``: a file path or a mono waveform (arrays are taken as 16 kHz unless ``sample_rate`` says
        otherwise; files carry their own rate).
        ``fps``: output frame rate (default: the checkpoint's).  ``style``: reference motion
        ``(T', V, 3)`` on this topology (any identity); ``None`` = the model's neutral style.
        ``template``: a different neutral face ``(V, 3)`` on the same topology.
        ``progress(stage, fraction)`` with stage ``encode`` / ``decode``.
        ``out``: optional preallocated ``(T, V, 3)`` float32 array (e.g. ``np.memmap`` of the
        destination file) -- then nothing of output size is held in RAM.
        ``postprocess``: ``"none"`` (default: the model's output as is) or ``"lipclose"`` (close the
        lips on /p b m/ heard in the audio, :mod:`engine.postprocess`; streams, so ``out`` stays
        bounded).  The CLI and the add-on default to ``"lipclose"``.
        ``transcript`` (``lipclose`` only): the words spoken -- then the lips close on the
        transcript's /p b m/, timed by forced alignment (:mod:`engine.align`, needs pocketsphinx;
        raises :class:`engine.align.AlignmentError` before any model work if it cannot align) instead
        of the ones a phoneme recogniser hears -- or an already timed phone list
        ``[(ARPAbet, start_s, end_s), ...]``.
        """
        from engine.audio import load_audio, num_frames as frames_for
        from engine.models.windowing import predict_sequence
        from engine.postprocess import check_postprocess

        post = check_postprocess(postprocess)
        if transcript is not None and post != "lipclose":
            raise ValueError("a transcript is only used by postprocess 'lipclose' (it times the lip closures)")
        if post == "lipclose":
            from engine.postprocess import lip_masks
            lip_masks(self.topology.masks)   # refuse before any work when the topology cannot support it
        if isinstance(audio, np.ndarray) and sample_rate is None:
            sample_rate = 16000  # arrays are the engine's canonical 16 kHz unless told otherwise
        wav = load_audio(audio, sample_rate=sample_rate)
        fps = float(fps) if fps else self.fps
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        T = frames_for(len(wav), fps)
        tmpl = self._template(template)
        style_vec = self.style_vector(style)
        stage = (lambda name: (lambda f: progress(name, f))) if progress is not None else (lambda name: None)
        if post == "none":
            feats = self.features(wav, T, progress=stage("encode"))
            return predict_sequence(self.model, feats, tmpl, style_vec, out=out, window_frames=self.window_frames,
                                    progress=stage("decode"))
        from engine.postprocess import LipCloseSink, audio_bilabial_evidence, phone_windows

        # "encode" covers both listening passes: hama's or the aligner's (~1/5 of the time), then
        # the model encoder's
        enc = stage("encode") or (lambda f: None)
        evidence, windows = None, None
        if transcript is None:
            evidence = audio_bilabial_evidence(wav, progress=lambda f: enc(0.2 * f))
        else:
            if isinstance(transcript, str):
                from engine.align import align
                transcript = align(wav, transcript)[0]
            windows = phone_windows(list(transcript), fps, T)
            enc(0.2)
        feats = self.features(wav, T, progress=lambda f: enc(0.2 + 0.8 * f))
        result = np.empty((T, self.num_vertices, 3), dtype=np.float32) if out is None else out
        sink = LipCloseSink(result, evidence, fps, tmpl.numpy(), self.topology.masks, windows=windows)
        predict_sequence(self.model, feats, tmpl, style_vec, out=sink, window_frames=self.window_frames,
                         progress=stage("decode"))
        sink.close()
        return result
