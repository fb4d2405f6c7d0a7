"""Which clips and crops make up each training batch, and the batch tensors themselves.

Everything random is derived from ``train.seed``: the data order of epoch ``e`` is a permutation
drawn from ``seed + e``; the crop of clip ``i`` in epoch ``e`` from ``(seed, e, i)``; a subject
reference from ``(seed, e, i, 7|8)``.  Nothing depends on how far a previous process got, which
is what makes ``--resume`` exact.

Batch keys (see :mod:`training.recipes.base`): ``vertices (B, T, V, 3)``, ``template (B, V, 3)``,
``subject (B,)`` (index into the sorted training subjects), ``features (B, T, F)`` while the
encoder is frozen -- otherwise ``wav (B, S)`` + ``crop`` (the trainer runs the live encoder) --,
``reference (B, T', V, 3)`` when the recipe asks for it, and ``phones (B, L)`` +
``phone_lengths (B,)`` when every clip of the batch has phone timings.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from training.config import TrainConfig
from training.corpus import Clip, phone_ids

__all__ = ["Batcher"]


class Batcher:
    """Epoch plans and batches for one rank."""

    def __init__(self, clips: list[Clip], train: TrainConfig, fps: float, rank: int = 0, world: int = 1,
                 needs: set[str] | None = None) -> None:
        self.clips = clips
        self.t = train
        self.fps = float(fps)
        self.rank, self.world = rank, world
        self.needs = set(needs or ())
        self.subjects = sorted({c.subject for c in clips})
        self._subject_index = {s: i for i, s in enumerate(self.subjects)}
        self._by_subject: dict[str, list[int]] = {}
        for j, c in enumerate(clips):
            self._by_subject.setdefault(c.subject, []).append(j)

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's clip indices for ``epoch`` (DistributedSampler semantics, seeded by epoch)."""
        n = len(self.clips)
        g = torch.Generator().manual_seed(self.t.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        total = math.ceil(n / self.world) * self.world
        perm = perm + perm[: total - n]
        return perm[self.rank: total: self.world]

    def plan(self, epoch: int) -> list[list[int]]:
        order = self.epoch_order(epoch)
        bs = self.t.batch_size
        nb = len(order) // bs if len(order) >= bs else 1
        return [order[i * bs:(i + 1) * bs] for i in range(nb)]

    def make(self, epoch: int, idx: list[int], features: Callable[[Clip], Tensor] | None) -> dict[str, Tensor]:
        """The batch of clips ``idx``; ``features(clip) -> (T_clip, F)`` or None for raw audio."""
        clips = [self.clips[i] for i in idx]
        crop = max(1, min([self.t.crop_frames] + [c.num_frames for c in clips]))
        feats, verts, temps, wavs, phones = [], [], [], [], []
        for i, c in zip(idx, clips):
            rng = np.random.default_rng([self.t.seed, epoch, i])
            start = int(rng.integers(0, c.num_frames - crop + 1))
            verts.append(torch.from_numpy(np.array(c.vertices[start:start + crop], dtype=np.float32)))
            temps.append(torch.from_numpy(np.asarray(c.template, dtype=np.float32)))
            if c.phones is not None:
                phones.append(phone_ids(c.phones, start / self.fps, (start + crop) / self.fps))
            if features is not None:
                feats.append(features(c)[start:start + crop])
            else:
                wav = c.load_wav()
                s0 = int(round(start / self.fps * 16000)) // 320 * 320
                s1 = s0 + max(320, int(round(crop / self.fps * 16000)))
                wavs.append(torch.from_numpy(np.pad(wav[s0:s1], (0, max(0, s1 - len(wav))))))
        batch = {"vertices": torch.stack(verts), "template": torch.stack(temps),
                 "subject": torch.tensor([self._subject_index[c.subject] for c in clips], dtype=torch.long)}
        if len(phones) == len(clips):
            longest = max(1, max(len(p) for p in phones))
            ids = torch.zeros(len(clips), longest, dtype=torch.long)        # 0 = CTC blank = padding
            for b, p in enumerate(phones):
                ids[b, :len(p)] = torch.tensor(p, dtype=torch.long)
            batch["phones"] = ids
            batch["phone_lengths"] = torch.tensor([len(p) for p in phones], dtype=torch.long)
        if "reference" in self.needs:
            batch["reference"] = self.subject_references(epoch, idx)
        if feats:
            batch["features"] = torch.stack(feats)
        else:
            batch["wav"] = torch.stack(wavs)
            batch["crop"] = torch.tensor(crop)
        return batch

    def subject_references(self, epoch: int, idx: list[int]) -> Tensor:
        """Per batch item, a crop of *another* clip of the same subject (seeded): the style then has to
        describe the speaker, not leak the target clip's own motion statistics."""
        picks = []
        for i in idx:
            rng = np.random.default_rng([self.t.seed, epoch, i, 7])
            pool = [j for j in self._by_subject[self.clips[i].subject] if j != i] or [i]
            picks.append(self.clips[int(pool[rng.integers(len(pool))])])
        n = max(1, min([self.t.crop_frames] + [c.num_frames for c in picks]))
        refs = []
        for i, c in zip(idx, picks):
            rng = np.random.default_rng([self.t.seed, epoch, i, 8])
            s = int(rng.integers(0, c.num_frames - n + 1))
            refs.append(torch.from_numpy(np.array(c.vertices[s:s + n], dtype=np.float32)))
        return torch.stack(refs)
