"""Composite & regional non-autoregressive talking-face model (Wu et al., MM 2023, paper 003).

The whole model in one file, with the paper's equation names in the code:

* **Audio path** (Sec. 4.4): pretrained encoder features (whisper tiny.en by default, optionally
  concatenated with hama phoneme posteriors) -> 1x1 ``Conv1d`` to ``C=256`` -> ``Z_audio`` at the
  mesh frame rate.  The features reach :meth:`forward` already resampled to exactly ``T`` mesh
  frames (:func:`engine.encoders.interpolate_features`).  The paper resamples *after* the 1x1 conv;
  a 1x1 conv is a per-frame affine map and linear interpolation is a convex combination of frames,
  so the two orders give identical numbers -- resampling first lets the trainer cache one
  encoder-rate feature file per clip and lets inference fill ``Z_audio`` window by window.
* **Shared vertex embedding W** (Sec. 4.3): one ``3N x 256`` matrix without bias.  ``W^T s``
  embeds a face (``embed``), ``W z`` decodes a feature (``decode``); the same matrix does both, and
  its l1 norm is the sparsity regulariser of eq. 4 (:mod:`engine.losses`).
* **Adaptive modulating module** (Sec. 4.2): ``Norm(S_i) = S_i - mean_t S_t`` (eq. 1, the
  reference sequence's own temporal mean -- removes identity, keeps movement) -> ``W`` -> ResNet1D
  encoder with two stride-2 stages (``T'/4`` frames) -> ``Z_face`` -> temporal mean and std ->
  linear -> ``(sigma_predict, mu_predict)`` -> AdaIN on ``Z_audio`` (eq. 2):
  ``Z_fuse = sigma_predict * (Z_audio - mu(Z_audio)) / sigma(Z_audio) + mu_predict``
  where ``mu/sigma(Z_audio)`` are taken over time, per channel (instance normalisation).
* **Decoder** (Sec. 4.4): ``Z_fuse + W^T S_bar`` (the template's embedding added to every frame)
  -> ResNet1D-18 (``BasicBlock1D`` x [2,2,2,2], kernel 3, stride 1, no downsampling) ->
  ``Z_pred`` -> eq. 3: ``S_hat_i = S_bar + alpha * W Z_pred[i]`` with ``alpha = 0.1``.

**Wav2Sem plug-in (paper 000, optional).**  With a ``wav2sem`` encoder last in ``encoders`` the
last feature channels are the sentence vector ``F_s``; the 1x1 conv sees only the phonetic
channels and eq. 7 ``F_d = FC(FC(F_s) + Z_fuse)`` is applied to the AdaIN *output*: ``F_s`` is
constant over a sentence, so eq. 2's normalisation over time would subtract it again if it were
fused into ``Z_audio`` (:mod:`engine.models.semantic_fusion`).

Vertices are normalised inside the model (``(x - coord_mean) / coord_scale`` with dataset
statistics stored as buffers), as the authors' code does, so the same ``alpha``, ``beta`` and
initialisation work for VOCASET (metres) and SynthTalk alike; inputs and outputs are in the
dataset's units.  The template passes through exactly: ``W Z_pred = 0`` gives ``S_hat = S_bar``.

Neutral style: the ``neutral_style_stats`` buffer holds the style vector used whenever no
reference sequence is given -- the training-set mean of ``[mu(Z_face), sigma(Z_face)]`` (Sec. 4.2),
or, for a model trained without references, exactly the vector its training fed the modulation.

**AdaIN statistics (deviation, ``adain_stats``).**  The paper takes ``mu/sigma(Z_audio)`` over the
whole sequence.  Training sees 96-frame crops and inference whole files, so the same speech got
different statistics (30 s animated alone vs inside a 10-min file: 0.41 mm mean, 6 mm max on the
lips with the shipped checkpoint).  ``adain_stats = "window"`` (new runs) takes them over a
centred sliding window of ``adain_window`` frames instead, truncated at the sequence ends, the same
function in training and inference; the model then has a finite receptive field
(``adain_window // 2 + decoder_radius`` frames) and windowed inference is exact.  ``"clip"`` is the
paper's form (checkpoints written before the option, e.g. the shipped ``default``, load as
``"clip"`` and animate exactly as before: inference computes the whole clip's statistics first,
:meth:`CompositeRegionalModel.clip_context`).

Every operation after the AdaIN statistics is either per-frame or a kernel-3 convolution, so the
decoder has a finite receptive field (:attr:`CompositeRegionalModel.decoder_radius` frames each
side) and inference runs it over windows (:mod:`engine.models.windowing`) identical to one pass.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.checkpoint import register_model  # the registry every model kind registers with
from engine.models.base import TalkingFaceModel

__all__ = ["CompositeRegionalConfig", "CompositeRegionalModel", "BasicBlock1D", "ResNet1D", "adain",
           "instance_stats", "sliding_stats", "KIND"]

KIND = "composite_regional"
STYLE_EPS = 1e-5


@dataclass
class CompositeRegionalConfig:
    """Hyper-parameters of the model (stored in every checkpoint's ``config``).

    ``feature_dim`` is the width of the concatenated encoder features (384 for whisper tiny.en,
    +191 with hama).  ``channels`` is the paper's 256 (W has ``3N x channels``).  With 256
    channels throughout, a V=5023 checkpoint is ~8.8 M parameters = ~17.5 MB in fp16.
    """

    feature_dim: int = 384
    channels: int = 256                     # C of Z_audio / Z_face / Z_pred and of W's columns
    decoder_layers: tuple[int, ...] = (2, 2, 2, 2)   # ResNet1D-18: 8 BasicBlocks = 16 convs
    style_layers: tuple[int, ...] = (2, 2)  # reference encoder: two stages, each stride 2 -> T'/4
    alpha: float = 0.1                      # eq. 3 output scale
    encoders: list[dict] = field(default_factory=lambda: [{"kind": "whisper", "name_or_path": None, "layer": -1}])
    encoder_in_model: bool = False          # True when the encoder is fine-tuned (its weights then live in the checkpoint)
    norm: str = "layer"                     # "layer" (per-frame LayerNorm) or "batch" (ResNet's BatchNorm)
    adain_stats: str = "window"             # "window": sliding mu/sigma(Z_audio); "clip": whole sequence (paper)
    adain_window: int = 65                  # frames of the sliding window (odd: centred), ~2.2 s at 30 fps
    semantic: dict | None = None            # Wav2Sem architecture when a 'wav2sem' encoder is last (paper 000)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CompositeRegionalConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown composite_regional model options {unknown}; known: {sorted(known)}")
        d = dict(d)
        # Checkpoints written before the ``norm`` option existed used BatchNorm.  New runs always
        # store ``norm`` (the trainer sets it explicitly), so only those old files take this path.
        d.setdefault("norm", "batch")
        # Likewise checkpoints written before ``adain_stats`` existed used whole-clip statistics.
        d.setdefault("adain_stats", "clip")
        if d["adain_stats"] not in ("clip", "window"):
            raise ValueError(f"adain_stats must be 'clip' or 'window', got {d['adain_stats']!r}")
        if int(d.get("adain_window", 65)) < 3:
            raise ValueError(f"adain_window must be at least 3 frames, got {d.get('adain_window')}")
        for key in ("decoder_layers", "style_layers"):
            if key in d:
                d[key] = tuple(int(x) for x in d[key])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["decoder_layers"] = list(self.decoder_layers)
        d["style_layers"] = list(self.style_layers)
        return d


class ChannelNorm(nn.Module):
    """LayerNorm over channels, per frame, on ``(B, C, T)``.

    Unlike BatchNorm it behaves the same in training and inference and does not depend on the
    other clips in a batch; unlike GroupNorm/InstanceNorm it does not look across time, so the
    decoder keeps its finite receptive field (exact windowed inference).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.transpose(1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return ChannelNorm(channels)
    raise ValueError(f"norm must be 'layer' or 'batch', got {kind!r}")


class BasicBlock1D(nn.Module):
    """ResNet basic block on sequences: ``x + N(conv3(ReLU(N(conv3(x)))))``.

    Kernel 3, padding 1, so the block keeps the length when ``stride == 1``.  There is no ReLU
    after the addition (as in the authors' blocks): the decoder's last block outputs ``Z_pred``,
    which must be signed to mean "move this way or the other" through ``W``.  The last norm's
    scale starts at zero, so every block starts as the identity (stable deep training).
    ``N`` is :class:`ChannelNorm` by default, BatchNorm with ``norm="batch"`` (the ResNet original;
    we measured a large train/inference gap with it on SynthTalk crops, see the report).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: str = "layer") -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, out_ch)
        nn.init.zeros_(self.bn2.weight)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride, bias=False), make_norm(norm, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return y + self.shortcut(x)


class ResNet1D(nn.Module):
    """Stages of :class:`BasicBlock1D`; the first block of a stage uses ``stride``."""

    def __init__(self, channels: int, layers: tuple[int, ...], stride: int, norm: str = "layer") -> None:
        super().__init__()
        blocks = []
        for n in layers:
            for i in range(n):
                blocks.append(BasicBlock1D(channels, channels, stride if i == 0 else 1, norm))
        self.blocks = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C, T / stride^stages)
        return self.blocks(x)


def adain(z_audio: Tensor, sigma_predict: Tensor, mu_predict: Tensor,
          audio_stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Eq. 2: ``sigma_predict * (Z_audio - mu(Z_audio)) / sigma(Z_audio) + mu_predict``.

    ``z_audio`` is ``(B, T, C)``; ``sigma_predict``/``mu_predict`` are ``(B, C)``.  ``audio_stats``
    = ``(mu, sigma)``, each ``(B, C)`` (one value per clip: :func:`instance_stats`, the default) or
    ``(B, T, C)`` (one per frame: :func:`sliding_stats`).
    """
    if audio_stats is None:
        audio_stats = instance_stats(z_audio)
    mu, sigma = audio_stats
    if mu.dim() == 2:
        mu, sigma = mu.unsqueeze(1), sigma.unsqueeze(1)
    normed = (z_audio - mu) / sigma
    return sigma_predict.unsqueeze(1) * normed + mu_predict.unsqueeze(1)


def instance_stats(z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel temporal mean and std of ``(B, T, C)`` (std floored by ``STYLE_EPS``)."""
    mu = z.mean(dim=1)
    var = z.var(dim=1, unbiased=False)
    return mu, torch.sqrt(var + STYLE_EPS)


def sliding_stats(z: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Per-frame, per-channel mean and std of ``(B, T, C)`` over the centred window of ``window``
    frames (``window // 2`` each side), truncated at the sequence ends: ``(B, T, C)`` each.

    Frame ``t`` depends only on frames ``[t - window // 2, t + window // 2]``, so the statistics
    of a frame are the same in a 96-frame training crop, a 30 s clip or an hour of audio as long
    as that neighbourhood is inside the sequence.
    """
    h = int(window) // 2
    x = z.transpose(1, 2)                                                       # (B, C, T)
    mu = F.avg_pool1d(x, 2 * h + 1, stride=1, padding=h, count_include_pad=False)
    m2 = F.avg_pool1d(x * x, 2 * h + 1, stride=1, padding=h, count_include_pad=False)
    var = (m2 - mu * mu).clamp_min(0.0)
    return mu.transpose(1, 2), torch.sqrt(var + STYLE_EPS).transpose(1, 2)


@register_model(KIND)
class CompositeRegionalModel(TalkingFaceModel):
    """Audio features + template (+ optional reference motion) -> vertex animation.

    Shapes: ``features (B, T, feature_dim)`` already at the mesh frame rate; ``template (B, V, 3)``
    or ``None`` (the checkpoint's template); ``reference (B, T', V, 3)`` or ``None`` (neutral
    style).  Output ``(B, T, V, 3)`` in the same units as the template.
    """

    kind = KIND

    def __init__(self, config: CompositeRegionalConfig, template: Tensor) -> None:
        super().__init__()
        if template.dim() != 2 or template.shape[1] != 3:
            raise ValueError(f"template must be (V, 3), got {tuple(template.shape)}")
        self.config = config
        c = config.channels
        v = int(template.shape[0])
        self.num_vertices = v
        # Data normalisation (set from the training set by `set_normalisation`).
        self.register_buffer("template", template.detach().float().clone())
        self.register_buffer("coord_mean", template.detach().float().mean(0))
        self.register_buffer("coord_scale", template.detach().float().std().reshape(()))
        # The style used without a reference (Sec. 4.2); see the module docstring.
        self.register_buffer("neutral_style_stats", torch.cat([torch.zeros(c), torch.ones(c)]))
        self._register_load_state_dict_pre_hook(_rename_old_neutral_style)

        # Shared embedding W (3N x C, no bias), initialised like nn.Linear(3N, C).
        self.W = nn.Parameter(torch.empty(3 * v, c))
        bound = 1.0 / math.sqrt(3 * v)
        nn.init.uniform_(self.W, -bound, bound)

        from engine.models.semantic_fusion import build_semantic_plugin
        # Wav2Sem (paper 000, eq. 7) after AdaIN: F_s is constant over a sentence, so eq. 2's
        # normalisation over time would remove it if it were fused into Z_audio before; fused into
        # Z_fuse (the AdaIN output, C channels) it reaches the decoder.
        self.semantic, config.semantic = build_semantic_plugin(config.semantic, config.encoders, config.feature_dim,
                                                               phonetic_dim_of=lambda fp: c)
        self.audio_proj = nn.Conv1d(config.feature_dim - self.semantic_dim, c, 1)  # 1x1 conv -> Z_audio
        self.style_encoder = ResNet1D(c, config.style_layers, stride=2, norm=config.norm)  # -> Z_face (T'/4)
        self.style_to_modulation = nn.Linear(2 * c, 2 * c)                # [mu, sigma](Z_face) -> [sigma_p, mu_p]
        with torch.no_grad():  # start as the identity modulation: sigma_predict = 1, mu_predict = 0
            self.style_to_modulation.weight.mul_(0.1)
            self.style_to_modulation.bias.zero_()
            self.style_to_modulation.bias[:c] = 1.0
        self.decoder = ResNet1D(c, config.decoder_layers, stride=1, norm=config.norm)  # ResNet1D-18, stride 1

        self.encoders: nn.ModuleList | None = None  # fine-tuned encoders, attached by `attach_encoders`

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: dict[str, Any], topology: Any) -> "CompositeRegionalModel":
        """Registry hook: build from a checkpoint ``config`` and a :class:`engine.topology.Topology`."""
        cfg = CompositeRegionalConfig.from_dict(config)
        model = cls(cfg, torch.as_tensor(topology.vertices, dtype=torch.float32))
        if cfg.encoder_in_model:
            from engine.encoders import build_encoder
            model.attach_encoders([build_encoder(spec) for spec in cfg.encoders])
        return model

    def attach_encoders(self, encoders: list[nn.Module]) -> None:
        """Make the encoders part of the model (their weights are then trained and checkpointed)."""
        self.encoders = nn.ModuleList(encoders)
        self.config.encoder_in_model = True

    @property
    def decoder_radius(self) -> int:
        """Frames of context each side that one output frame of the decoder depends on."""
        return sum(self.config.decoder_layers) * 2  # two kernel-3 convs per block, stride 1

    @property
    def receptive_field(self) -> int:  # type: ignore[override]
        """Input frames each side one output frame depends on (given :meth:`clip_context` for ``"clip"``)."""
        if self.config.adain_stats == "window":
            return self.config.adain_window // 2 + self.decoder_radius
        return self.decoder_radius

    @torch.no_grad()
    def set_normalisation(self, coord_mean: Tensor, coord_scale: float) -> None:
        """Store the dataset's per-axis vertex mean and overall coordinate std."""
        self.coord_mean.copy_(torch.as_tensor(coord_mean, dtype=torch.float32).reshape(3))
        self.coord_scale.fill_(float(coord_scale))

    # ------------------------------------------------------------------ W (Sec. 4.3)
    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self.coord_mean) / self.coord_scale

    def embed(self, s: Tensor) -> Tensor:
        """``W^T s`` for faces ``(..., V, 3)`` in normalised units -> ``(..., C)``."""
        return s.flatten(-2) @ self.W

    def decode(self, z: Tensor) -> Tensor:
        """``W z`` for features ``(..., C)`` -> displacements ``(..., V, 3)`` in normalised units."""
        out = z @ self.W.t()
        return out.unflatten(-1, (self.num_vertices, 3))

    # ------------------------------------------------------------------ eq. 1-2
    def style_statistics(self, reference: Tensor) -> Tensor:
        """Reference motion ``(B, T', V, 3)`` -> ``[mu(Z_face), sigma(Z_face)]`` ``(B, 2C)``.

        Eq. 1 subtracts the sequence's own temporal mean, so any identity (any template on this
        topology) can serve as a reference: only its movement is used.
        """
        if reference.dim() != 4 or reference.shape[2:] != (self.num_vertices, 3):
            raise ValueError(f"reference must be (B, T', {self.num_vertices}, 3), got {tuple(reference.shape)}")
        norm_s = (reference - reference.mean(dim=1, keepdim=True)) / self.coord_scale   # eq. 1
        z = self.embed(norm_s).transpose(1, 2)                                         # (B, C, T')
        z_face = self.style_encoder(z)                                                  # (B, C, T'/4)
        mu = z_face.mean(dim=2)
        sigma = torch.sqrt(z_face.var(dim=2, unbiased=False) + STYLE_EPS)
        return torch.cat([mu, sigma], dim=1)

    def modulation(self, style_stats: Tensor) -> tuple[Tensor, Tensor]:
        """Linear map of the style statistics to ``(sigma_predict, mu_predict)``, each ``(B, C)``."""
        out = self.style_to_modulation(style_stats)
        c = self.config.channels
        return out[:, :c], out[:, c:]

    def audio_latent(self, features: Tensor) -> Tensor:
        """``(B, T, feature_dim)`` -> ``Z_audio`` ``(B, T, C)`` (the 1x1 conv of the phonetic features;
        Wav2Sem's trailing ``F_s`` channels, if any, are fused after AdaIN instead)."""
        if features.dim() != 3 or features.shape[2] != self.config.feature_dim:
            raise ValueError(f"features must be (B, T, {self.config.feature_dim}), got {tuple(features.shape)}")
        if self.semantic_dim:
            features = features[..., :-self.semantic_dim]
        return self.audio_proj(features.transpose(1, 2)).transpose(1, 2)

    def style_or_neutral(self, batch: int, reference: Tensor | None) -> Tensor:
        if reference is None:
            return self.neutral_style_stats.unsqueeze(0).expand(batch, -1)
        return self.style_statistics(reference)

    def audio_statistics(self, z_audio: Tensor) -> tuple[Tensor, Tensor]:
        """``mu/sigma(Z_audio)`` of eq. 2 as configured by ``adain_stats``."""
        if self.config.adain_stats == "window":
            return sliding_stats(z_audio, self.config.adain_window)
        return instance_stats(z_audio)

    # ------------------------------------------------------------------ decoder + eq. 3
    def decoder_input(self, z_fuse: Tensor, template: Tensor) -> Tensor:
        """``Z_fuse + W^T S_bar`` for every frame: ``(B, T, C)``."""
        return z_fuse + self.embed(self._normalise(template)).unsqueeze(1)

    def decode_frames(self, dec_in: Tensor, template: Tensor) -> Tensor:
        """ResNet1D-18 then eq. 3 ``S_hat = S_bar + alpha W Z_pred`` (returned in dataset units)."""
        z_pred = self.decoder(dec_in.transpose(1, 2)).transpose(1, 2)          # (B, T, C)
        disp = self.decode(z_pred) * (self.config.alpha * self.coord_scale)    # un-normalised W Z_pred
        return template.unsqueeze(1) + disp

    def forward(self, features: Tensor, template: Tensor | None = None, reference: Tensor | None = None,
                style_stats: Tensor | None = None, audio_stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Training/one-pass forward; ``audio_stats`` overrides eq. 2's statistics (a window of a
        ``"clip"``-statistics model run over a longer clip, see :meth:`clip_context`)."""
        b = features.shape[0]
        if template is None:
            template = self.template.unsqueeze(0).expand(b, -1, -1)
        if template.shape[1:] != (self.num_vertices, 3):
            raise ValueError(f"template must be (B, {self.num_vertices}, 3), got {tuple(template.shape)}")
        z_audio = self.audio_latent(features)
        if style_stats is None:
            style_stats = self.style_or_neutral(b, reference)
        sigma_p, mu_p = self.modulation(style_stats)
        if audio_stats is None:
            audio_stats = self.audio_statistics(z_audio)
        z_fuse = adain(z_audio, sigma_p, mu_p, audio_stats)                    # eq. 2
        if self.semantic is not None:                                          # Wav2Sem eq. 7, after AdaIN
            z_fuse = self.semantic.fusion(z_fuse, features[..., -self.semantic_dim:])
        return self.decode_frames(self.decoder_input(z_fuse, template), template)

    # ------------------------------------------------------------------ TalkingFaceModel interface
    def predict(self, features: Tensor, template: Tensor, style: Tensor,
                context: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``(B, T, F)``, ``(B, V, 3)``, ``(B, 2C)`` -> ``(B, T, V, 3)``; ``context`` = :meth:`clip_context`."""
        self.check_template(template)
        return self.forward(features, template, style_stats=style, audio_stats=context)

    @torch.no_grad()
    def clip_context(self, features: Tensor) -> tuple[Tensor, Tensor] | None:
        """``"clip"`` statistics: ``mu/sigma(Z_audio)`` of the whole clip ``(T, F)`` (each ``(1, C)``),
        so that windows decoded one by one equal one pass.  ``None`` for ``"window"`` statistics."""
        if self.config.adain_stats != "clip":
            return None
        z = torch.cat([self.audio_latent(features[i:i + 8192].unsqueeze(0))
                       for i in range(0, features.shape[0], 8192)], dim=1)
        return instance_stats(z)

    def neutral_style(self) -> Tensor:
        return self.neutral_style_stats

    @torch.no_grad()
    def style_from_reference(self, reference: Tensor, chunk: int = 512) -> Tensor:
        """``[mu(Z_face), sigma(Z_face)]`` of a reference ``(T', V, 3)`` without holding ``(T', 3V)`` twice.

        Eq. 1's temporal mean is accumulated first; the per-frame embedding ``W^T Norm(S_i)`` is then
        computed in chunks (only ``(T', C)`` is kept), and the style encoder runs on that.
        """
        n = reference.shape[0]
        if n < 1:
            raise ValueError("style reference has no frames")
        if len(reference.shape) != 3 or tuple(reference.shape[1:]) != (self.num_vertices, 3):
            raise ValueError(f"reference must be (T', {self.num_vertices}, 3), got {tuple(reference.shape)}")
        dev = self.W.device
        mean = torch.zeros(self.num_vertices, 3, dtype=torch.float64)
        for i in range(0, n, chunk):
            mean += _rows(reference, i, i + chunk).double().sum(0)
        mean = (mean / n).float().to(dev)
        emb = [self.embed((_rows(reference, i, i + chunk).float().to(dev) - mean)
                          / self.coord_scale) for i in range(0, n, chunk)]
        z_face = self.style_encoder(torch.cat(emb).t().unsqueeze(0))           # (1, C, T'/4)
        mu = z_face.mean(dim=2)
        sigma = torch.sqrt(z_face.var(dim=2, unbiased=False) + STYLE_EPS)
        return torch.cat([mu, sigma], dim=1)[0]

    # ------------------------------------------------------------------ regulariser (eq. 4)
    def sparsity(self) -> Tensor:
        """``||W||_1``, the sparsity regulariser of eq. 4."""
        return self.W.abs().sum()

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config.to_dict()


def _rename_old_neutral_style(state_dict: dict, prefix: str, *args: Any) -> None:
    """Checkpoints before the model interface stored the neutral style as ``neutral_style``."""
    old = prefix + "neutral_style"
    if old in state_dict:
        state_dict[prefix + "neutral_style_stats"] = state_dict.pop(old)


def _rows(x: Any, a: int, b: int) -> Tensor:
    """Frames ``a:b`` of a tensor or array (e.g. a memory-mapped reference file) as a CPU tensor."""
    return x[a:b].cpu() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x[a:b]))
