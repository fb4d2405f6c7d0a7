"""What a training recipe provides: the method-specific half of training.

The shared harness (``training/trainer.py`` and friends) owns the loop, batching, the feature
cache, DDP, RNG state, checkpoints, resume and reports.  A recipe owns what differs per method:
which model to build, which auxiliary networks train beside it (SelfTalk's lip-reading
interpreter), the loss with its weights, and what to do once training ends (e.g. compute a
neutral style).  One recipe per method, registered by the model kind it trains, selected by
``[model] kind`` in the config.

Batch keys the harness provides (all tensors, ``B`` clips cropped to ``T`` frames):
``features (B, T, F)`` at the mesh rate, ``vertices (B, T, V, 3)``, ``template (B, V, 3)``,
``subject (B,)`` training-subject index, optionally ``reference (B, T', V, 3)`` (another clip of the
same speaker), ``phones (B, L)`` + ``phone_lengths (B,)`` (phone ids inside the crop, for CTC;
0 = blank) and ``wav``/``crop`` when the encoder is fine-tuned.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from torch import Tensor, nn

if TYPE_CHECKING:  # the harness imports recipes, never the other way round at import time
    from engine.models.base import TalkingFaceModel

__all__ = ["Recipe", "LossOutput", "register_recipe", "recipe_for", "RECIPES"]


@dataclass
class LossOutput:
    """``total`` is back-propagated; ``terms`` (floats) are logged, one CSV column each."""

    total: Tensor
    terms: dict[str, float] = field(default_factory=dict)


class Recipe:
    """Base recipe. Subclasses override what their method needs."""

    kind: str = ""

    def build_model(self, params: dict[str, Any], topology: Any) -> "TalkingFaceModel":
        """Model from the config's ``[model]`` params (``feature_dim``/``encoders`` filled by the harness)."""
        from engine.checkpoint import model_class
        return model_class(self.kind).from_config(params, topology)

    def build_aux(self, model: "TalkingFaceModel", params: dict[str, Any]) -> nn.ModuleDict:
        """Networks trained beside the model but not shipped in its checkpoint (saved in trainer state)."""
        return nn.ModuleDict()

    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        raise NotImplementedError

    def finish(self, trainer: Any) -> None:
        """Called on rank 0 after the last step, before evaluation and the final checkpoint."""


RECIPES: dict[str, Callable[[], Recipe]] = {}


def register_recipe(kind: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.kind = kind
        RECIPES[kind] = cls
        return cls
    return deco


def recipe_for(kind: str) -> Recipe:
    import importlib
    if kind not in RECIPES:
        try:
            importlib.import_module(f"training.recipes.{kind}")
        except ModuleNotFoundError as exc:
            if exc.name != f"training.recipes.{kind}":
                raise
    if kind not in RECIPES:
        raise ValueError(f"no training recipe for model kind {kind!r}; known: {sorted(RECIPES)}")
    return RECIPES[kind]()
