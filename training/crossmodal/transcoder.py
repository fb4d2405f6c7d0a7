"""The speech-to-image transcoder as it trains (paper 001, Sec. 3.2, Fig. 1): two encoders
(E_A for speech, E_V shared by both image domains) and two decoders (D_R, D_S).

:meth:`Transcoder.losses` computes eqs. 1-5 on one batch of R clips (audio features + frames)
and S images; :func:`training.crossmodal.losses` holds each term.  What ships is E_A, D_S and
``zbar_R`` (:class:`engine.models.crossmodal.CrossModalModel`); E_V and D_R are training-only.

Deviation (``align_stopgrad``, on by default): the alignment terms L_cf (eq. 3) and L_ccl (eq. 4)
do not update E_V -- ``z_R`` is a constant target in L_cf and E_V's weights are constants inside
L_ccl.  As printed, both terms are Euclidean distances between unnormalised codes, and the joint
minimum shrinks every code towards one point: measured after 600 steps, ``|z - zbar|`` was 0.03
against ``|z|`` = 0.39 and every decoder drew the mean face (README, "Cross-modal").  E_V then
learns from reconstruction (eq. 2) on both domains and, through ``zbar_R`` in ``dz_A`` (not
detached), where the neutral code sits; E_A and D_S still learn from eqs. 3-4.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine.models.crossmodal_nets import ImageDecoder, SpeechEncoder, VisualEncoder
from training.crossmodal import losses as L
from training.crossmodal.config import TranscoderConfig

__all__ = ["Transcoder", "TranscoderBatch"]


@dataclass
class TranscoderBatch:
    features: Tensor          # (B, T, F) speech features of R clips at the frame rate
    images_r: Tensor          # (B, T, 3, H, W) the synchronised R frames
    images_s: Tensor          # (N, 3, H, W) S renders (unpaired)
    neutral_r: Tensor         # (1, 3, H, W) the R speaker at rest
    neutral_s: Tensor         # (1, 3, H, W) the S character at rest
    meshes: Tensor | None = None      # (P, T, V, 3) S-identity meshes of the paired clips (sweep only)
    paired: Tensor | None = None      # (P,) indices into the B clips that are paired


class Transcoder(nn.Module):
    def __init__(self, cfg: TranscoderConfig, feature_dim: int, size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.speech_encoder = SpeechEncoder(feature_dim, cfg.latent, cfg.speech_width, cfg.speech_layers,
                                            cfg.speech_heads, cfg.speech_radius)               # E_A
        self.visual_encoder = VisualEncoder(cfg.latent, cfg.channels, size)                    # E_V
        self.decoder_r = ImageDecoder(cfg.latent, cfg.channels, size)                          # D_R
        self.decoder_s = ImageDecoder(cfg.latent, cfg.channels, size)                          # D_S

    def neutral_codes(self, neutral_r: Tensor, neutral_s: Tensor) -> tuple[Tensor, Tensor]:
        """``zbar_R``, ``zbar_S``: the encodings of the hand-picked neutral images (Sec. 3.2)."""
        z = self.visual_encoder(torch.cat([neutral_r, neutral_s]))
        return z[:1], z[1:2]

    def _encode_for_cycle(self, images: Tensor) -> Tensor:
        """``E_V`` in eq. 4; with ``align_stopgrad`` its weights are constants there (gradients still
        reach D_S and E_A through the images)."""
        if not self.cfg.align_stopgrad:
            return self.visual_encoder(images)
        frozen = {k: v.detach() for k, v in self.visual_encoder.named_parameters()}
        return torch.func.functional_call(self.visual_encoder, frozen, (images,))

    def _offset(self, z: Tensor, z_neutral: Tensor) -> Tensor:
        return L.deneutralize(z, z_neutral) if self.cfg.deneutralize else z

    def losses(self, batch: TranscoderBatch, regressor: nn.Module | None = None) -> tuple[Tensor, dict[str, float]]:
        c = self.cfg
        b, t = batch.features.shape[:2]
        img_r = batch.images_r.flatten(0, 1)
        zbar_r, zbar_s = self.neutral_codes(batch.neutral_r, batch.neutral_s)
        z_a = self.speech_encoder(batch.features).flatten(0, 1)                 # (B*T, m)
        z_r = self.visual_encoder(img_r)
        z_s = self.visual_encoder(batch.images_s)
        dz_a = self._offset(z_a, zbar_r)                                        # speech uses zbar_R (eq. 1)
        # eq. 2 on both image domains
        l_rec = (L.reconstruction_loss(self.decoder_r(self._offset(z_r, zbar_r)), img_r, c.w_ssim, c.w_grad)
                 + L.reconstruction_loss(self.decoder_s(self._offset(z_s, zbar_s)), batch.images_s, c.w_ssim, c.w_grad))
        # eq. 3
        l_cf = L.feature_alignment_loss(z_a, z_r.detach() if c.align_stopgrad else z_r)
        l_cs = L.pixel_l2(self.decoder_r(dz_a), img_r)
        total = c.w_rec * l_rec + c.w_cf * l_cf + c.w_cs * l_cs
        terms = {"rec": l_rec.item(), "cf": l_cf.item(), "cs": l_cs.item()}
        need_s = c.w_ccl > 0 or (batch.paired is not None and len(batch.paired) > 0)
        img_as = self.decoder_s(dz_a) if need_s else None                       # speech -> S image
        if c.w_ccl > 0:                                                         # eq. 4
            l_ccl = L.cycle_loss(self._encode_for_cycle(img_as), z_a)
            total = total + c.w_ccl * l_ccl
            terms["ccl"] = l_ccl.item()
        if batch.paired is not None and len(batch.paired) > 0:
            if regressor is None or batch.meshes is None:
                raise ValueError("paired clips need the frozen regressor and their meshes")
            imgs = img_as.unflatten(0, (b, t))[batch.paired].flatten(0, 1)
            pred = regressor(imgs) * 1000.0
            target = batch.meshes.flatten(0, 1) * 1000.0
            l_mesh = (pred - target).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12).sqrt().mean()
            total = total + c.w_mesh * l_mesh
            terms["mesh_mm"] = l_mesh.item()
        terms["loss"] = total.item()
        return total, terms
