"""Run any :class:`~engine.models.base.TalkingFaceModel` over a clip of any length in bounded memory.

Two regimes, chosen by the model's ``receptive_field``:

* **exact windows** (``receptive_field = r``): frames ``[t0, t1)`` are predicted from the features
  ``[t0 - r, t1 + r)`` (clipped to the clip) and the margins are dropped.  Every kept frame saw all
  the input it depends on, so the result equals one pass over the whole clip (up to float
  rounding of differently sized convolutions).  A model whose windows need whole-clip quantities
  (the composite model with clip AdaIN statistics) provides them through ``clip_context``.
* **cross-faded chunks** (``receptive_field is None``: the output depends on the whole input, e.g.
  an autoregressive decoder): chunks of ``chunk_frames`` frames, neighbours sharing
  ``chunk_overlap`` frames; in the shared frames the earlier chunk's prediction fades out and the
  later one's fades in linearly (weights ``k / (overlap + 1)``, ``k = 1..overlap``), so the
  animation is continuous across joins and the length is unbounded (FaceFormer's 600-frame limit
  no longer applies).

Only one window's prediction (plus, for chunks, the overlap tail) is held at a time; finished
frames go straight into ``out`` (which can be a memmap or a streaming writer).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["predict_sequence", "crossfade_weights"]


def crossfade_weights(overlap: int) -> Tensor:
    """Weight of the *later* chunk in each of the ``overlap`` shared frames: ``k / (overlap + 1)``."""
    return torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)


@torch.no_grad()
def predict_sequence(model: Any, features: Tensor, template: Tensor, style: Tensor, out: Any = None,
                     window_frames: int = 1024, progress: Callable[[float], None] | None = None) -> Any:
    """``features (T, F)``, ``template (V, 3)``, ``style (S,)`` -> ``out (T, V, 3)`` (float32).

    ``out`` defaults to a new array; anything supporting ``out[a:b] = frames`` works.
    ``window_frames`` sizes the exact windows (the chunk size of global models is the model's own).
    """
    T = int(features.shape[0])
    V = int(model.num_vertices)
    if T < 1:
        raise ValueError("cannot animate zero frames")
    if out is None:
        out = np.empty((T, V, 3), dtype=np.float32)
    elif tuple(out.shape) != (T, V, 3):
        raise ValueError(f"out must have shape {(T, V, 3)}, got {tuple(out.shape)}")
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    tmpl = template.to(dev, torch.float32).unsqueeze(0)
    sty = style.to(dev, torch.float32).unsqueeze(0)
    ctx = model.clip_context(features.to(dev))

    def run(a: int, b: int) -> Tensor:
        x = features[a:b].to(dev, torch.float32).unsqueeze(0)
        y = model.predict(x, tmpl, sty) if ctx is None else model.predict(x, tmpl, sty, context=ctx)
        return y[0].float().cpu()

    r = model.receptive_field
    if r is not None:
        r = int(r)
        n_win = max(1, math.ceil(T / window_frames))
        for k in range(n_win):
            t0, t1 = k * window_frames, min(T, (k + 1) * window_frames)
            a, b = max(0, t0 - r), min(T, t1 + r)
            out[t0:t1] = run(a, b)[t0 - a: t1 - a].numpy()
            if progress is not None:
                progress((k + 1) / n_win)
        return out

    chunk, overlap = int(model.chunk_frames), int(model.chunk_overlap)
    if not 0 <= overlap < chunk:
        raise ValueError(f"chunk_overlap ({overlap}) must be in [0, chunk_frames={chunk})")
    hop = chunk - overlap
    n_chunks = 1 if T <= chunk else 1 + math.ceil((T - chunk) / hop)
    w = crossfade_weights(overlap).view(-1, 1, 1)
    tail: Tensor | None = None            # previous chunk's prediction of the frames [s, s + overlap)
    for k in range(n_chunks):
        s = k * hop
        e = min(T, s + chunk)
        y = run(s, e)
        if tail is not None:
            n = min(overlap, e - s)
            y[:n] = tail[:n] * (1.0 - w[:n]) + y[:n] * w[:n]
        last = k == n_chunks - 1
        keep = e - s if last else hop      # the rest is blended with the next chunk
        out[s:s + keep] = y[:keep].numpy()
        tail = None if last else y[hop:].clone()
        if progress is not None:
            progress((k + 1) / n_chunks)
    return out
