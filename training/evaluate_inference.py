"""Evaluate a checkpoint the way a user runs it: ``Animator.animate(wav_file)`` per clip.

    python -m training.evaluate_inference --checkpoint engine/assets/default.safetensors \
        --data data/synthtalk --split test --max-clips 40 --out runs/default_eval/synthtalk_test.json
    python -m training.evaluate_inference --data data/realspeech --split test ...

``training.evaluate`` (run at the end of training) scores cached, window-packed encoder features,
which is cheap but is not exactly the inference path: at inference each clip sits alone at the
start of Whisper's 30 s window, and Whisper's features depend on that position. This script
runs the real path end to end (audio file -> loader -> encoder -> model -> frames) and scores it
with :func:`engine.metrics.evaluate_all`, next to the mean-face and jaw-from-loudness baselines
(the latter fitted on SynthTalk training clips, never on the evaluated set). On the real-speech
set the ground truth *is* the rig driven by forced-aligned phones, so that upper bound is 0 there
by construction and is not listed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engine.fileio import atomic_write

METRICS = ["lve_l2", "lve_l2_mean", "lve_sq", "mve", "upper_face_error", "f_dtw", "f_dtw_lips", "aperture_corr",
           "bilabial_closure_rate", "bilabial_closure_rate_gt"]


def _clips(root: Path, split: str, max_clips: int) -> list[str]:
    splits = json.loads((root / "splits.json").read_text())
    names = list(splits[split]["clips"])
    if max_clips and len(names) > max_clips:  # evenly spaced, deterministic
        names = [names[i] for i in np.linspace(0, len(names) - 1, max_clips).round().astype(int)]
    return names


def _jaw_baseline(train_root: Path, fps: float, n: int = 200):
    from engine.audio import load_audio
    from engine.dataset import load_templates, parse_clip_name
    from training.baselines import JawFromLoudness

    templates, _ = load_templates(train_root)
    names = _clips(train_root, "train", n)

    def gen():
        for name in names:
            subject = parse_clip_name(name)[0]
            v = np.load(train_root / "vertices_npy" / f"{name}.npy").reshape(-1, templates[subject].shape[0], 3)
            yield load_audio(train_root / "wav" / f"{name}.wav"), v, templates[subject]
    return JawFromLoudness(fps=fps).fit(gen())


def evaluate(checkpoint: str, root: Path, split: str, max_clips: int, train_root: Path | None) -> dict:
    from tqdm import tqdm

    from engine.audio import load_audio
    from engine.dataset import load_phones, load_templates, parse_clip_name
    from engine.inference import Animator
    from engine.metrics import evaluate_all
    from training.baselines import mean_face
    from training.evaluate import aggregate

    anim = Animator.from_checkpoint(checkpoint, device="cpu")
    masks, fps = anim.topology.masks, anim.fps
    templates, _ = load_templates(root)
    jaw = _jaw_baseline(train_root, fps) if train_root is not None else None
    rows: dict[str, list[dict[str, float]]] = {"model": [], "mean_face": []}
    if jaw is not None:
        rows["jaw_from_loudness"] = []
    for name in tqdm(_clips(root, split, max_clips), desc=f"{root.name}/{split}", file=sys.stderr):
        subject = parse_clip_name(name)[0]
        template = templates[subject]
        gt = np.load(root / "vertices_npy" / f"{name}.npy").reshape(-1, template.shape[0], 3)
        phones_path = root / "phones" / f"{name}.json"
        phones = load_phones(phones_path) if phones_path.is_file() else None
        wav_path = root / "wav" / f"{name}.wav"
        pred = anim.animate(wav_path, template=template)
        rows["model"].append(evaluate_all(pred, gt, template, masks, phones=phones, fps=fps))
        rows["mean_face"].append(evaluate_all(mean_face(template, len(gt)), gt, template, masks, phones=phones, fps=fps))
        if jaw is not None:
            wav = load_audio(wav_path)
            rows["jaw_from_loudness"].append(evaluate_all(jaw.predict(wav, len(gt), template), gt, template, masks,
                                                          phones=phones, fps=fps))
    out = {}
    for method, rs in rows.items():
        agg = aggregate(rs)      # means over clips; lve_sq pooled over the frames of all clips
        out[method] = {k: agg[k] for k in METRICS if k in agg} | {"clips": len(rs)}
    return {"checkpoint": checkpoint, "data": str(root), "split": split, "results": out}


def markdown(res: dict) -> str:
    cols = [c for c in METRICS if any(c in r for r in res["results"].values())]
    lines = [f"`{res['data']}` split `{res['split']}` (Animator end to end, neutral style)", "",
             "| method | " + " | ".join(cols) + " | clips |", "|---" * (len(cols) + 2) + "|"]
    for m, r in res["results"].items():
        lines.append(f"| {m} | " + " | ".join(f"{r[c]:.4g}" if c in r else "–" for c in cols) + f" | {r['clips']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate_inference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-clips", type=int, default=40)
    ap.add_argument("--train-data", type=Path, default=Path("data/synthtalk"),
                    help="corpus whose train split fits the jaw-from-loudness baseline ('' to skip)")
    ap.add_argument("--out", type=Path, help="write the results as JSON (and a .md table beside it)")
    args = ap.parse_args(argv)
    train_root = args.train_data if str(args.train_data) and (args.train_data / "splits.json").is_file() else None
    res = evaluate(args.checkpoint, args.data, args.split, args.max_clips, train_root)
    table = markdown(res)
    print(table)
    if args.out:
        with atomic_write(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
        with atomic_write(args.out.with_suffix(".md"), "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
