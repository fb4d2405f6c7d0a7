"""Cross-modal semi-supervised animation (Yang et al., ICCV 2023, paper 001) -- the inference pipeline.

Fig. 3 of the paper: speech -> speech encoder E_A -> ``z_A``; subtract the real domain's neutral
code ``zbar_R`` (expression de-neutralisation, eq. 1) -> synthetic-domain image decoder D_S ->
a rendered-looking face image per frame -> face-to-geometry regressor E_G (ResNet-34 + FC,
Sec. 3.3) -> the mesh of the synthetic character.  No paired speech/3D data is needed to train
it (:mod:`training.crossmodal`); this class is only what ships.

Interface notes:

* ``predict`` returns the regressed meshes as motion on the given template: ``template +
  (E_G(image) - the S character's neutral mesh)``, so another identity of the same topology moves
  the same way (the regressor itself only knows the S character);
* E_A has local attention, so :attr:`receptive_field` is finite and
  :func:`engine.models.windowing.predict_sequence` runs exact windows over any length;
  images are decoded and regressed ``image_batch`` frames at a time (bounded memory);
* no style: the paper's method is single-identity (``style_dim = 0``).

Deviations (README, "Cross-modal"): Whisper tiny.en features instead of wav2vec 2.0; 32x32 RGB
mouth crops; latent m = 128 (paper 512); ResNet-34 at base width 16 (paper 64); the speech
transformer attends +-``speech_radius`` frames per layer.  All forced by 2 shared CPU cores.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from engine.checkpoint import register_model
from engine.models.base import TalkingFaceModel
from engine.models.crossmodal_nets import FaceToGeometry, ImageDecoder, SpeechEncoder

__all__ = ["KIND", "CrossModalConfig", "CrossModalModel"]

KIND = "crossmodal"


@dataclass
class CrossModalConfig:
    """Hyper-parameters stored in the checkpoint."""

    feature_dim: int = 384            # Whisper tiny.en encoder width
    latent: int = 128                 # m, the shared code size (paper: 512)
    image_size: int = 32              # square RGB mouth crops (rendered at 64, box-filtered)
    channels: int = 8                 # decoder width at full resolution
    speech_width: int = 128
    speech_layers: int = 2
    speech_heads: int = 4
    speech_radius: int = 8
    regressor_width: int = 16         # ResNet-34 base width (paper: 64)
    deneutralize: bool = True         # eq. 1 at inference (off only for the ablation)
    image_batch: int = 256            # frames decoded + regressed at once
    encoders: list[dict] = field(default_factory=lambda: [{"kind": "whisper", "name_or_path": None, "layer": -1}])
    encoder_in_model: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CrossModalConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown crossmodal model options {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@register_model(KIND)
class CrossModalModel(TalkingFaceModel):
    """Speech features ``(B, T, F)`` -> S images -> meshes ``(B, T, V, 3)``."""

    def __init__(self, config: CrossModalConfig, template: Tensor) -> None:
        super().__init__()
        if template.dim() != 2 or template.shape[1] != 3:
            raise ValueError(f"template must be (V, 3), got {tuple(template.shape)}")
        c = config
        self.config = c
        self.num_vertices = int(template.shape[0])
        self.register_buffer("template", template.detach().float().clone())
        self.speech_encoder = SpeechEncoder(c.feature_dim, c.latent, c.speech_width, c.speech_layers, c.speech_heads,
                                            c.speech_radius)
        self.decoder_s = ImageDecoder(c.latent, c.channels, c.image_size)
        self.regressor = FaceToGeometry(template, width=c.regressor_width)
        self.register_buffer("neutral_code_r", torch.zeros(c.latent))     # zbar_R (eq. 1)
        self.receptive_field = self.speech_encoder.receptive_field

    @classmethod
    def from_config(cls, config: dict[str, Any], topology: Any) -> CrossModalModel:
        return cls(CrossModalConfig.from_dict(config), torch.as_tensor(topology.vertices, dtype=torch.float32))

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def neutral_style(self) -> Tensor:
        return self.template.new_zeros(0)

    # ------------------------------------------------------------------ Fig. 3
    def speech_codes(self, features: Tensor) -> Tensor:
        """E_A and eq. 1: ``(B, T, F)`` -> the offset codes ``dz_A`` ``(B, T, m)`` fed to D_S."""
        if features.dim() != 3 or features.shape[2] != self.config.feature_dim:
            raise ValueError(f"features must be (B, T, {self.config.feature_dim}), got {tuple(features.shape)}")
        z = self.speech_encoder(features)
        return z - self.neutral_code_r if self.config.deneutralize else z

    def images(self, features: Tensor) -> Tensor:
        """The transcoded S images ``(B, T, 3, H, W)`` in [0, 1] (for pictures and checks)."""
        dz = self.speech_codes(features)
        return self.decoder_s(dz.flatten(0, 1)).unflatten(0, dz.shape[:2])

    def predict(self, features: Tensor, template: Tensor, style: Tensor | None = None) -> Tensor:
        self.check_template(template)
        dz = self.speech_codes(features).flatten(0, 1)
        meshes = [self.regressor(self.decoder_s(dz[a:a + self.config.image_batch]))
                  for a in range(0, dz.shape[0], self.config.image_batch)]
        motion = torch.cat(meshes).unflatten(0, features.shape[:2]) - self.template
        return template.unsqueeze(1) + motion

    def forward(self, features: Tensor, template: Tensor) -> Tensor:
        return self.predict(features, template)
