"""Choose the ``lipclose`` post-processing parameters on SynthTalk *validation* clips.

    python -m training.tune_lipclose --data data/synthtalk --split val --max-clips 40

The benchmark sets (SynthTalk test, real speech, tongue-twisters) are never used here, so the
post-processed rows of the benchmark are not tuned on what they are scored on.  For every grid
point it reports closure (midpoint / anywhere), lve_l2 and the open-vowel gap ratio; the model's
predictions and hama's evidence are computed once per clip and reused.
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from engine import metrics as M
    from engine.audio import load_audio
    from engine.inference import Animator
    from engine.postprocess import LipCloseConfig, audio_bilabial_evidence, close_lips, closure_events, closure_weights
    from engine.topology import Topology
    from training.benchmark import load_set

    ap = argparse.ArgumentParser(prog="python -m training.tune_lipclose", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synthtalk"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-clips", type=int, default=40)
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--search-s", type=float, nargs="+", default=[0.05, 0.1, 0.15])
    ap.add_argument("--hold-frames", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--ramp-frames", type=int, nargs="+", default=[2])
    a = ap.parse_args(argv)
    clips = load_set(a.data, a.split, a.max_clips)
    masks = {k: np.asarray(v) for k, v in Topology.load(a.data / "topology.npz").masks.items()}
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    anim = Animator.from_checkpoint(a.checkpoint, device="cpu")
    fps = anim.fps
    cache = []
    for c in clips:
        wav = load_audio(c.wav)
        pred = anim.animate(c.wav, template=c.template)[: len(c.gt)]
        cache.append((c, pred, audio_bilabial_evidence(wav)))   # exactly as the stage computes it
    exclude = np.concatenate([masks["teeth"], masks["mouth_interior"]])
    grid = {"threshold": a.threshold, "search_s": a.search_s, "hold_frames": a.hold_frames, "ramp_frames": a.ramp_frames}
    rows = []
    for values in [None, *itertools.product(*grid.values())]:
        cfg = LipCloseConfig() if values is None else replace(LipCloseConfig(), **dict(zip(grid, values)))
        mid, anyw, thr, lve, opn, opn_gt = [], [], [], [], [], []
        for c, pred, ev in cache:
            if values is None:
                out = pred
            else:
                gap = M.inner_lip_gap(pred, up, lo)
                w = closure_weights(closure_events(ev, gap, fps, cfg), len(pred), cfg.hold_frames, cfg.ramp_frames)
                out = close_lips(pred, w, c.template, up, lo, cfg.radius, exclude=exclude)
            m, y = M.bilabial_gap_per_phone(out, c.phones, fps, up, lo)
            mid.append(m)
            anyw.append(y)
            thr.append(np.full(len(m), M.default_closure_threshold(c.template, masks["face"])))
            lve.append(M.lip_vertex_error_l2(out, c.gt, masks["lips"]))
            opn.append(M.open_vowel_gap_per_phone(out, c.phones, fps, up, lo))
            opn_gt.append(M.open_vowel_gap_per_phone(c.gt, c.phones, fps, up, lo))
        mid, anyw, thr = map(np.concatenate, (mid, anyw, thr))
        row = {"config": "model alone" if values is None else dict(zip(grid, values)),
               "closure_mid": float((mid < thr).mean()), "closure_any": float((anyw < thr).mean()),
               "lve_l2_mm": float(np.mean(lve)) * 1000,
               "open_gap_ratio": float(np.median(np.concatenate(opn)) / np.median(np.concatenate(opn_gt)))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        from engine.fileio import atomic_write

        with atomic_write(a.out, "w") as fh:
            json.dump({"data": str(a.data), "split": a.split, "clips": len(clips), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
