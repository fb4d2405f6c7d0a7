"""Wav2Sem's plug-in fusion (paper 000, Sec. 3.3, eq. 7) for any host model.

``F_d = FC(FC(F_s) + F_p)``: the sentence-level semantic vector ``F_s`` (from
:mod:`engine.encoders.wav2sem`) goes through one linear layer, is added to the host's phonetic
audio feature ``F_p`` at every frame, and a second linear layer mixes the sum.

How a host receives ``F_s``: the Wav2Sem encoder is the **last** entry of the model's
``encoders`` list, so the features the interface already passes (``(B, T, feature_dim)``) end
with ``F_s`` repeated on every frame (:func:`split_features` takes them apart).  Nothing else in
the interface changes: the animator, the windowing and the add-on keep passing features.

Why the host carries the encoder (:class:`SemanticPlugin`): the checkpoint must animate on a
machine without the pretraining run's files, so the frozen Wav2Sem weights are part of the host's
state dict (``semantic.encoder.*``) and :meth:`engine.models.base.TalkingFaceModel.encoder_for`
hands them to the animator instead of building the encoder from its spec.

Initialisation (not in the paper, which trains every host from scratch): the inner FC starts at
zero and the outer FC at the identity, so a host with the plug-in added starts as exactly the
host without it -- fine-tuning a trained host (``train.init_checkpoint``) then starts from its
own predictions, and the plug-in only moves them as far as the loss asks.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SemanticFusion", "SemanticPlugin", "split_features", "build_semantic_plugin"]


class SemanticFusion(nn.Module):
    """Eq. 7 on ``F_p (B, T, Cp)`` and ``F_s (B, T, Cs)`` (or ``(B, Cs)``) -> ``F_d (B, T, Cp)``."""

    def __init__(self, semantic_dim: int, phonetic_dim: int) -> None:
        super().__init__()
        self.fc_s = nn.Linear(semantic_dim, phonetic_dim)      # inner FC(F_s)
        self.fc_d = nn.Linear(phonetic_dim, phonetic_dim)      # outer FC(. + F_p)
        with torch.no_grad():
            self.fc_s.weight.zero_()
            self.fc_s.bias.zero_()
            self.fc_d.weight.copy_(torch.eye(phonetic_dim))
            self.fc_d.bias.zero_()

    def forward(self, f_p: Tensor, f_s: Tensor) -> Tensor:
        s = self.fc_s(f_s)
        if s.dim() == 2:
            s = s.unsqueeze(1)
        return self.fc_d(s + f_p)


def split_features(features: Tensor, semantic_dim: int) -> tuple[Tensor, Tensor | None]:
    """``(B, T, F)`` -> ``(F_p, F_s)``: the last ``semantic_dim`` channels are ``F_s`` (``None`` if 0)."""
    if semantic_dim <= 0:
        return features, None
    return features[..., :-semantic_dim], features[..., -semantic_dim:]


class SemanticPlugin(nn.Module):
    """The frozen Wav2Sem encoder a host carries plus its eq. 7 fusion."""

    def __init__(self, encoder: nn.Module, phonetic_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.dim = int(encoder.dim)
        self.fusion = SemanticFusion(self.dim, phonetic_dim)

    def train(self, mode: bool = True) -> "SemanticPlugin":
        super().train(mode)
        self.encoder.eval()            # frozen after pretraining (Sec. 3.5): no dropout either
        return self


def build_semantic_plugin(semantic: dict | None, encoders: list[dict], feature_dim: int,
                          phonetic_dim_of: Any = None) -> tuple[SemanticPlugin | None, dict | None]:
    """The plug-in a host config asks for, and the architecture dict to store in its config.

    ``semantic`` is the stored Wav2Sem architecture (a checkpoint being loaded: the weights follow
    in its state dict) or ``None``; ``encoders`` the host's encoder specs.  A ``wav2sem`` spec
    without a stored architecture is a new run: the pretrained file it names is loaded.
    ``phonetic_dim_of(Fp)`` maps the width of ``F_p`` to the width the fusion works at (identity by
    default; the composite model fuses after its 1x1 convolution, at its channel width).
    """
    from engine.encoders import EncoderSpec
    from engine.encoders.wav2sem import Wav2SemConfig, Wav2SemEncoder, load_wav2sem

    kinds = [s.get("kind") for s in encoders]
    if "wav2sem" not in kinds:
        if semantic:
            raise ValueError("the model config has a Wav2Sem architecture but no 'wav2sem' encoder in encoders")
        return None, None
    if kinds.count("wav2sem") > 1 or kinds[-1] != "wav2sem":
        raise ValueError(f"the 'wav2sem' encoder must be the last (and only one) in encoders, got {kinds}")
    spec = EncoderSpec.from_dict(dict(encoders[-1]))
    if semantic:
        enc = Wav2SemEncoder(Wav2SemConfig.from_dict(semantic), spec)
    else:
        enc = load_wav2sem(spec)
    fp = feature_dim - enc.dim
    if fp <= 0:
        raise ValueError(f"feature_dim {feature_dim} leaves no phonetic features beside Wav2Sem's {enc.dim}")
    width = phonetic_dim_of(fp) if phonetic_dim_of is not None else fp
    return SemanticPlugin(enc.eval(), width), enc.config.to_dict()
