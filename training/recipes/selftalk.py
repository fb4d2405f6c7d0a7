"""SelfTalk's training recipe (paper 002): the commutative training diagram, eqs. 10-17.

What trains and what is frozen (Sec. 3.1-3.5, Fig. 2; the authors' release agrees):

* facial animator (the shipped :class:`engine.models.selftalk.SelfTalkModel`) -- trained by all
  four losses: L_rec and L_vel directly, L_lat and L_ctc *through* the lip-reading interpreter,
  which reads the animator's predicted lip offsets without a stop-gradient;
* lip-reading interpreter (:class:`LipReadingInterpreter`, here, an auxiliary net that is not
  shipped) -- trained by L_lat and L_ctc, jointly, with the same optimiser and loss;
* speech recogniser -- frozen: its encoder latent ``x_e2`` is the L_lat target and its
  transcript the L_ctc target.

Substitutes (named in the README): the recogniser's latent is the frozen Whisper tiny.en encoder
feature the harness caches (``batch["features"]``, already at the mesh rate, so L_lat compares at
30 fps where the release interpolates the lip features up to wav2vec's 50 Hz); its transcript is
SynthTalk's exact ARPAbet phone sequence of the crop (ids 1..39, blank 0; vocabulary 40 instead
of 33 characters), which is what a perfect recogniser would give; the interpreter is 2 encoder
layers of width 128 instead of a 1024-wide transformer (6 layers in the paper).

Loss (eq. 12): ``1000 L_rec + 1000 L_vel + 0.001 L_lat + 0.0001 L_ctc``.  L_rec/L_vel follow
eqs. 13-14 (squared Euclidean distance per vertex, mean over vertices and frames); L_lat is the
mean squared error over all latent elements and L_ctc is CTC with ``reduction="mean"`` and
``zero_infinity`` (both as in the release).  An ablation sets one weight to 0 (the term is then not
computed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.recipes.base import LossOutput, Recipe, register_recipe

__all__ = ["LipReadingInterpreter", "SelfTalkOptions", "SelfTalkRecipe",
           "reconstruction_loss", "velocity_loss", "latent_consistency_loss", "text_consistency_loss"]

NUM_PHONE_CLASSES = 40  # CTC blank 0 + ARPAbet 1..39


# ---------------------------------------------------------------------- eqs. 13-17
def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Eq. 13: mean over frames and vertices of ``||y - y_hat||^2`` on ``(B, T, V, 3)``."""
    return (pred - target).pow(2).sum(-1).mean()


def velocity_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Eq. 14: eq. 13 on frame differences ``y_t - y_{t-1}``."""
    return reconstruction_loss(pred[:, 1:] - pred[:, :-1], target[:, 1:] - target[:, :-1])


def latent_consistency_loss(lip_latent: Tensor, speech_latent: Tensor) -> Tensor:
    """Eq. 15: mean squared error between the lip encoder's ``l_t`` and the recogniser's ``x_e2,t``."""
    return F.mse_loss(lip_latent, speech_latent)


def text_consistency_loss(logits: Tensor, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """Eqs. 16-17: CTC of ``softmax(logits)`` ``(B, T, U)`` against label sequences ``(B, L)`` (0 = blank)."""
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)                  # (T, B, U)
    input_lengths = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
    return F.ctc_loss(log_probs, targets.long(), input_lengths, target_lengths.long(), blank=0,
                      reduction="mean", zero_infinity=True)


# ---------------------------------------------------------------------- eqs. 10-11, 16
class LipReadingInterpreter(nn.Module):
    """Lip vertex offsets ``(B, T, V, 3)`` -> lip latent ``l_t`` (eq. 10) and phone logits (eqs. 11, 16).

    Lip vertices (the topology's ``lips`` mask) -> linear lip map -> transformer encoder (no
    positional encoding, as in the release) -> linear to the recogniser's latent width -> text
    decoder (one linear layer to the vocabulary).
    """

    def __init__(self, lips: np.ndarray | Tensor, latent_dim: int, width: int = 128, layers: int = 2,
                 heads: int = 4, vocab: int = NUM_PHONE_CLASSES, dropout: float = 0.1) -> None:
        super().__init__()
        lips = torch.as_tensor(np.asarray(lips), dtype=torch.long).reshape(-1)
        if lips.numel() == 0:
            raise ValueError("the topology has an empty 'lips' mask; SelfTalk's lip reader needs lip vertices")
        self.register_buffer("lips", lips)
        self.lip_map = nn.Linear(3 * lips.numel(), width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.to_latent = nn.Linear(width, latent_dim)
        self.text_decoder = nn.Linear(latent_dim, vocab)

    def forward(self, offsets: Tensor) -> tuple[Tensor, Tensor]:
        lip = offsets[:, :, self.lips].flatten(2)                                       # (B, T, 3L)
        latent = self.to_latent(self.encoder(self.lip_map(lip)))                        # l_t, eq. 10
        return latent, self.text_decoder(latent)                                        # e_t, eq. 11


@dataclass
class SelfTalkOptions:
    """``[recipe]`` options. Paper weights by default; an ablation sets one to 0."""

    w_rec: float = 1000.0
    w_vel: float = 1000.0
    w_lat: float = 0.001
    w_ctc: float = 0.0001
    lip_width: int = 128
    lip_layers: int = 2
    lip_heads: int = 4


@register_recipe("selftalk")
class SelfTalkRecipe(Recipe):
    Options = SelfTalkOptions

    def __init__(self) -> None:
        super().__init__()
        self.lips: np.ndarray | None = None

    def configure(self, options: dict[str, Any]) -> None:
        super().configure(options)
        c = self.options
        if min(c.w_rec, c.w_vel, c.w_lat, c.w_ctc) < 0:
            raise ValueError("selftalk loss weights (w_rec, w_vel, w_lat, w_ctc) must be >= 0")

    def build_model(self, params: dict[str, Any], topology: Any):
        if "lips" not in topology.masks:
            raise ValueError(f"topology {topology.name!r} has no 'lips' mask; SelfTalk's lip reader needs one")
        self.lips = np.asarray(topology.masks["lips"])
        return super().build_model(params, topology)

    def build_aux(self, model: nn.Module, params: dict[str, Any]) -> nn.ModuleDict:
        if self.lips is None:
            raise RuntimeError("build_model must run before build_aux (it reads the topology's lips mask)")
        c = self.options
        if c.w_lat == 0 and c.w_ctc == 0:
            return nn.ModuleDict()           # without both lip losses there is no lip reader to train
        reader = LipReadingInterpreter(self.lips, model.config.feature_dim - model.semantic_dim, c.lip_width, c.lip_layers, c.lip_heads)
        return nn.ModuleDict({"lip_reader": reader})

    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        c = self.options
        feats, target, template = batch["features"], batch["vertices"], batch["template"]
        offsets = model.offsets(feats)                                   # facial animator, eq. 7
        pred = template.unsqueeze(1) + offsets
        total = feats.new_zeros(())
        terms: dict[str, float] = {}
        l_rec = reconstruction_loss(pred, target)
        total = total + c.w_rec * l_rec
        terms["rec"] = float(l_rec.detach())
        if c.w_vel > 0:
            l_vel = velocity_loss(pred, target)
            total = total + c.w_vel * l_vel
            terms["vel"] = float(l_vel.detach())
        if "lip_reader" in aux:
            latent, logits = aux["lip_reader"](offsets)                  # no stop-gradient: the diagram
            if c.w_lat > 0:
                l_lat = latent_consistency_loss(latent, model.phonetic_features(feats))  # x_e2: frozen recogniser latent
                total = total + c.w_lat * l_lat
                terms["lat"] = float(l_lat.detach())
            if c.w_ctc > 0:
                if "phones" not in batch:
                    raise ValueError("SelfTalk's L_ctc needs batch['phones'] (the corpus has no phone timings); "
                                     "set recipe.w_ctc = 0 to train without it")
                l_ctc = text_consistency_loss(logits, batch["phones"], batch["phone_lengths"])
                total = total + c.w_ctc * l_ctc
                terms["ctc"] = float(l_ctc.detach())
        terms["loss"] = float(total.detach())
        return LossOutput(total=total, terms=terms)
