"""Training recipe of the composite & regional model (Wu et al., MM 2023, paper 003).

* **Loss** -- eq. 4, ``L = L_l2 + beta ||W||_1`` (:func:`engine.losses.composite_regional_loss`).
* **Style reference** of each training crop (``style_reference``): ``"self"`` the crop's own motion
  (the authors' code), ``"subject"`` a crop of another clip of the same speaker, ``"none"`` no
  reference: the modulation then always sees the model's neutral style vector.
* **Neutral style** (Sec. 4.2) -- the training-set mean of the style statistics, computed before
  *every* checkpoint (a killed run's ``last.safetensors`` animates in distribution too).  With
  ``style_reference = "none"`` it is left exactly as training used it: recomputing it from a style
  encoder that never received a gradient would feed the decoder a vector it never saw.
* **Data statistics** -- the model normalises vertices with the training templates' mean and scale.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.losses import composite_regional_loss
from training.recipes.base import LossOutput, Recipe, register_recipe

__all__ = ["CompositeRegionalRecipe", "neutral_style_of"]

STYLE_REFERENCES = ("self", "subject", "none")


@register_recipe("composite_regional")
class CompositeRegionalRecipe(Recipe):
    @dataclass
    class Options:
        beta: float = 1e-4              # eq. 4 sparsity weight
        style_reference: str = "self"   # self | subject | none (see the module docstring)
        neutral_style_frames: int = 600  # frames of each training clip used for the neutral style

    def configure(self, options: dict[str, Any]) -> None:
        super().configure(options)
        if self.options.style_reference not in STYLE_REFERENCES:
            raise ValueError(f"[recipe] style_reference must be one of {', '.join(STYLE_REFERENCES)}, "
                             f"got {self.options.style_reference!r}")

    def batch_needs(self) -> set[str]:
        return {"reference"} if self.options.style_reference == "subject" else set()

    def build_model(self, params: dict[str, Any], topology: Any) -> nn.Module:
        # New runs state what older checkpoints left implicit: per-frame LayerNorm and sliding
        # AdaIN statistics (the model's loader treats a missing key as the old behaviour).
        params = {"norm": "layer", "adain_stats": "window", **params, "encoder_in_model": False}
        return super().build_model(params, topology)

    @torch.no_grad()
    def prepare(self, model: nn.Module, templates: np.ndarray) -> None:
        coord_mean = templates.reshape(-1, 3).mean(0)
        coord_scale = float(templates.reshape(len(templates), -1, 3).std(axis=1).mean())
        model.set_normalisation(torch.from_numpy(coord_mean), coord_scale)

    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        verts = batch["vertices"]
        mode = self.options.style_reference
        reference = verts if mode == "self" else batch["reference"] if mode == "subject" else None
        pred = model(batch["features"], template=batch["template"], reference=reference)
        terms = composite_regional_loss(model, pred, verts, beta=self.options.beta)
        return LossOutput(terms.total, {"l2": float(terms.l2.detach()), "reg": float(terms.reg.detach())})

    def before_checkpoint(self, trainer: Any) -> None:
        # Only "none" training reads neutral_style_stats, and there it is never overwritten, so
        # refreshing it here changes nothing training depends on (resume stays exact).
        if self.options.style_reference == "none":
            return
        style = neutral_style_of(trainer.model, trainer.train_clips, trainer.device, self.options.neutral_style_frames)
        trainer.model.neutral_style_stats.copy_(style.to(trainer.model.neutral_style_stats.device))


@torch.no_grad()
def neutral_style_of(model: nn.Module, clips: list, device: torch.device, max_frames: int = 600) -> Tensor:
    """Mean over ``clips`` of ``[mu(Z_face), sigma(Z_face)]`` of their first ``max_frames`` frames (Sec. 4.2)."""
    was_training = model.training
    model.eval()
    stats = []
    for c in clips:
        ref = torch.from_numpy(np.array(c.vertices[:max_frames], dtype=np.float32)).unsqueeze(0).to(device)
        stats.append(model.style_statistics(ref)[0].cpu())
    model.train(was_training)
    return torch.stack(stats).mean(0)
