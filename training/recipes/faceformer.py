"""FaceFormer's training recipe: autoregressive decoding without teacher forcing, MSE on vertices.

FaceFormer (Sec. 3.4) trains with its own predictions fed back (not the ground truth), and the
loss is the mean squared vertex error (the authors' code: ``nn.MSELoss`` over all coordinates).
The style input is the training speaker's one-hot (``batch["subject"]``).  After training the
neutral style is set to the mean of the training clips' one-hots before every checkpoint.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.recipes.base import LossOutput, Recipe, register_recipe

__all__ = ["FaceFormerRecipe"]


@register_recipe("faceformer")
class FaceFormerRecipe(Recipe):
    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        style = model.one_hot(batch["subject"])
        pred = model.predict(batch["features"], batch["template"], style)   # teacher-forcing free
        mse = F.mse_loss(pred, batch["vertices"])
        return LossOutput(total=mse, terms={"loss": float(mse.detach()), "mse": float(mse.detach())})

    def before_checkpoint(self, trainer: Any) -> None:
        """Neutral style = mean of the training clips' one-hots (clip counts per training speaker).
        Training never reads it (the loss uses each clip's own one-hot), so resume stays exact."""
        subjects = list(trainer.batcher.subjects)           # index order of batch["subject"]
        n = trainer.model.config.num_subjects
        if len(subjects) != n:
            raise ValueError(f"the training split has {len(subjects)} speakers but model.params.num_subjects = {n}; "
                             f"set num_subjects = {len(subjects)} in the config")
        counts = Counter(c.subject for c in trainer.train_clips)
        trainer.model.set_neutral_style(torch.tensor([counts[s] for s in subjects], dtype=torch.float32))
