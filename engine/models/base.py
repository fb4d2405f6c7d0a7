"""The one interface every talking-face method in Parley implements.

Why an interface: ``engine.inference.Animator``, the CLI, the evaluation, the benchmark, the
retargeting and the Blender add-on must work with any method unchanged.  They only ever see:

* **input** -- audio features ``(B, T, feature_dim)`` already resampled to the mesh frame rate
  (:func:`engine.encoders.interpolate_features`), a neutral template ``(B, V, 3)`` and a *style*
  vector ``(B, style_dim)`` (from :meth:`TalkingFaceModel.style_from_reference` or
  :meth:`TalkingFaceModel.neutral_style`);
* **output** -- vertex positions ``(B, T, V, 3)`` in the template's units (:meth:`predict`).

How a method tells inference to run it on audio of any length in bounded memory:

* ``receptive_field`` is an ``int`` -> one output frame depends on at most that many input frames
  each side, so windows with that margin, trimmed, are **identical** to one pass (convolutional
  decoders, local attention);
* ``receptive_field`` is ``None`` -> the output depends on the whole input (autoregressive decoders,
  global attention); inference runs overlapping chunks of ``chunk_frames`` frames and cross-fades
  the overlaps (:mod:`engine.models.windowing`).

What stays out of here: losses, auxiliary networks used only in training (a lip reader, a
recogniser), teacher forcing -- those live in the method's training recipe (``training/recipes``).

Adding a method = one file in ``engine/models/`` with a subclass decorated by
``@engine.checkpoint.register_model(kind)``, one recipe, one config.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TalkingFaceModel", "StyleNotSupported"]


class StyleNotSupported(ValueError):
    """The method cannot take a reference motion as style (e.g. it conditions on a speaker one-hot)."""


class TalkingFaceModel(nn.Module):
    """Base class: audio features + template + style -> ``(B, T, V, 3)``.

    Subclasses set in ``__init__``: ``self.num_vertices`` and a ``template`` buffer ``(V, 3)``
    (the checkpoint's neutral face), and implement :meth:`predict`, :meth:`neutral_style`,
    :meth:`from_config` and :meth:`checkpoint_config`.
    """

    kind: str = ""                      # set by @register_model
    num_vertices: int
    template: Tensor
    #: frames of input context each side one output frame depends on; None = the whole input
    receptive_field: int | None = None
    #: frames per chunk for models with ``receptive_field is None`` (e.g. FaceFormer's 600)
    chunk_frames: int = 600
    #: frames two neighbouring chunks share (cross-faded) for ``receptive_field is None``
    chunk_overlap: int = 60

    # ------------------------------------------------------------------ construction / checkpoints
    @classmethod
    def from_config(cls, config: dict[str, Any], topology: Any) -> "TalkingFaceModel":
        """Rebuild from a checkpoint's ``config`` and :class:`engine.topology.Topology`."""
        raise NotImplementedError

    def checkpoint_config(self) -> dict[str, Any]:
        """JSON-serialisable config stored in the checkpoint (round-trips through ``from_config``)."""
        raise NotImplementedError

    @property
    def feature_dim(self) -> int:
        return int(self.checkpoint_config()["feature_dim"])

    # ------------------------------------------------------------------ carried encoders / plug-ins
    def encoder_for(self, spec: dict[str, Any]) -> nn.Module | None:
        """An encoder this model carries in its own weights for ``spec`` (the frozen Wav2Sem encoder
        of :mod:`engine.models.semantic_fusion`), or ``None``: build it from the spec.  Lets a
        checkpoint animate on a machine that lacks the files its training run read."""
        plugin = getattr(self, "semantic", None)
        if plugin is not None and spec.get("kind") == "wav2sem":
            return plugin.encoder
        return None

    def init_optional_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes a fine-tuning start (``train.init_checkpoint``) may lack: plug-ins
        added to an already trained host (they are initialised to leave it unchanged)."""
        return ("semantic.",) if getattr(self, "semantic", None) is not None else ()

    @property
    def semantic_dim(self) -> int:
        """Trailing feature channels that are Wav2Sem's ``F_s`` (0 without the plug-in)."""
        plugin = getattr(self, "semantic", None)
        return 0 if plugin is None else plugin.dim

    # ------------------------------------------------------------------ style
    def neutral_style(self) -> Tensor:
        """Style vector ``(style_dim,)`` used when the user gives no reference."""
        raise NotImplementedError

    def style_from_reference(self, reference: Tensor) -> Tensor:
        """Reference motion ``(T', V, 3)`` on this topology -> style vector ``(style_dim,)``."""
        raise StyleNotSupported(f"the {self.kind!r} model does not take a reference motion as style; "
                                "animate without --style")

    # ------------------------------------------------------------------ inference
    def clip_context(self, features: Tensor) -> Any:
        """Whole-clip quantities every window needs, from all of a clip's features ``(T, F)``
        (e.g. clip-level normalisation statistics).  ``None`` (the default) = windows are
        self-contained.  When it returns something, :mod:`engine.models.windowing` passes it to
        every :meth:`predict` call as ``context=``; models that never return one need not accept it.
        """
        return None

    def predict(self, features: Tensor, template: Tensor, style: Tensor) -> Tensor:
        """Inference forward: ``(B, T, F)``, ``(B, V, 3)``, ``(B, S)`` -> ``(B, T, V, 3)``.

        Must not use ground truth (no teacher forcing).  For ``receptive_field = r`` the frames
        ``[r, T - r)`` of a window must equal the same frames of a pass over the whole clip.
        """
        raise NotImplementedError

    @torch.no_grad()
    def check_template(self, template: Tensor) -> None:
        if template.dim() != 3 or tuple(template.shape[1:]) != (self.num_vertices, 3):
            raise ValueError(f"template must be (B, {self.num_vertices}, 3), got {tuple(template.shape)}")
