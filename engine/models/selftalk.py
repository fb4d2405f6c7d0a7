"""SelfTalk's facial animator (Peng et al., ACM MM 2023, paper 002) -- the part that ships.

SelfTalk trains three modules in a *commutative training diagram* (Sec. 3.1, Fig. 2):

* **facial animator** (Sec. 3.2, eqs. 1, 4-7) -- this file: speech features ``x_e1`` -> linear map
  to ``d_model`` -> transformer decoder (masked self-attention eq. 5 + FFN eq. 6) -> a linear
  layer initialised to zero -> vertex offsets ``y_hat`` added to the template (eq. 7);
* **speech recogniser** (Sec. 3.3, eqs. 8-9) -- frozen; gives the latent target ``x_e2`` and the
  transcript.  Here: the frozen Whisper tiny.en encoder whose features the harness caches;
* **lip-reading interpreter** (Sec. 3.4, eqs. 10-11, 16) -- training only, so it lives in the
  recipe (:mod:`training.recipes.selftalk`) and is not in the shipped checkpoint.

At inference SelfTalk *is* the facial animator, so that is all this class holds.

Deviations (each forced by this environment, named in the README):

* the speech encoder is the frozen Whisper tiny.en encoder (384-d, cached), not wav2vec 2.0 XLSR
  fine-tuned except its CNN front end: wav2vec 2.0 weights are not available offline, and
  fine-tuning any encoder is beyond 2 CPU cores; the same frozen features are the recogniser's
  latent, as in the paper where both modules start from the same pretrained model;
* one decoder layer of width ``d_model = 128`` (release: one layer of width 512 on VOCASET);
* the self-attention uses FaceFormer's biased causal mask with period 30 (the paper: "masked
  self-attention"; the release builds this mask but does not pass it), and the cross-attention
  attends to the same projected audio sequence without a mask (tgt = memory, as in the release).
  Whole-sequence attention means no finite receptive field: inference runs overlapping 600-frame
  chunks, cross-faded (:attr:`receptive_field` is ``None``).

SelfTalk has no speaker conditioning: the style vector is empty (``style_dim = 0``) and a
reference motion is refused (:class:`engine.models.base.StyleNotSupported`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from engine.checkpoint import register_model
from engine.models.base import TalkingFaceModel
from engine.models.transformer_parts import biased_causal_mask

__all__ = ["SelfTalkConfig", "SelfTalkModel", "KIND"]

KIND = "selftalk"


@dataclass
class SelfTalkConfig:
    """Hyper-parameters stored in the checkpoint (``feature_dim``/``encoders`` set by the harness)."""

    feature_dim: int = 384            # Whisper tiny.en encoder width (x_e1)
    d_model: int = 128                # decoder width (release: 512 on VOCASET)
    num_heads: int = 4                # release: 4
    num_layers: int = 1               # release: 1
    ff_mult: int = 2                  # FFN width = ff_mult * d_model (release: 2)
    period: int = 30                  # biased-mask period in frames (release: 30 for 30 fps)
    dropout: float = 0.1              # nn.TransformerDecoderLayer default, as in the release
    chunk_frames: int = 600           # inference chunk length (frames) ...
    chunk_overlap: int = 60           # ... and cross-faded overlap
    encoders: list[dict] = field(default_factory=lambda: [{"kind": "whisper", "name_or_path": None, "layer": -1}])
    encoder_in_model: bool = False
    semantic: dict | None = None      # Wav2Sem architecture when a 'wav2sem' encoder is last (paper 000)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SelfTalkConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown selftalk model options {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if cfg.d_model % cfg.num_heads:
            raise ValueError(f"d_model ({cfg.d_model}) must be divisible by num_heads ({cfg.num_heads})")
        if cfg.encoder_in_model:
            raise ValueError("selftalk checkpoints use a frozen encoder (encoder_in_model = false)")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@register_model(KIND)
class SelfTalkModel(TalkingFaceModel):
    """Facial animator: ``features (B, T, F)`` -> ``template + offsets`` ``(B, T, V, 3)``."""

    receptive_field = None

    def __init__(self, config: SelfTalkConfig, template: Tensor) -> None:
        super().__init__()
        if template.dim() != 2 or template.shape[1] != 3:
            raise ValueError(f"template must be (V, 3), got {tuple(template.shape)}")
        self.config = config
        self.num_vertices = int(template.shape[0])
        self.chunk_frames = config.chunk_frames
        self.chunk_overlap = config.chunk_overlap
        self.register_buffer("template", template.detach().float().clone())
        d = config.d_model
        from engine.models.semantic_fusion import build_semantic_plugin
        # Wav2Sem (paper 000, eq. 7) on the speech encoder's output, before the host's own layers
        self.semantic, config.semantic = build_semantic_plugin(config.semantic, config.encoders, config.feature_dim)
        self.audio_feature_map = nn.Linear(config.feature_dim - self.semantic_dim, d)                # x_e1 -> d_model
        layer = nn.TransformerDecoderLayer(d, config.num_heads, dim_feedforward=config.ff_mult * d,
                                           dropout=config.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, config.num_layers)            # eqs. 5-6
        self.vertex_map = nn.Linear(d, 3 * self.num_vertices)                     # eq. 7 output layer
        nn.init.zeros_(self.vertex_map.weight)   # zero-initialised: training starts at the template
        nn.init.zeros_(self.vertex_map.bias)

    # ------------------------------------------------------------------ construction / checkpoints
    @classmethod
    def from_config(cls, config: dict[str, Any], topology: Any) -> "SelfTalkModel":
        return cls(SelfTalkConfig.from_dict(config), torch.as_tensor(topology.vertices, dtype=torch.float32))

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    # ------------------------------------------------------------------ style (none)
    def neutral_style(self) -> Tensor:
        return self.template.new_zeros(0)

    # ------------------------------------------------------------------ eqs. 4-7
    def offsets(self, features: Tensor) -> Tensor:
        """Mesh decoder (eq. 7): ``(B, T, feature_dim)`` -> vertex offsets ``y_hat`` ``(B, T, V, 3)``."""
        if features.dim() != 3 or features.shape[2] != self.config.feature_dim:
            raise ValueError(f"features must be (B, T, {self.config.feature_dim}), got {tuple(features.shape)}")
        b, t, _ = features.shape
        x = self.audio_feature_map(self.fused_features(features))
        mask = biased_causal_mask(self.config.num_heads, t, self.config.period, x.device)
        mask = mask.repeat(b, 1, 1)                      # (B * heads, T, T), batch-major like nn.MultiheadAttention
        h = self.decoder(x, x, tgt_mask=mask)           # self-attention masked, cross-attention over the audio
        return self.vertex_map(h).unflatten(-1, (self.num_vertices, 3))

    def phonetic_features(self, features: Tensor) -> Tensor:
        """The speech encoder's part of ``features`` (without Wav2Sem's ``F_s``): the recogniser latent ``x_e2``."""
        return features[..., :features.shape[-1] - self.semantic_dim]

    def fused_features(self, features: Tensor) -> Tensor:
        """``x_e1``: the speech features, with Wav2Sem's eq. 7 applied when the plug-in is on."""
        if self.semantic is None:
            return features
        return self.semantic.fusion(self.phonetic_features(features), features[..., -self.semantic_dim:])

    def predict(self, features: Tensor, template: Tensor, style: Tensor | None = None) -> Tensor:
        self.check_template(template)
        return template.unsqueeze(1) + self.offsets(features)

    def forward(self, features: Tensor, template: Tensor) -> Tensor:
        return self.predict(features, template)
