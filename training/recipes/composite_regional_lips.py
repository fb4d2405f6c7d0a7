"""Composite & regional (paper 003) trained with a contact-aware lip term (issue 13).

Selected with ``[model] kind = "composite_regional_lips"``; it builds and saves a plain
``composite_regional`` model (same class, same checkpoint kind, same inference), only the loss
differs.  Why: with eq. 4 alone the model *places* bilabial closures but stops a few millimetres
short -- an L2 loss over ~5,700 vertices barely notices 15 inner-lip pairs being 2-3 mm apart, and
averages a 60 ms closure with the open vowels around it.  The added terms look only at the mouth:

    gap_k(t)   = || upper_inner_k(t) - lower_inner_k(t) ||            (per paired inner-lip vertex)
    s_k(t)     = (upper_inner_k(t) - lower_inner_k(t)) . z            (signed: < 0 = lips cross)
    w_k(t)     = 1 + contact_weight * [ground-truth gap_k(t) < contact threshold]
    L_gap      = mean_{b,t} sum_k w_k(t) (gap_k - gap*_k)^2 / scale^2
    L_pen      = mean_{b,t} sum_k relu(-s_k)^2 / scale^2
    L          = eq. 4 + lip_gap_weight * L_gap + penetration_weight * L_pen

(``scale`` is the model's ``coord_scale``, so the terms are in the same normalised units as eq. 4's
per-frame sum; ``lip_gap_weight = 20`` makes each inner-lip pair weigh like 20 vertices.)  The
contact threshold is :func:`engine.metrics.default_closure_threshold` of the training templates,
the same one the benchmark scores with.

``init_from`` (a checkpoint path) starts from trained weights (fine-tuning the shipped default);
the model is then built with that checkpoint's own configuration so the weights fit exactly,
except for the encoder specs, which are the run's (a fine-tune onto fitted Whisper windows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.losses import composite_regional_loss
from training.recipes.base import LossOutput, register_recipe
from training.recipes.composite_regional import CompositeRegionalRecipe

__all__ = ["CompositeRegionalLipsRecipe", "lip_contact_terms"]


def lip_contact_terms(pred: Tensor, target: Tensor, upper: Tensor, lower: Tensor, threshold: float,
                      scale: float, contact_weight: float) -> tuple[Tensor, Tensor]:
    """(L_gap, L_pen) of the module docstring for ``(B, T, V, 3)`` sequences (Z up)."""
    dp = pred[:, :, upper] - pred[:, :, lower]
    dg = target[:, :, upper] - target[:, :, lower]
    gp, gg = dp.norm(dim=-1), dg.norm(dim=-1)
    w = 1.0 + contact_weight * (gg < threshold).to(pred.dtype)
    gap = (w * (gp - gg) ** 2).sum(-1).mean() / scale ** 2
    pen = (torch.relu(-dp[..., 2]) ** 2).sum(-1).mean() / scale ** 2
    return gap, pen


@register_recipe("composite_regional_lips")
class CompositeRegionalLipsRecipe(CompositeRegionalRecipe):
    @dataclass
    class Options(CompositeRegionalRecipe.Options):
        lip_gap_weight: float = 20.0
        contact_weight: float = 4.0
        penetration_weight: float = 20.0
        init_from: str = ""            # checkpoint to fine-tune ("" = train from scratch)

    def build_model(self, params: dict[str, Any], topology: Any) -> nn.Module:
        from engine.checkpoint import load_checkpoint, model_class
        from engine.metrics import default_closure_threshold

        masks = topology.masks
        if "lip_upper_inner" not in masks or "lip_lower_inner" not in masks:
            raise ValueError("composite_regional_lips needs the topology's lip_upper_inner/lip_lower_inner masks")
        self.upper = torch.as_tensor(np.asarray(masks["lip_upper_inner"]), dtype=torch.long)
        self.lower = torch.as_tensor(np.asarray(masks["lip_lower_inner"]), dtype=torch.long)
        self.threshold = default_closure_threshold(np.asarray(topology.vertices), masks.get("face"))
        self._init = None
        if self.options.init_from:
            ckpt = load_checkpoint(self.options.init_from)
            if ckpt.kind != "composite_regional":
                raise ValueError(f"init_from {self.options.init_from} holds a {ckpt.kind!r} model, not composite_regional")
            self._init = ckpt
            # the run's encoders (e.g. a fitted Whisper window) are the features it trains on, so the
            # checkpoint must declare them, not the ones init_from was trained with
            encoders = params.get("encoders") or ckpt.config.get("encoders")
            params = {**ckpt.config, "encoders": encoders, "encoder_in_model": False}
        else:
            params = {"norm": "layer", "adain_stats": "window", **params, "encoder_in_model": False}
        return model_class("composite_regional").from_config(params, topology)

    @torch.no_grad()
    def prepare(self, model: nn.Module, templates: np.ndarray) -> None:
        if self._init is None:
            super().prepare(model, templates)
            return
        state = {k: v.float() if v.is_floating_point() else v for k, v in self._init.state_dict.items()}
        model.load_state_dict(state, strict=True)   # its normalisation comes from the same corpus

    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        verts = batch["vertices"]
        mode = self.options.style_reference
        reference = verts if mode == "self" else batch["reference"] if mode == "subject" else None
        pred = model(batch["features"], template=batch["template"], reference=reference)
        terms = composite_regional_loss(model, pred, verts, beta=self.options.beta)
        scale = float(model.coord_scale)
        gap, pen = lip_contact_terms(pred, verts, self.upper.to(pred.device), self.lower.to(pred.device),
                                     self.threshold, scale, self.options.contact_weight)
        total = terms.total + self.options.lip_gap_weight * gap + self.options.penetration_weight * pen
        return LossOutput(total, {"l2": float(terms.l2.detach()), "reg": float(terms.reg.detach()),
                                  "lip_gap": float(gap.detach()), "lip_pen": float(pen.detach())})
