"""Whisper's audio encoder (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision", Fig. 1 left / Sec. 2.2) as a small stand-alone ``nn.Module``.

Why our own module instead of ``transformers``' ``WhisperEncoder``:

* **cold start** -- importing ``transformers`` (for its Whisper module, which pulls in
  ``torch._dynamo`` and sympy) was about 30 % of a cold CLI run (4.4 of 14.4 s under load,
  ``python -X importtime``); this file needs only torch;
* **fitted windows** -- ``transformers`` refuses anything but 3000 mel frames (30 s).  Like
  whisper.cpp's ``audio_ctx``, :meth:`WhisperEncoderNet.forward` accepts any number of mel frames
  up to 3000 and adds the first ``T`` sinusoidal positions, so a 5 s line costs 1/6 of a 30 s
  window (see :class:`engine.encoders.whisper.WhisperAudioEncoder` for the two window modes).

Parameter names are ``transformers``' (``conv1``, ``embed_positions``, ``layers.i.self_attn.q_proj``
…), so the same state dict loads into either, checkpoints with a fine-tuned encoder keep
loading, and ``tests/test_whisper_fast.py`` checks bit-identical outputs against it.  Operations
and their order also follow it (query scaled before the product, PyTorch's SDPA kernel, exact
GELU), which is what keeps old checkpoints' features bit-identical.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["WhisperEncoderDims", "WhisperEncoderNet"]


@dataclass(frozen=True)
class WhisperEncoderDims:
    """Shapes of a Whisper encoder (tiny.en: 80 mels, 384 wide, 4 layers, 6 heads, 1536 ffn, 1500 positions)."""

    n_mels: int
    d_model: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    n_positions: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, config) -> "WhisperEncoderDims":
        return cls(int(config.num_mel_bins), int(config.d_model), int(config.encoder_layers),
                   int(config.encoder_attention_heads), int(config.encoder_ffn_dim), int(config.max_source_positions))


class _Linear(nn.Module):
    """``nn.Linear`` without random initialisation (the weights always come from a file, and
    ``nn.Linear``'s init of ~8 M parameters costs more than loading them); same ``F.linear``."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        self.bias = nn.Parameter(torch.empty(n_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class _Conv1d(nn.Module):
    """``nn.Conv1d`` (kernel 3, padding 1) without random initialisation; same ``F.conv1d``."""

    def __init__(self, n_in: int, n_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(n_out, n_in, 3))
        self.bias = nn.Parameter(torch.empty(n_out))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, 1)


class _LayerNorm(nn.Module):
    """``nn.LayerNorm`` (eps 1e-5) without initialisation; same ``F.layer_norm``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d))
        self.bias = nn.Parameter(torch.empty(d))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, 1e-5)


class _Table(nn.Module):
    """The fixed sinusoidal position table (``embed_positions.weight``), never trained."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d), requires_grad=False)


class _SelfAttention(nn.Module):
    """Multi-head self-attention; the key projection has no bias (as in Whisper)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d_model {d} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, d // heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = _Linear(d, d, bias=False)
        self.v_proj = _Linear(d, d)
        self.q_proj = _Linear(d, d)
        self.out_proj = _Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        shape = (B, T, self.heads, self.head_dim)
        q = (self.q_proj(x) * self.scaling).view(shape).transpose(1, 2).contiguous()
        k = self.k_proj(x).view(shape).transpose(1, 2).contiguous()
        v = self.v_proj(x).view(shape).transpose(1, 2).contiguous()
        # the query is already scaled, hence scale=1.0 (same arithmetic as transformers' SDPA path)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=1.0, is_causal=False)
        return self.out_proj(y.transpose(1, 2).contiguous().reshape(B, T, -1).contiguous())


class _Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + FFN(LN(x)) with GELU."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(d, heads)
        self.self_attn_layer_norm = _LayerNorm(d)
        self.fc1 = _Linear(d, ffn)
        self.fc2 = _Linear(ffn, d)
        self.final_layer_norm = _LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoderNet(nn.Module):
    """Parameters are uninitialised until a state dict is loaded (``load_state_dict(sd, assign=True)``).

    log-mel ``(B, n_mels, 2T)`` -> hidden states ``(B, T, d_model)`` for any ``T <= n_positions``.

    Two convolutions (the second with stride 2: 100 Hz mel -> 50 Hz), plus the first ``T`` rows
    of the fixed sinusoidal position table, then ``n_layers`` pre-norm blocks and a final
    LayerNorm.  With ``T = n_positions`` this is exactly Whisper's encoder; with fewer frames it
    is whisper.cpp's ``audio_ctx`` (positions sliced, attention over the audio only).
    """

    def __init__(self, dims: WhisperEncoderDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims.d_model
        self.conv1 = _Conv1d(dims.n_mels, d, stride=1)
        self.conv2 = _Conv1d(d, d, stride=2)
        self.embed_positions = _Table(dims.n_positions, d)
        self.layers = nn.ModuleList([_Block(d, dims.n_heads, dims.ffn_dim) for _ in range(dims.n_layers)])
        self.layer_norm = _LayerNorm(d)

    def forward(self, mel: Tensor, layer: int = -1) -> Tensor:
        """``layer=-1``: the normed output; ``0``: the embeddings; ``i``: block ``i``'s output
        (``n_layers``: the normed output, as in ``transformers``' ``hidden_states``)."""
        n_mel = mel.shape[-1]
        if mel.dim() != 3 or mel.shape[1] != self.dims.n_mels:
            raise ValueError(f"expected log-mel (B, {self.dims.n_mels}, frames), got {tuple(mel.shape)}")
        if n_mel < 2 or n_mel > 2 * self.dims.n_positions:
            raise ValueError(f"whisper's encoder takes 2..{2 * self.dims.n_positions} mel frames, got {n_mel}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.embed_positions.weight[: x.shape[1]]
        last = len(self.layers) if layer < 0 else layer
        if last == 0:
            return x
        for block in self.layers[:last]:
            x = block(x)
        return self.layer_norm(x) if last == len(self.layers) else x
