"""wav2vec2 / HuBERT encoders through ``transformers.AutoModel.from_pretrained``.

No copy of these models can be installed offline, so this path is for users
who have one locally (a directory written by ``save_pretrained``) or online (a
hub name such as ``facebook/wav2vec2-base-960h``).  It is what FaceFormer and
CodeTalker use, which makes comparisons with their numbers possible.

Frame alignment: the standard conv feature encoder (total stride 320,
receptive field 400) gives ``(S - 400) // 320 + 1`` frames, one short of our
``S // 320`` convention, so the last frame is repeated.  Models with another
total stride are linearly resampled to ``S // 320``.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from . import (
    AudioEncoder,
    EncoderError,
    EncoderSpec,
    _pad_or_trim_frames,
    frames_at_50hz,
    interpolate_features,
)

__all__ = ["ACCEPTED_MODEL_TYPES", "HFAudioEncoder"]

log = logging.getLogger(__name__)

# Frame-level speech models that share wav2vec2's interface (raw audio in, hidden states out).
ACCEPTED_MODEL_TYPES = {
    "wav2vec2": ("wav2vec2", "wav2vec2-conformer", "data2vec-audio", "wavlm"),
    "hubert": ("hubert",),
}


def _wants_normalisation(name_or_path: str, config) -> bool:
    """Whether inputs are zero-mean/unit-variance normalised, as at pretraining.

    The model's own feature-extractor config says so; without one, wav2vec2
    convention is: models with layer-norm conv stacks ("layer", the large/lv60
    family) expect normalised input, group-norm ones (base) do not.
    """
    try:
        from transformers import AutoFeatureExtractor

        fe = AutoFeatureExtractor.from_pretrained(name_or_path)
        if hasattr(fe, "do_normalize"):
            return bool(fe.do_normalize)
    except (OSError, ValueError, KeyError) as e:  # no preprocessor_config.json
        log.debug("no feature extractor config for %s (%s); deciding from model config", name_or_path, e)
    return getattr(config, "feat_extract_norm", "group") == "layer"


class HFAudioEncoder(AudioEncoder):
    """wav2vec2-family or HuBERT model as an :class:`AudioEncoder`."""

    window_seconds = 20.0  # attention is quadratic; 20 s windows keep memory modest
    overlap_seconds = 2.0

    def __init__(self, spec: EncoderSpec) -> None:
        if spec.kind not in ACCEPTED_MODEL_TYPES:
            raise EncoderError(f"HFAudioEncoder handles wav2vec2/hubert, got kind {spec.kind!r}")
        if not spec.name_or_path:
            raise EncoderError(f"{spec.kind} needs name_or_path (local directory or hub name)")
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(spec.name_or_path)
        except OSError as e:
            raise EncoderError(
                f"could not load {spec.kind} model {spec.name_or_path!r}: {e}. Pass a local directory "
                "saved with save_pretrained, or a hub name when online."
            ) from e
        model_type = getattr(model.config, "model_type", "?")
        if model_type not in ACCEPTED_MODEL_TYPES[spec.kind]:
            raise EncoderError(
                f"{spec.name_or_path!r} is a {model_type!r} model, not {spec.kind} "
                f"(accepted model types: {', '.join(ACCEPTED_MODEL_TYPES[spec.kind])})"
            )
        n_layers = model.config.num_hidden_layers
        if not -(n_layers + 1) <= spec.layer <= n_layers:
            raise EncoderError(
                f"layer {spec.layer} out of range for a {n_layers}-layer model "
                f"(-1 = output, 0..{n_layers} = hidden states)"
            )
        super().__init__(spec, model.config.hidden_size)
        self.model = model.float().eval()
        self.normalize = _wants_normalisation(spec.name_or_path, model.config)
        self.stride = math.prod(model.config.conv_stride)

    def freeze_feature_encoder(self) -> None:
        """Freeze the conv front end, the usual choice when fine-tuning (FaceFormer does).

        Done by hand: not every transformers base model class has
        ``freeze_feature_encoder`` (HubertModel in transformers 5 does not).
        """
        fe = getattr(self.model, "feature_extractor", None)
        if fe is None:
            raise EncoderError(f"{type(self.model).__name__} has no conv feature_extractor to freeze")
        for p in fe.parameters():
            p.requires_grad_(False)
        if hasattr(fe, "_requires_grad"):
            fe._requires_grad = False  # also skips the conv stack's autograd graph

    def forward(self, wav: Tensor) -> Tensor:
        """(B, S) 16 kHz audio -> (B, S // 320, dim); differentiable."""
        if wav.dim() != 2:
            raise EncoderError(f"forward() takes a (B, S) batch, got shape {tuple(wav.shape)}")
        n = frames_at_50hz(wav.shape[1])
        x = wav.float()
        if self.normalize:
            # Per clip, like Wav2Vec2FeatureExtractor's zero_mean_unit_var_norm.
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        rf = self._receptive_field()
        if x.shape[1] < rf:
            # The conv stack needs one receptive field of input; pad short clips.
            x = torch.nn.functional.pad(x, (0, rf - x.shape[1]))
        if self.spec.layer == -1:
            out = self.model(x).last_hidden_state
        else:
            out = self.model(x, output_hidden_states=True).hidden_states[self.spec.layer]
        if self.stride == 320:
            return _pad_or_trim_frames(out, n, tolerance=2)
        return interpolate_features(out, max(n, 1))

    def _receptive_field(self) -> int:
        rf = 1
        for k, s in zip(reversed(self.model.config.conv_kernel), reversed(self.model.config.conv_stride)):
            rf = (rf - 1) * s + k
        return rf
