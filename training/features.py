"""Frozen-encoder feature cache and the encoder specs of a run.

While the audio encoder is frozen its output never changes, so it is computed once per clip and
stored as safetensors under ``<feature_cache>/<encoder kind>-<spec hash>/<clip>.safetensors``
(no pickle).  A file remembers which version of the clip's audio it came from and is recomputed
when the audio changes.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.fileio import atomic_path
from training.corpus import Clip

__all__ = ["FeatureCache", "spec_hash", "encoder_specs", "encoder_dim", "live_features", "clip_features_live"]


def spec_hash(spec: dict[str, Any]) -> str:
    """Short hash of an encoder spec.  ``window = "full"`` (the default) is left out, so specs
    written before window modes existed keep their hash and existing caches stay valid."""
    spec = {k: v for k, v in spec.items() if not (k == "window" and v == "full")}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def encoder_specs(model_params: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's encoder specs (``[model] params.encoders``; whisper tiny.en by default), normalised."""
    from engine.encoders import EncoderSpec
    raw = model_params.get("encoders") or [{"kind": "whisper"}]
    return [EncoderSpec.from_dict(dict(s)).to_dict() for s in raw]


def encoder_dim(spec: dict[str, Any]) -> int:
    """Width of an encoder's features without building it when it is one we know."""
    if spec["kind"] == "whisper" and spec.get("name_or_path") is None:
        return 384
    if spec["kind"] == "hama":
        return 191
    from engine.encoders import build_encoder
    return int(build_encoder(spec).dim)


class FeatureCache:
    """Frozen-encoder features per clip, on disk as safetensors.

    Keyed by clip name inside a folder named by the encoder spec's hash, so changing the encoder
    never reuses stale features.  ``pack_seconds > 0`` encodes several short clips in one
    encoder window (separated by 0.5 s of silence) -- whisper always runs a 30 s window, so this
    is up to ~10x cheaper on CPU for 2-3 s clips, at the price of the window holding other
    speech around each clip (the same situation as long-audio inference).

    Packing applies only to ``window = "full"`` specs.  A ``"fitted"`` spec's cost is already
    proportional to the audio, and its features depend on the window length, so each clip is
    encoded alone exactly as :class:`engine.inference.Animator` encodes a file of that length
    (``encode`` on the whole clip): training sees the features inference will produce.
    """

    GAP_SECONDS = 0.5

    def __init__(self, root: Path, specs: list[dict[str, Any]], pack_seconds: float = 0.0) -> None:
        self.root = Path(root)
        self.specs = specs
        self.pack_seconds = float(pack_seconds)
        self._encoders: dict[str, nn.Module] = {}
        self._mem: dict[tuple[str, str], Tensor] = {}

    def packs(self, spec: dict[str, Any]) -> bool:
        """Whether ``spec``'s clips are packed several to a window (see the class docstring).  Never for
        fitted whisper windows (inference encodes each clip alone) nor for Wav2Sem, whose sentence
        vector summarises its whole window (packing would give neighbouring sentences one vector)."""
        return self.pack_seconds > 0 and spec.get("window", "full") == "full" and spec.get("kind") != "wav2sem"

    def _dir(self, spec: dict[str, Any]) -> Path:
        tag = spec_hash({**spec, "pack_seconds": self.pack_seconds if self.packs(spec) else 0.0})
        return self.root / f"{spec.get('kind', 'enc')}-{tag}"

    def set_encoder(self, spec: dict[str, Any], module: nn.Module) -> None:
        """Use ``module`` for ``spec`` instead of building it (tests inject tiny encoders)."""
        self._encoders[spec_hash(spec)] = module

    def encoder(self, spec: dict[str, Any]) -> nn.Module:
        key = spec_hash(spec)
        if key not in self._encoders:
            from engine.encoders import build_encoder
            self._encoders[key] = build_encoder(spec).eval()
        return self._encoders[key]

    def dim(self, spec: dict[str, Any]) -> int:
        """Feature width of ``spec`` (from the injected/built module if there is one)."""
        module = self._encoders.get(spec_hash(spec))
        return int(module.dim) if module is not None else encoder_dim(spec)

    def path(self, spec: dict[str, Any], clip: Clip) -> Path:
        return self._dir(spec) / f"{clip.name}.safetensors"

    def ensure(self, clips: list[Clip]) -> None:
        """Compute and store the features of every clip that has none yet."""
        from safetensors.torch import save_file

        for spec in self.specs:
            todo = [c for c in clips if not self._fresh(spec, c)]
            if not todo:
                continue
            self._dir(spec).mkdir(parents=True, exist_ok=True)
            enc = self.encoder(spec)
            groups = self._pack(todo) if self.packs(spec) else [[c] for c in todo]
            try:
                from tqdm import tqdm
                it = tqdm(groups, desc=f"encoding {spec.get('kind')}", unit="window", file=sys.stderr,
                          mininterval=0.5 if sys.stderr.isatty() else 10.0)
            except ImportError:  # pragma: no cover
                it = groups
            for group in it:
                wavs = [c.load_wav() for c in group]
                feats = self._encode_group(enc, wavs)
                for c, f in zip(group, feats):
                    with atomic_path(self.path(spec, c)) as tmp:
                        save_file({"features": f.contiguous()}, str(tmp),
                                  metadata={"clip": c.name, "spec": json.dumps(spec), "source": c.source})

    def _fresh(self, spec: dict[str, Any], clip: Clip) -> bool:
        """A cached file exists and was computed from this version of the clip's audio."""
        p = self.path(spec, clip)
        if not p.is_file():
            return False
        from safetensors import safe_open
        try:
            with safe_open(str(p), "pt") as fh:
                return (fh.metadata() or {}).get("source", "") == clip.source
        except Exception:  # damaged file: recompute
            return False

    def _pack(self, clips: list[Clip]) -> list[list[Clip]]:
        groups: list[list[Clip]] = []
        cur: list[Clip] = []
        total = 0.0
        for c in clips:
            secs = c.num_frames / 30.0 + self.GAP_SECONDS  # frame rate only sizes the groups
            if cur and total + secs > self.pack_seconds:
                groups.append(cur)
                cur, total = [], 0.0
            cur.append(c)
            total += secs
        if cur:
            groups.append(cur)
        return groups

    def _encode_group(self, enc: nn.Module, wavs: list[np.ndarray]) -> list[Tensor]:
        if len(wavs) == 1:
            return [enc.encode(wavs[0]).float()]
        spf = 320
        gap = int(self.GAP_SECONDS * 16000) // spf * spf
        pieces, starts = [], []
        pos = 0
        for w in wavs:
            w = np.pad(w, (0, (-len(w)) % spf))        # keep every clip on the 20 ms grid
            starts.append(pos // spf)
            pieces += [w, np.zeros(gap, np.float32)]
            pos += len(w) + gap
        feats = enc.encode(np.concatenate(pieces)).float()
        return [feats[f0: f0 + len(w) // spf].clone() for w, f0 in zip(wavs, starts)]

    def load(self, clip: Clip, num_frames: int) -> Tensor:
        """All encoders' features for ``clip`` resampled to ``num_frames`` and concatenated: (T, C)."""
        from safetensors.torch import load_file
        from engine.encoders import interpolate_features

        parts = []
        for spec in self.specs:
            key = (spec_hash(spec), clip.name)
            f = self._mem.get(key)
            if f is None:
                f = load_file(str(self.path(spec, clip)))["features"]
                self._mem[key] = f
            parts.append(interpolate_features(f, num_frames))
        return torch.cat(parts, dim=1)


def live_features(encoders: Any, wav: Tensor, num_frames: int) -> Tensor:
    """Features of a batch of waveforms ``(B, S)`` through (trainable) encoders, at ``num_frames``."""
    from engine.encoders import interpolate_features
    parts = [interpolate_features(enc(wav), num_frames) for enc in encoders]
    return torch.cat(parts, dim=2)


def clip_features_live(encoders: Any, wav: np.ndarray, num_frames: int) -> Tensor:
    """Whole-clip features ``(T, C)`` through ``encoders`` (e.g. fine-tuned ones) -- no cache."""
    from engine.encoders import interpolate_features
    parts = [interpolate_features(enc.encode(wav).float(), num_frames) for enc in encoders]
    return torch.cat(parts, dim=1)

