"""FaceFormer's training recipe: autoregressive decoding without teacher forcing, MSE on vertices.

FaceFormer (Sec. 3.4) trains with its own predictions fed back (not the ground truth), and the
loss is the mean squared vertex error (the authors' code: ``nn.MSELoss`` over all coordinates).
The style input is the training speaker's one-hot (``batch["subject"]``).  After training the
neutral style is set to the mean of the training clips' one-hots (:meth:`finish`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.recipes.base import LossOutput, Recipe, register_recipe

__all__ = ["FaceFormerRecipe", "FaceFormerRecipeConfig"]


@dataclass
class FaceFormerRecipeConfig:
    """``[recipe]`` options (none are needed; kept typed so that a typo is an error)."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FaceFormerRecipeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown faceformer [recipe] options {unknown}; known: {sorted(known)}")
        return cls(**d)


@register_recipe("faceformer")
class FaceFormerRecipe(Recipe):
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.config = FaceFormerRecipeConfig.from_dict(options or {})

    def configure(self, options: dict[str, Any]) -> None:
        self.config = FaceFormerRecipeConfig.from_dict(options)

    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        style = model.one_hot(batch["subject"])
        pred = model.predict(batch["features"], batch["template"], style)   # teacher-forcing free
        mse = F.mse_loss(pred, batch["vertices"])
        return LossOutput(total=mse, terms={"loss": float(mse.detach()), "mse": float(mse.detach())})

    def finish(self, trainer: Any) -> None:
        """Neutral style = mean of the training clips' one-hots (clip counts per training speaker)."""
        model = getattr(trainer, "model", None)
        counts = Counter(int(i) for i in trainer.subject_indices())
        n = model.config.num_subjects
        if max(counts, default=-1) >= n:
            raise ValueError(f"training data has speaker index {max(counts)} but the model has num_subjects = {n}")
        model.set_neutral_style(torch.tensor([counts.get(i, 0) for i in range(n)], dtype=torch.float32))
