"""FaceFormer-format datasets (VOCASET, BIWI, SynthTalk, or a user's own capture).

Layout (the de-facto standard of FaceFormer, CodeTalker, SelfTalk and follow-ups)::

    <root>/wav/<subject>_<sentence>.wav
    <root>/vertices_npy/<subject>_<sentence>.npy    (frames, V*3) at mesh_fps
    <root>/templates.npz  or  templates.pkl          {subject: (V,3) neutral}
    <root>/phones/<clip>.json                        optional phone timings
    <root>/splits.json                               optional split definition

The subject is the clip name up to its last ``_``; the sentence number is the trailing integer
of the last part (``FaceTalk_170728_03272_TA_sentence01`` -> subject ``FaceTalk_170728_03272_TA``,
sentence 1; ``F2_e01`` -> ``F2``, 1; ``synth_03_s0142`` -> ``synth_03``, 142).

Splits come from :class:`DatasetConfig.splits`, else ``<root>/splits.json``, else every clip is
in ``"train"`` (a user's own capture with no split file). ``splits.json`` maps split names to
``{"subjects": [...], "sentences": ...}`` or ``{"clips": [...]}`` or a bare list of clip names;
``sentences`` is a list of ids (ints or sentence tokens), ``{"from": a, "to": b}`` or ``"a-b"``
(inclusive), or absent/null for all.

Robustness: problems found while scanning (a vertices file without audio, a wrong width, an
unreadable file, a subject without template, ...) are collected in ``dataset.problems`` naming
the file, logged, and the clip is skipped. Only an empty result raises.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import SAMPLE_RATE, AudioError, load_audio, num_frames

__all__ = [
    "BIWI_SPLITS",
    "VOCASET_SPLITS",
    "DatasetConfig",
    "DatasetError",
    "FaceFormerDataset",
    "SplitSpec",
    "collate",
    "load_phones",
    "load_templates",
    "parse_clip_name",
    "resample_frames",
]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """No usable clip (or a broken configuration); the message lists what went wrong."""


@dataclass
class SplitSpec:
    """Which clips belong to a split: explicit ``clips``, or ``subjects`` x ``sentences``.

    ``sentences`` is None (all), a ``(first, last)`` tuple (inclusive range), or a list/set of ids
    (ints match the sentence number, strings match the sentence token, e.g. ``"s0142"``).
    """
    subjects: list[str] | None = None
    sentences: tuple[int, int] | list[int | str] | None = None
    clips: list[str] | None = None

    def contains(self, clip: str) -> bool:
        if self.clips is not None:
            return clip in set(self.clips)
        subject, token, number = parse_clip_name(clip)
        if self.subjects is not None and subject not in self.subjects:
            return False
        s = self.sentences
        if s is None:
            return True
        if isinstance(s, tuple):
            return number is not None and s[0] <= number <= s[1]
        return any((isinstance(x, (int, np.integer)) and number == int(x)) or str(x) == token for x in s)

    @classmethod
    def from_json(cls, obj: Any) -> SplitSpec:
        if isinstance(obj, list):
            return cls(clips=[str(c) for c in obj])
        if not isinstance(obj, dict):
            raise DatasetError(f"a split must be a list of clips or an object with subjects/sentences/clips, got {obj!r}")
        sentences = obj.get("sentences", obj.get("sentence_range"))
        if isinstance(sentences, dict):
            lo, hi = sentences.get("from"), sentences.get("to")
            if lo is None and "range" in sentences:
                lo, hi = sentences["range"]
            sentences = (int(lo), int(hi))
        elif isinstance(sentences, str) and re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", sentences):
            lo, hi = sentences.split("-")
            sentences = (int(lo), int(hi))
        elif "sentence_range" in obj and isinstance(sentences, list):
            sentences = (int(sentences[0]), int(sentences[1]))
        clips = obj.get("clips")
        subjects = obj.get("subjects")
        return cls(subjects=list(subjects) if subjects is not None else None, sentences=sentences,
                   clips=list(clips) if clips is not None else None)


_VOCA_TRAIN = ["FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
               "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
               "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA"]
VOCASET_SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(_VOCA_TRAIN, (1, 40)),
    "val": SplitSpec(["FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"], (21, 40)),
    "test": SplitSpec(["FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"], (21, 40)),
}
_BIWI_SEEN = ["F2", "F3", "F4", "M3", "M4", "M5"]
BIWI_SPLITS: dict[str, SplitSpec] = {
    "train": SplitSpec(_BIWI_SEEN, (1, 32)),
    "val": SplitSpec(_BIWI_SEEN, (33, 36)),
    "test_a": SplitSpec(_BIWI_SEEN, (37, 40)),
    "test_b": SplitSpec(["F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6"], (37, 40)),
}
BIWI_SPLITS["test"] = BIWI_SPLITS["test_a"]


@dataclass
class DatasetConfig:
    """Where the data is and how to read it.

    ``mesh_fps`` is the capture rate of ``vertices_npy`` (VOCASET 60, BIWI 25); ``fps`` the
    rate the model trains at (VOCASET loaders use 30: every 2nd frame).
    """
    root: str | os.PathLike
    mesh_fps: float = 30.0
    fps: float = 30.0
    splits: dict[str, SplitSpec] | None = None
    wav_dir: str = "wav"
    vertices_dir: str = "vertices_npy"
    phones_dir: str = "phones"
    num_vertices: int | None = None     # expected V; None = take it from the templates
    cache_audio: bool = True
    normalize_audio: bool = True
    max_clips: int | None = None        # for quick experiments

    def resolved_splits(self) -> dict[str, SplitSpec]:
        if self.splits is not None:
            return {k: (v if isinstance(v, SplitSpec) else SplitSpec.from_json(v)) for k, v in self.splits.items()}
        path = Path(self.root) / "splits.json"
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: invalid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise DatasetError(f"{path}: expected an object mapping split name -> definition")
            return {k: SplitSpec.from_json(v) for k, v in data.items()}
        return {"train": SplitSpec()}


def parse_clip_name(clip: str) -> tuple[str, str, int | None]:
    """``"F2_e01"`` -> (``"F2"``, ``"e01"``, 1). No underscore -> the whole name is the subject."""
    if "_" not in clip:
        return clip, "", None
    subject, token = clip.rsplit("_", 1)
    m = re.search(r"(\d+)$", token)
    return subject, token, int(m.group(1)) if m else None


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Change the frame rate of (T, ...) frames. An integer ratio keeps every k-th frame (what the
    published VOCASET loaders do for 60 -> 30); otherwise linear interpolation in time, sampling
    t = i / dst_fps for every i with t inside the source clip."""
    if src_fps <= 0 or dst_fps <= 0:
        raise ValueError(f"fps must be positive (got {src_fps} -> {dst_fps})")
    if math.isclose(src_fps, dst_fps):
        return frames
    ratio = src_fps / dst_fps
    if ratio > 1 and math.isclose(ratio, round(ratio), rel_tol=0, abs_tol=1e-6):
        return frames[:: int(round(ratio))]  # noqa: RUF046
    n = len(frames)
    n_out = int(math.floor((n - 1) * dst_fps / src_fps + 1e-9)) + 1  # noqa: RUF046
    pos = np.arange(n_out) * (src_fps / dst_fps)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (pos - i0).astype(np.float32).reshape((-1,) + (1,) * (frames.ndim - 1))
    return (frames[i0] * (1 - w) + frames[i1] * w).astype(frames.dtype, copy=False)


def load_templates(root: str | os.PathLike) -> tuple[dict[str, np.ndarray], Path]:
    """Subject -> (V,3) float32 from ``templates.npz`` (preferred: no pickle) or ``templates.pkl``
    (read with the restricted unpickler: arrays and dicts only)."""
    root = Path(root)
    npz, pkl = root / "templates.npz", root / "templates.pkl"
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
        source = npz
    elif pkl.exists():
        from engine.fileio import safe_load_pickle

        raw = safe_load_pickle(pkl)
        if not isinstance(raw, dict):
            raise DatasetError(f"{pkl}: expected a dict of subject -> (V,3) array, got {type(raw).__name__}")
        source = pkl
    else:
        raise DatasetError(f"no templates.npz or templates.pkl in {root}: every subject needs a neutral template")
    out = {}
    for k, v in raw.items():
        arr = np.asarray(v, dtype=np.float32)
        if arr.ndim == 1 and arr.size % 3 == 0:
            arr = arr.reshape(-1, 3)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise DatasetError(f"{source}: template for {k!r} has shape {arr.shape}, expected (V, 3)")
        out[str(k)] = arr
    return out, source


def load_phones(path: str | os.PathLike) -> list[tuple[str, float, float]]:
    data = json.loads(Path(path).read_text())
    phones = data.get("phones", []) if isinstance(data, dict) else data
    return [(str(p[0]), float(p[1]), float(p[2])) for p in phones]


@dataclass
class _Clip:
    name: str
    subject: str
    wav: Path
    vertices: Path
    phones: Path | None
    src_frames: int          # frames in the npy at mesh_fps
    frames: int              # aligned frame count at fps
    audio_samples: int       # aligned sample count at 16 kHz
    audio_rate: int


class FaceFormerDataset:
    """Clips of one split. ``ds[i]`` -> dict(name, subject, audio (float32 16 kHz), vertices
    (T,V,3) float32 at ``config.fps``, template (V,3), phones (list or None), num_frames)
    with ``num_frames(len(audio), fps) == T`` guaranteed."""

    def __init__(self, config: DatasetConfig, split: str | None = "train"):
        self.config = config
        self.root = Path(config.root)
        self.split = split
        self.problems: list[str] = []
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder not found: {self.root}")
        splits = config.resolved_splits()
        if split is not None and split not in splits:
            raise DatasetError(f"unknown split {split!r}; this dataset defines {sorted(splits)}")
        self.spec: SplitSpec = splits[split] if split is not None else SplitSpec()
        self.templates, self.templates_path = load_templates(self.root)
        self.clips: list[_Clip] = self._scan()
        self._audio_cache: dict[str, np.ndarray] = {}
        if not self.clips:
            shown = "; ".join(self.problems[:5]) or "no clip matched the split definition"
            raise DatasetError(f"no usable clip for split {split!r} in {self.root}: {shown}")
        self.subjects = sorted({c.subject for c in self.clips})

    # ------------------------------------------------------------------ scanning
    def _problem(self, msg: str) -> None:
        self.problems.append(msg)
        log.warning("dataset: %s", msg)

    def _scan(self) -> list[_Clip]:
        import soundfile as sf

        cfg = self.config
        wav_dir, vert_dir = self.root / cfg.wav_dir, self.root / cfg.vertices_dir
        if not vert_dir.is_dir():
            raise DatasetError(f"{vert_dir} not found: a FaceFormer-format dataset has {cfg.vertices_dir}/<clip>.npy")
        wavs = {p.stem: p for p in wav_dir.glob("*.wav")} if wav_dir.is_dir() else {}
        npys = {p.stem: p for p in vert_dir.glob("*.npy")}
        for name in sorted(set(wavs) - set(npys)):
            if self.spec.contains(name):
                self._problem(f"{wavs[name]}: audio without vertices ({cfg.vertices_dir}/{name}.npy missing); skipped")
        clips: list[_Clip] = []
        for name in sorted(npys):
            if not self.spec.contains(name):
                continue
            if cfg.max_clips is not None and len(clips) >= cfg.max_clips:
                break
            npy = npys[name]
            subject = parse_clip_name(name)[0]
            wav = wavs.get(name)
            if wav is None:
                self._problem(f"{npy}: no audio file {cfg.wav_dir}/{name}.wav; skipped")
                continue
            template = self.templates.get(subject)
            if template is None:
                self._problem(f"{npy}: subject {subject!r} has no template in {self.templates_path.name}; skipped")
                continue
            v = len(template)
            if cfg.num_vertices is not None and v != cfg.num_vertices:
                self._problem(f"{self.templates_path.name}: template of {subject!r} has {v} vertices, "
                              f"expected {cfg.num_vertices}; clip {name} skipped")
                continue
            try:
                arr = np.load(npy, mmap_mode="r", allow_pickle=False)
            except Exception as exc:  # noqa: BLE001 - reported by name, never crash the scan
                self._problem(f"{npy}: unreadable ({type(exc).__name__}: {exc}); skipped")
                continue
            if arr.ndim == 3 and arr.shape[1:] == (v, 3):
                pass
            elif arr.ndim != 2 or arr.shape[1] != v * 3:
                self._problem(f"{npy}: shape {arr.shape}, expected (frames, {v * 3}) for {subject}'s "
                              f"{v}-vertex template; skipped")
                continue
            if arr.shape[0] == 0:
                self._problem(f"{npy}: no frames; skipped")
                continue
            try:
                info = sf.info(str(wav))
            except Exception as exc:  # noqa: BLE001 - reported by name, never crash the scan
                self._problem(f"{wav}: unreadable audio ({exc}); skipped")
                continue
            if info.frames <= 0 or info.samplerate <= 0:
                self._problem(f"{wav}: empty audio; skipped")
                continue
            clip = self._align(name, subject, wav, npy, arr.shape[0], info.frames, int(info.samplerate))
            if clip is not None:
                phones = self.root / cfg.phones_dir / f"{name}.json"
                clip.phones = phones if phones.exists() else None
                clips.append(clip)
        return clips

    def _align(self, name, subject, wav, npy, src_frames, wav_frames, wav_rate) -> _Clip | None:
        """Trim audio and frames to their common duration (decided from headers, no decoding)."""
        cfg = self.config
        samples16 = int(round(wav_frames * SAMPLE_RATE / wav_rate))  # noqa: RUF046
        n_audio = num_frames(samples16, cfg.fps)
        n_mesh = len(resample_frames(np.empty((src_frames, 0), np.float32), cfg.mesh_fps, cfg.fps))
        frames = min(n_audio, n_mesh)
        if n_audio - n_mesh > 1:
            self._problem(f"{npy}: {n_mesh} frames at {cfg.fps:g} fps but the audio lasts {n_audio} frames; "
                          f"audio trimmed to {n_mesh / cfg.fps:.2f} s (check mesh_fps={cfg.mesh_fps:g})")
        samples = min(samples16, int(round(frames * SAMPLE_RATE / cfg.fps)))  # noqa: RUF046
        if samples <= 0:
            self._problem(f"{wav}: too short to align; skipped")
            return None
        return _Clip(name, subject, wav, npy, None, src_frames, frames, samples, wav_rate)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.clips)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.clips]

    def audio(self, i: int) -> np.ndarray:
        clip = self.clips[i]
        cached = self._audio_cache.get(clip.name)
        if cached is not None:
            return cached
        try:
            a = load_audio(clip.wav, normalize=self.config.normalize_audio, min_seconds=0.0)
        except AudioError as exc:
            raise DatasetError(f"clip {clip.name}: {exc}") from None
        a = a[: clip.audio_samples]
        if len(a) < clip.audio_samples:  # resampler rounding: pad the last few samples
            a = np.pad(a, (0, clip.audio_samples - len(a)))
        if self.config.cache_audio:
            self._audio_cache[clip.name] = a
        return a

    def vertices(self, i: int) -> np.ndarray:
        clip = self.clips[i]
        arr = np.load(clip.vertices, mmap_mode="r", allow_pickle=False)
        arr = resample_frames(np.asarray(arr, dtype=np.float32), self.config.mesh_fps, self.config.fps)
        # np.array copies: never hand out a read-only view of the memory-mapped file
        return np.array(arr[: clip.frames].reshape(clip.frames, -1, 3), dtype=np.float32, order="C")

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        clip = self.clips[i]
        return {
            "name": clip.name,
            "subject": clip.subject,
            "audio": self.audio(i),
            "vertices": self.vertices(i),
            "template": self.templates[clip.subject],
            "phones": load_phones(clip.phones) if clip.phones is not None else None,
            "num_frames": clip.frames,
        }

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pad a list of dataset items to the longest clip for batched training.

    Returns torch tensors: ``audio`` (B, S_max), ``audio_lengths`` (B,), ``vertices`` (B, T_max, V, 3),
    ``template`` (B, V, 3), ``mask`` (B, T_max) bool (True on real frames), ``num_frames`` (B,);
    plus lists ``name``, ``subject``, ``phones``. Padding is zeros (audio) / the last frame (vertices),
    so an unmasked loss on padding does not see a jump to the origin.
    """
    import torch

    if not items:
        raise ValueError("collate needs at least one item")
    b = len(items)
    lengths = [int(it["num_frames"]) for it in items]
    samples = [len(it["audio"]) for it in items]
    t_max, s_max = max(lengths), max(samples)
    v = np.asarray(items[0]["vertices"]).reshape(lengths[0], -1, 3).shape[1]
    audio = torch.zeros(b, s_max)
    verts = torch.zeros(b, t_max, v, 3)
    mask = torch.zeros(b, t_max, dtype=torch.bool)
    for k, it in enumerate(items):
        audio[k, : samples[k]] = torch.as_tensor(np.asarray(it["audio"], dtype=np.float32))
        x = torch.as_tensor(np.asarray(it["vertices"], dtype=np.float32)).reshape(lengths[k], -1, 3)
        if x.shape[1] != v:
            raise ValueError(f"cannot batch clips with different vertex counts ({v} vs {x.shape[1]} in {it['name']})")
        verts[k, : lengths[k]] = x
        verts[k, lengths[k]:] = x[-1]
        mask[k, : lengths[k]] = True
    return {
        "audio": audio,
        "audio_lengths": torch.tensor(samples),
        "vertices": verts,
        "template": torch.stack([torch.as_tensor(np.asarray(it["template"], dtype=np.float32)) for it in items]),
        "mask": mask,
        "num_frames": torch.tensor(lengths),
        "name": [it["name"] for it in items],
        "subject": [it["subject"] for it in items],
        "phones": [it.get("phones") for it in items],
    }
