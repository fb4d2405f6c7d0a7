"""FaceFormer baseline (Fan et al., CVPR 2022): the autoregressive transformer that papers 000-003
compare against.

* **Encoder side**: speech features (here the frozen Whisper tiny.en encoder, cached; FaceFormer
  fine-tunes wav2vec 2.0) at the mesh rate -> linear map to ``d_model`` (the paper's "audio feature
  projection").
* **Style embedding** (Sec. 3.2): a speaker one-hot ``s`` -> ``W_s s`` (linear, no bias),
  added to every motion token and used as the start token.
* **Decoder** (Sec. 3.2-3.3): motion tokens = ``W_m (y_{t-1} - template) + W_s s`` plus the
  periodic positional encoding (PPE, eq. 5); self-attention with the biased causal mask (eq. 6),
  cross-attention with the alignment mask (eq. 7), FFN; a linear motion decoder, initialised to
  zero, gives the offset of frame ``t``, which is added to the template.
* **Autoregression without teacher forcing** (Sec. 3.4): frame ``t`` is predicted from the
  model's *own* previous predictions, in training (the paper's scheme) and at inference alike.
  The authors' code re-runs the decoder over all tokens so far at every step; under the causal
  mask the earlier outputs do not change, so we push only the newest token through each layer
  (same numbers, O(T) instead of O(T^2) layer evaluations; a test checks the equality).

Neutral style: FaceFormer needs a training speaker at test time.  ``neutral_style`` is the mean of
the training clips' one-hots (set by the recipe; uniform over speakers before that), so the style
embedding it gives is the average speaker embedding -- one fixed, documented choice that needs no
speaker id from the user.  A reference motion is refused: FaceFormer conditions on identity
one-hots, not on motion (:class:`engine.models.base.StyleNotSupported`).

Long audio: the output depends on every earlier frame (``receptive_field = None``), so
``engine.models.windowing`` runs overlapping ``chunk_frames`` chunks and cross-fades them; the
masks are built for any length, so there is no 600-frame (20 s) limit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from engine.checkpoint import register_model
from engine.models.base import TalkingFaceModel
from engine.models.transformer_parts import PeriodicPositionalEncoding, alignment_mask, biased_causal_mask

__all__ = ["FaceFormerConfig", "FaceFormerModel", "KIND"]

KIND = "faceformer"


@dataclass
class FaceFormerConfig:
    """Hyper-parameters stored in the checkpoint (``feature_dim``/``encoders`` set by the harness)."""

    feature_dim: int = 384
    num_subjects: int = 8             # style one-hot size = training speakers
    d_model: int = 64                 # FaceFormer: 64
    num_heads: int = 4                # FaceFormer: 4
    num_layers: int = 1               # FaceFormer: 1
    ff_mult: int = 2                  # FFN width = ff_mult * d_model (FaceFormer: 2)
    period: int = 30                  # PPE / biased-mask period (FaceFormer: 30 on VOCASET)
    dropout: float = 0.1
    chunk_frames: int = 600
    chunk_overlap: int = 60
    encoders: list[dict] = field(default_factory=lambda: [{"kind": "whisper", "name_or_path": None, "layer": -1}])
    encoder_in_model: bool = False
    semantic: dict | None = None      # Wav2Sem architecture when a 'wav2sem' encoder is last (paper 000)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceFormerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown faceformer model options {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if cfg.d_model % cfg.num_heads:
            raise ValueError(f"d_model ({cfg.d_model}) must be divisible by num_heads ({cfg.num_heads})")
        if cfg.num_subjects < 1:
            raise ValueError("num_subjects must be >= 1")
        if cfg.encoder_in_model:
            raise ValueError("faceformer checkpoints use a frozen encoder (encoder_in_model = false)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@register_model(KIND)
class FaceFormerModel(TalkingFaceModel):
    """Audio features + speaker style -> autoregressively decoded ``(B, T, V, 3)``."""

    receptive_field = None

    def __init__(self, config: FaceFormerConfig, template: Tensor) -> None:
        super().__init__()
        if template.dim() != 2 or template.shape[1] != 3:
            raise ValueError(f"template must be (V, 3), got {tuple(template.shape)}")
        self.config = config
        self.num_vertices = v = int(template.shape[0])
        self.chunk_frames = config.chunk_frames
        self.chunk_overlap = config.chunk_overlap
        d = config.d_model
        self.register_buffer("template", template.detach().float().clone())
        # mean of the training one-hots (the recipe sets it from the training clips)
        self.register_buffer("neutral_style_vector", torch.full((config.num_subjects,), 1.0 / config.num_subjects))
        from engine.models.semantic_fusion import build_semantic_plugin
        # Wav2Sem (paper 000, eq. 7) on the speech encoder's output, before the host's own layers
        self.semantic, config.semantic = build_semantic_plugin(config.semantic, config.encoders, config.feature_dim)
        self.audio_feature_map = nn.Linear(config.feature_dim - self.semantic_dim, d)
        self.style_embedding = nn.Linear(config.num_subjects, d, bias=False)     # W_s
        self.motion_encoder = nn.Linear(3 * v, d)                                # W_m
        self.ppe = PeriodicPositionalEncoding(d, config.period, config.dropout)
        layer = nn.TransformerDecoderLayer(d, config.num_heads, dim_feedforward=config.ff_mult * d,
                                           dropout=config.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.num_layers)
        self.motion_decoder = nn.Linear(d, 3 * v)
        nn.init.zeros_(self.motion_decoder.weight)
        nn.init.zeros_(self.motion_decoder.bias)

    # ------------------------------------------------------------------ construction / checkpoints
    @classmethod
    def from_config(cls, config: dict[str, Any], topology: Any) -> "FaceFormerModel":
        return cls(FaceFormerConfig.from_dict(config), torch.as_tensor(topology.vertices, dtype=torch.float32))

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    # ------------------------------------------------------------------ style
    def neutral_style(self) -> Tensor:
        return self.neutral_style_vector.clone()

    @torch.no_grad()
    def set_neutral_style(self, subject_counts: Tensor) -> None:
        """Neutral style = mean of the training clips' one-hots = normalised clip counts per speaker."""
        counts = torch.as_tensor(subject_counts, dtype=torch.float32).reshape(-1)
        if counts.numel() != self.config.num_subjects or counts.sum() <= 0:
            raise ValueError(f"need {self.config.num_subjects} non-negative counts, got {counts.tolist()}")
        self.neutral_style_vector.copy_(counts / counts.sum())

    def one_hot(self, subject: Tensor) -> Tensor:
        """Training-subject indices ``(B,)`` -> style vectors ``(B, num_subjects)``."""
        return nn.functional.one_hot(subject.long(), self.config.num_subjects).float()

    # ------------------------------------------------------------------ decoding
    def decode(self, features: Tensor, style: Tensor) -> Tensor:
        """Autoregressive decoding (no teacher forcing): ``(B, T, F)``, ``(B, S)`` -> offsets ``(B, T, V, 3)``.

        Frame ``i``'s token is ``W_m y_{i-1} + W_s s`` (the start token is ``W_s s``) plus PPE.  The
        decoder runs incrementally: each layer keeps the inputs of the frames so far, and only the
        newest frame is pushed through (keys/values over all kept frames).  Under the causal mask
        this equals re-running the decoder over the whole prefix, as the authors' code does, at
        O(T) instead of O(T^2) layer evaluations (:meth:`decode_parallel` is that reference).
        """
        if features.dim() != 3 or features.shape[2] != self.config.feature_dim:
            raise ValueError(f"features must be (B, T, {self.config.feature_dim}), got {tuple(features.shape)}")
        b, t, _ = features.shape
        if style.shape != (b, self.config.num_subjects):
            raise ValueError(f"style must be (B, {self.config.num_subjects}) (a speaker one-hot or the neutral "
                             f"style), got {tuple(style.shape)}")
        memory = self.audio_feature_map(self.fused_features(features))
        style_emb = self.style_embedding(style.to(memory.dtype)).unsqueeze(1)       # (B, 1, d): start token
        self_bias = biased_causal_mask(self.config.num_heads, t, self.config.period, memory.device)
        kept: list[Tensor | None] = [None] * len(self.decoder.layers)               # per layer: inputs so far
        # W_m (W_d h + b_d) + b_m: the motion decoder followed by the motion encoder is one d x d affine
        # map, so the next token comes from h directly and the (B, 3V) offsets are decoded once at the end
        # (the same numbers and gradients; the 3V-wide products per step dominated the cost).
        feedback_w = self.motion_encoder.weight @ self.motion_decoder.weight               # (d, d)
        feedback_b = self.motion_encoder.weight @ self.motion_decoder.bias + self.motion_encoder.bias
        token = style_emb
        hidden: list[Tensor] = []
        for i in range(t):
            x = self.ppe(token, offset=i)
            for k, layer in enumerate(self.decoder.layers):
                kept[k] = x if kept[k] is None else torch.cat([kept[k], x], dim=1)
                # the alignment mask's row i opens only audio frame i: attend to that one frame
                x = self._layer_step(layer, x, kept[k], memory[:, i:i + 1],
                                     self_bias[:, i:i + 1, :i + 1].repeat(b, 1, 1))
            hidden.append(x)
            token = nn.functional.linear(x, feedback_w, feedback_b) + style_emb     # W_m y_i + b_m + W_s s
        offsets = self.motion_decoder(torch.cat(hidden, dim=1))                        # (B, T, 3V)
        return offsets.unflatten(-1, (self.num_vertices, 3))

    @staticmethod
    def _layer_step(layer: nn.TransformerDecoderLayer, x: Tensor, prefix: Tensor, memory: Tensor,
                    self_mask: Tensor) -> Tensor:
        """One post-norm decoder layer for the newest frame ``x (B, 1, d)`` given its layer inputs so far."""
        sa = layer.self_attn(x, prefix, prefix, attn_mask=self_mask, need_weights=False)[0]
        x = layer.norm1(x + layer.dropout1(sa))
        ca = layer.multihead_attn(x, memory, memory, need_weights=False)[0]
        x = layer.norm2(x + layer.dropout2(ca))
        return layer.norm3(x + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))

    def decode_parallel(self, features: Tensor, style: Tensor, offsets: Tensor) -> Tensor:
        """One masked pass given the previous frames' offsets ``(B, T, V, 3)`` (teacher forcing when they
        are ground truth).  Not used to train; it is the reference :meth:`decode` must match."""
        b, t, _ = features.shape
        memory = self.audio_feature_map(self.fused_features(features))
        style_emb = self.style_embedding(style.to(memory.dtype)).unsqueeze(1)
        prev = self.motion_encoder(offsets[:, :-1].flatten(2)) + style_emb
        tokens = self.ppe(torch.cat([style_emb, prev], dim=1))
        mask = biased_causal_mask(self.config.num_heads, t, self.config.period, memory.device).repeat(b, 1, 1)
        h = self.decoder(tokens, memory, tgt_mask=mask, memory_mask=alignment_mask(t, t, memory.device))
        return self.motion_decoder(h).unflatten(-1, (self.num_vertices, 3))

    def fused_features(self, features: Tensor) -> Tensor:
        """The speech features, with Wav2Sem's eq. 7 applied when the plug-in is on."""
        if self.semantic is None:
            return features
        d = self.semantic_dim
        return self.semantic.fusion(features[..., :-d], features[..., -d:])

    def predict(self, features: Tensor, template: Tensor, style: Tensor) -> Tensor:
        self.check_template(template)
        return template.unsqueeze(1) + self.decode(features, style)

    def forward(self, features: Tensor, template: Tensor, style: Tensor) -> Tensor:
        return self.predict(features, template, style)
