"""Attention masks and positional encoding shared by the transformer talking-face models.

FaceFormer (Fan et al., CVPR 2022) introduced three pieces that SelfTalk (paper 002) reuses:

* **biased causal self-attention mask** (FaceFormer Sec. 3.2, "temporal bias"): ALiBi-style
  linear penalties, but constant within a *period* of ``p`` frames, on top of a causal mask::

      B[h, i, j] = -m_h * floor((i - j) / p)   for j <= i,      -inf for j > i

  with ALiBi's per-head slopes ``m_h`` (a geometric sequence, :func:`alibi_slopes`).  Nearby
  frames (the same period) are attended to without penalty; far ones fade.
* **alignment mask** on the cross-attention (FaceFormer eq. 7): frame ``t`` of the decoder only
  attends to the audio frames aligned with it.  Our features already arrive at the mesh rate
  (one feature per frame, :func:`engine.encoders.interpolate_features`), so the alignment is the
  diagonal -- exactly FaceFormer's VOCASET case, whose wav2vec 2.0 features are also resampled to
  the mesh rate first.
* **periodic positional encoding** (PPE, FaceFormer eq. 5): the sinusoidal encoding of
  ``t mod p`` instead of ``t``, so positions repeat every period and the model generalises to
  sequences longer than the training crops.

Masks are computed for any length on the fly (no ``max_seq_len`` buffer): FaceFormer's 600-frame
buffer is what caps its released code at 20 s.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["alibi_slopes", "biased_causal_mask", "alignment_mask", "PeriodicPositionalEncoding"]


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi head slopes: ``2^(-8/n), 2^(-16/n), ...`` for ``n`` a power of two; otherwise the
    slopes of the nearest lower power of two followed by every other slope of twice that (ALiBi's
    recipe, also FaceFormer's)."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    low = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(low) + alibi_slopes(2 * low)[0::2][: num_heads - low]


def biased_causal_mask(num_heads: int, length: int, period: int, device: torch.device | None = None) -> Tensor:
    """``(num_heads, length, length)`` additive float mask (see the module docstring)."""
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    i = torch.arange(length, device=device).unsqueeze(1)
    j = torch.arange(length, device=device).unsqueeze(0)
    steps = torch.div(i - j, period, rounding_mode="floor").float()              # floor((i-j)/p)
    slopes = torch.tensor(alibi_slopes(num_heads), device=device).view(-1, 1, 1)
    bias = -slopes * steps.unsqueeze(0)
    return bias.masked_fill((j > i).unsqueeze(0), float("-inf"))


def alignment_mask(length: int, memory_length: int | None = None, device: torch.device | None = None) -> Tensor:
    """``(length, memory_length)`` boolean mask, ``True`` = may NOT attend: decoder frame ``t`` sees
    only audio frame ``t`` (features at the mesh rate).  Rows past the memory are left open on the
    last frame so that no row is fully masked (which would give NaN)."""
    s = length if memory_length is None else memory_length
    t = torch.arange(length, device=device).clamp_max(s - 1).unsqueeze(1)
    return torch.arange(s, device=device).unsqueeze(0) != t


class PeriodicPositionalEncoding(nn.Module):
    """FaceFormer's PPE (eq. 5): sinusoidal encoding of ``t mod period``, added to ``(B, T, d)``."""

    def __init__(self, d_model: int, period: int, dropout: float = 0.1) -> None:
        super().__init__()
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        pos = torch.arange(period, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(period, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)
        self.period = period
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        idx = (torch.arange(x.shape[1], device=x.device) + offset) % self.period
        return self.dropout(x + self.pe[idx].unsqueeze(0))
