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
0 = blank) and ``wav``/``crop`` when the encoder is fine-tuned.  When the encoder is fine-tuned the
harness also fills ``features`` from the live encoder before :meth:`Recipe.loss`, so a recipe can
always read ``features``.

Recipe options come from the config's ``[recipe]`` table: a recipe that has options declares an
``Options`` dataclass, and :meth:`Recipe.configure` checks the table against it (unknown keys are
an error that lists the known ones).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

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
    #: dataclass of the ``[recipe]`` options (None = the recipe takes none)
    Options: type | None = None

    def __init__(self) -> None:
        self.options: Any = self.Options() if self.Options is not None else None

    def configure(self, options: dict[str, Any]) -> None:
        """Check and store the config's ``[recipe]`` table (called once, before :meth:`build_model`)."""
        if self.Options is None:
            if options:
                raise ValueError(f"the {self.kind!r} recipe takes no [recipe] options, got {sorted(options)}")
            return
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown [recipe] option(s) {unknown} for {self.kind!r}; known: {sorted(known)}")
        self.options = self.Options(**options)

    def batch_needs(self) -> set[str]:
        """Optional batch keys this recipe needs the harness to build (e.g. ``{"reference"}``)."""
        return set()

    def build_model(self, params: dict[str, Any], topology: Any) -> "TalkingFaceModel":
        """Model from the config's ``[model]`` params (``feature_dim``/``encoders`` filled by the harness)."""
        from engine.checkpoint import model_class
        return model_class(self.kind).from_config(params, topology)

    def prepare(self, model: "TalkingFaceModel", templates: np.ndarray) -> None:
        """Once, before training: fit data statistics from the training subjects' templates ``(S, V, 3)``."""

    def build_aux(self, model: "TalkingFaceModel", params: dict[str, Any]) -> nn.ModuleDict:
        """Networks trained beside the model but not shipped in its checkpoint (saved in trainer state)."""
        return nn.ModuleDict()

    def loss(self, model: nn.Module, aux: nn.ModuleDict, batch: dict[str, Tensor], step: int) -> LossOutput:
        raise NotImplementedError

    def before_checkpoint(self, trainer: Any) -> None:
        """Called on rank 0 before *every* model checkpoint is written (mid-run ``last.safetensors``
        included), so that a killed run's checkpoint is as usable as a finished one (e.g. fill the
        neutral style).  Must not change anything training reads, or resume would not be exact."""

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
