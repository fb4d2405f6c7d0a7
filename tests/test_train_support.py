"""Shared fixtures for the model/training/inference tests (no tests of its own).

* :func:`make_tiny_corpus` writes a procedural FaceFormer-format corpus whose motion is a known
  function of the audio: tone bursts of four pitch classes drive a jaw opening (loudness) and a lip
  rounding (pitch class 2) on a small grid "face", scaled by a per-subject style factor.  A model
  must hear *which* tone plays to beat the loudness-only baseline.
* :class:`ToneEncoder` is a tiny deterministic :class:`engine.encoders.AudioEncoder` (log band
  energies at 50 Hz) so tests never wait for whisper.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from engine.encoders import AudioEncoder, EncoderSpec, frames_at_50hz

FPS = 30.0
SR = 16000
PITCHES = (300.0, 700.0, 1500.0, 3000.0)


class ToneEncoder(AudioEncoder):
    """Log energy in 16 frequency bands per 20 ms frame (fixed, no parameters)."""

    window_seconds = 30.0
    overlap_seconds = 2.0

    def __init__(self, spec: EncoderSpec | None = None) -> None:
        super().__init__(spec or EncoderSpec("hama"), 16)
        edges = np.geomspace(150, 6000, 17)
        freqs = np.fft.rfftfreq(640, 1 / SR)
        bands = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(np.float32)
        self.register_buffer("bands", torch.from_numpy(bands))

    def forward(self, wav: Tensor) -> Tensor:
        n = frames_at_50hz(wav.shape[1])
        x = torch.nn.functional.pad(wav, (160, 160 + 640))
        frames = x.unfold(1, 640, 320)[:, :n]                     # (B, n, 640)
        spec = torch.fft.rfft(frames * torch.hann_window(640), dim=-1).abs() ** 2
        e = spec @ self.bands.t()
        return torch.log(e + 1e-4) / 5.0


def grid_face(nx: int = 12, ny: int = 14) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    xs, ys = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1.2, 1.2, ny))
    z = 0.3 * (1 - xs ** 2) + 0.1 * (1 - ys ** 2 / 1.44)
    verts = np.stack([xs, ys, z], -1).reshape(-1, 3).astype(np.float32)
    faces = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a = j * nx + i
            faces += [[a, a + 1, a + nx], [a + 1, a + nx + 1, a + nx]]
    faces = np.asarray(faces, dtype=np.int64)
    idx = np.arange(len(verts))
    x, y = verts[:, 0], verts[:, 1]
    lips = idx[(np.abs(x) < 0.5) & (y > -0.75) & (y < -0.25)]
    upper = idx[y > 0.2]
    row_up, row_lo = 4, 3                                       # y rows just above / below the mouth line
    cols = np.arange(3, nx - 3)
    masks = {"lips": lips, "upper_face": upper, "face": idx,
             "lip_upper_inner": row_up * nx + cols, "lip_lower_inner": row_lo * nx + cols}
    return verts, faces, masks


def _motion(verts: np.ndarray, jaw: np.ndarray, rnd: np.ndarray, blink: np.ndarray) -> np.ndarray:
    """Displacements (T, V, 3): jaw lowers the chin region, rounding pulls the mouth inwards."""
    x, y = verts[:, 0], verts[:, 1]
    chin = np.clip((-0.4 - y) / 0.8, 0, 1) * np.exp(-x ** 2)
    mouth = np.exp(-((y + 0.5) ** 2) / 0.05 - x ** 2 / 0.2)
    brow = np.clip((y - 0.6) / 0.6, 0, 1)
    d = np.zeros((len(jaw),) + verts.shape, np.float32)
    d[..., 1] -= 0.25 * jaw[:, None] * chin[None]
    d[..., 0] -= 0.3 * rnd[:, None] * (mouth * x)[None]
    d[..., 2] += 0.15 * rnd[:, None] * mouth[None]
    d[..., 1] += 0.05 * blink[:, None] * brow[None]
    return d


def _smooth(x: np.ndarray, k: int = 5) -> np.ndarray:
    w = np.hanning(k + 2)[1:-1]
    w /= w.sum()
    return np.convolve(np.pad(x, (k // 2, k // 2), mode="edge"), w, mode="valid")


def make_tiny_corpus(root: str | Path, n_subjects: int = 6, n_sentences: int = 6, seconds: float = 2.0,
                     seed: int = 0) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    base, faces, masks = grid_face()
    for d in ("wav", "vertices_npy", "phones"):
        (root / d).mkdir(parents=True, exist_ok=True)
    from engine.topology import Topology
    Topology(vertices=base, faces=faces, masks=masks, fps=FPS, name="tinygrid").save(root / "topology.npz")
    templates = {}
    subjects = [f"synth_{i:02d}" for i in range(n_subjects)]
    for si, subj in enumerate(subjects):
        tmpl = base * np.array([1 + 0.1 * rng.standard_normal(), 1 + 0.1 * rng.standard_normal(), 1.0], np.float32)
        tmpl = tmpl + 0.02 * rng.standard_normal(tmpl.shape).astype(np.float32)
        templates[subj] = tmpl.astype(np.float32)
        style = 0.7 + 0.6 * si / max(1, n_subjects - 1)
        for k in range(n_sentences):
            n = int(seconds * SR)
            wav = np.zeros(n, np.float32)
            T = int(round(n * FPS / SR))
            jaw = np.zeros(T)
            rnd = np.zeros(T)
            phones = []
            t = 0.1
            while t < seconds - 0.3:
                dur = float(rng.uniform(0.12, 0.3))
                cls = int(rng.integers(0, 5))                   # 4 = silence
                if cls < 4:
                    s0, s1 = int(t * SR), int((t + dur) * SR)
                    tt = np.arange(s1 - s0) / SR
                    env = np.sin(np.pi * tt / dur) ** 2
                    wav[s0:s1] += 0.3 * env * np.sin(2 * np.pi * PITCHES[cls] * tt)
                    f0, f1 = int(t * FPS), min(T, int((t + dur) * FPS) + 1)
                    jaw[f0:f1] = (0.4 + 0.2 * cls) if cls != 2 else 0.3
                    if cls == 2:
                        rnd[f0:f1] = 1.0
                    phones.append([["AA", "EH", "UW", "IY"][cls], t, t + dur])
                else:
                    phones.append(["sil", t, t + dur])
                t += dur
            wav += 0.002 * rng.standard_normal(n).astype(np.float32)
            blink = (rng.random(T) < 0.02).astype(np.float64)
            disp = _motion(tmpl, _smooth(jaw) * style, _smooth(rnd) * style, _smooth(blink))
            name = f"{subj}_s{k:04d}"
            sf.write(root / "wav" / f"{name}.wav", wav, SR, subtype="PCM_16")
            np.save(root / "vertices_npy" / f"{name}.npy", (tmpl[None] + disp).reshape(T, -1).astype(np.float32))
            (root / "phones" / f"{name}.json").write_text(json.dumps({"phones": phones, "words": [], "text": ""}))
    np.savez(root / "templates.npz", **templates)
    n_train = max(1, n_subjects - 2)
    splits = {"train": {"subjects": subjects[:n_train]}, "val": {"subjects": subjects[n_train:n_train + 1]},
              "test": {"subjects": subjects[n_train + 1:]}}
    (root / "splits.json").write_text(json.dumps(splits))
    return root
