"""Side-by-side pictures of the shipped methods (README "SelfTalk and FaceFormer").

    python -m training.plot_methods --out training/figures/methods_aperture.png \
        --clip data/synthtalk/wav/<clip>.wav --runs runs/selftalk runs/selftalk_no_vel ...

Top: the inner-lip gap over time of one clip, ground truth against each shipped checkpoint run
through :class:`engine.inference.Animator` (the user path), with the /p b m/ midpoints marked.
Bottom: the training curves (``log.csv``) of the given runs.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.plot_methods")
    ap.add_argument("--clip", type=Path, required=True, help="a wav inside <corpus>/wav/")
    ap.add_argument("--checkpoints", nargs="+", default=["default", "selftalk", "faceformer"])
    ap.add_argument("--runs", nargs="*", type=Path, default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.dataset import load_phones, load_templates, parse_clip_name
    from engine.fileio import atomic_path
    from engine.inference import Animator
    from engine.metrics import bilabial_frames, inner_lip_gap

    root = args.clip.parent.parent
    name = args.clip.stem
    templates, _ = load_templates(root)
    template = templates[parse_clip_name(name)[0]]
    gt = np.load(root / "vertices_npy" / f"{name}.npy").reshape(-1, template.shape[0], 3)
    phones = load_phones(root / "phones" / f"{name}.json")
    fig, axes = plt.subplots(2 if args.runs else 1, 1, figsize=(10, 6.5 if args.runs else 3.5), squeeze=False)
    ax = axes[0, 0]
    masks = None
    for ck in args.checkpoints:
        anim = Animator.from_checkpoint(ck, device="cpu")
        masks = anim.topology.masks
        pred = anim.animate(args.clip, template=template)
        gap = inner_lip_gap(pred, masks["lip_upper_inner"], masks["lip_lower_inner"]) * 1000
        ax.plot(np.arange(len(gap)) / anim.fps, gap, label=ck, lw=1.2)
    g = inner_lip_gap(gt, masks["lip_upper_inner"], masks["lip_lower_inner"]) * 1000
    ax.plot(np.arange(len(g)) / 30.0, g, "k", lw=2, alpha=0.6, label="ground truth")
    for f in bilabial_frames(phones, 30.0, len(g)):
        ax.axvline(f / 30.0, color="r", lw=0.6, alpha=0.5)
    ax.set_xlabel("s")
    ax.set_ylabel("inner-lip gap (mm)")
    ax.set_title(f"{name}: mouth opening (red: /p b m/ midpoints, where the lips should touch)")
    ax.legend(fontsize=8, ncol=4)
    if args.runs:
        ax = axes[1, 0]
        for run in args.runs:
            rows = list(csv.DictReader(open(run / "log.csv")))
            key = "rec" if "rec" in rows[0] else "loss"
            ax.semilogy([int(r["step"]) for r in rows], [float(r[key]) for r in rows], label=f"{run.name} ({key})")
        ax.set_xlabel("step")
        ax.set_ylabel("training reconstruction loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
