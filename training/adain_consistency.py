"""Does the same speech animate the same whether it is alone or inside a long file?

    python -m training.adain_consistency --checkpoint default --checkpoint runs/X/model.safetensors \
        [--data data/synthtalk] [--long-seconds 600] [--short-seconds 30] [--out runs/adain_consistency.json]

Builds a ~10-minute file by concatenating held-out SynthTalk clips (test, then val), takes a
~30 s stretch of whole clips from its middle, and animates that stretch (a) alone and (b) as
part of the long file, with each checkpoint.  Reported on the lip vertices of the stretch's
frames: mean and max Euclidean distance between (a) and (b) (dataset units), over all frames and
over the interior (2 s in from each end), end to end and with the encoder taken out of the comparison (the stretch's features cut from the long file's, so only
the model's own dependence on context remains).  Every clip is padded to a multiple of 0.1 s so
the stretch starts exactly on a mesh frame and a 20 ms encoder frame.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from engine.fileio import atomic_write

STEP = 1600  # 0.1 s at 16 kHz: 3 frames at 30 fps, 5 encoder frames


def build_audio(root: Path, long_s: float, short_s: float) -> tuple[np.ndarray, int, int]:
    """(long waveform, start sample of the stretch, its length in samples)."""
    from engine.audio import load_audio
    splits = json.loads((root / "splits.json").read_text())
    names = list(splits["test"]["clips"]) + list(splits["val"]["clips"])
    pieces, total = [], 0
    for n in names:
        w = load_audio(root / "wav" / f"{n}.wav")
        w = np.pad(w, (0, (-len(w)) % STEP))
        pieces.append(w)
        total += len(w)
        if total >= long_s * 16000:
            break
    starts = np.cumsum([0] + [len(p) for p in pieces])
    mid = int(np.searchsorted(starts, total // 2 - short_s * 8000))
    end = int(np.searchsorted(starts, starts[mid] + short_s * 16000))
    return np.concatenate(pieces), int(starts[mid]), int(starts[end] - starts[mid])


EDGE = 60  # frames (2 s) at each end of the stretch whose context differs by construction


def lip_distances(a: np.ndarray, b: np.ndarray, lips: np.ndarray) -> dict[str, float]:
    """Mean/max lip-vertex distance over all frames, and over the interior (``EDGE`` frames in from
    each end, where no model with a receptive field under 2 s can see the different surroundings)."""
    d = np.linalg.norm(a[:, lips] - b[:, lips], axis=-1)
    inner = d[EDGE:-EDGE]
    return {"mean": float(d.mean()), "max": float(d.max()),
            "interior_mean": float(inner.mean()), "interior_max": float(inner.max())}


def measure(checkpoints: list[str], root: Path, long_s: float, short_s: float) -> dict:
    from engine.audio import num_frames
    from engine.inference import Animator
    from engine.models.windowing import predict_sequence

    wav, s0, n = build_audio(root, long_s, short_s)
    fps = 30.0
    f0, T_short, T_long = num_frames(s0, fps), num_frames(n, fps), num_frames(len(wav), fps)
    assert num_frames(s0 + n, fps) - f0 == T_short, "stretch not frame-aligned"
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rows = {}
    for ck in checkpoints:
        anim = Animator.from_checkpoint(ck, device="cpu")
        key = json.dumps(anim.checkpoint.config.get("encoders"), sort_keys=True)
        if key not in feats:   # the encoder is the expensive part: shared by checkpoints with the same one
            print(f"encoding {len(wav) / 16000:.0f} s + {n / 16000:.0f} s ...", file=sys.stderr)
            feats[key] = (anim.features(wav, T_long), anim.features(wav[s0:s0 + n], T_short))
        f_long, f_short = feats[key]
        style = anim.style_vector(None)
        tmpl = anim.model.template.detach().float()
        long_pred = predict_sequence(anim.model, f_long, tmpl, style)[f0:f0 + T_short]
        alone = predict_sequence(anim.model, f_short, tmpl, style)
        cut = predict_sequence(anim.model, f_long[f0:f0 + T_short].clone(), tmpl, style)
        lips = np.asarray(anim.topology.masks["lips"])
        cfg = anim.checkpoint.config
        rows[ck] = {"adain_stats": cfg.get("adain_stats", "clip"), "adain_window": cfg.get("adain_window"),
                    "end_to_end": lip_distances(alone, long_pred, lips),
                    "same_features": lip_distances(cut, long_pred, lips),
                    "lip_motion_range": float(np.linalg.norm(long_pred[:, lips] - tmpl.numpy()[lips], axis=-1).max())}
    return {"data": str(root), "long_seconds": len(wav) / 16000, "short_seconds": n / 16000,
            "short_start_seconds": s0 / 16000, "frames": T_short, "results": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.adain_consistency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="shipped name or .safetensors (repeatable)")
    ap.add_argument("--data", type=Path, default=Path("data/synthtalk"))
    ap.add_argument("--long-seconds", type=float, default=600.0)
    ap.add_argument("--short-seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    res = measure(args.checkpoint, args.data, args.long_seconds, args.short_seconds)
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with atomic_write(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
