"""Evaluate a trained model (and the baselines) on held-out splits; write metrics.json + report.md.

Used at the end of every training run (:meth:`training.trainer.Trainer.finish`) and standalone::

    python -m training.evaluate --checkpoint runs/X/model.safetensors --config training/configs/X.toml [--out DIR]

Protocol: each clip is animated from its audio alone with the **neutral style** (what a user
gets without a reference) -- the headline numbers.  The paper's protocol (MeshTalk's: the test
sequence itself is the style reference; only its temporal mean/std statistics reach the model)
is reported as ``<split>/gt_style`` for models that take a reference.  Predictions go through
the same windowed path as inference (:func:`engine.models.windowing.predict_sequence`) and the
model interface only, so any method evaluates unchanged.  All metrics come from
:func:`engine.metrics.evaluate_all`, averaged over clips, except ``lve_sq``, which pools the
frames of all clips as CodeTalker reports it; the mean-face and jaw-from-loudness
baselines run on the same clips.  The per-vertex mean Euclidean error is rendered on the
template as a heatmap PNG.

Features: a model whose encoder was fine-tuned carries it (``model.encoders``) and is scored on
that encoder's features; otherwise on the frozen encoder's cached features.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.fileio import atomic_path, atomic_write

__all__ = ["evaluate_model", "evaluate_trainer", "evaluate_checkpoint", "predict_clip", "aggregate",
           "write_report", "error_heatmap", "main"]

HEADLINE = ["lve_l2", "lve_l2_mean", "lve_sq", "mve", "upper_face_error", "fdd", "f_dtw", "f_dtw_lips",
            "bilabial_closure_rate"]


@torch.no_grad()
def predict_clip(model: Any, features: torch.Tensor, template: np.ndarray, style: torch.Tensor | None = None
                 ) -> np.ndarray:
    """Whole-clip prediction ``(T, V, 3)`` from features ``(T, F)`` through the inference windowing."""
    from engine.models.windowing import predict_sequence
    style = style if style is not None else model.neutral_style().detach()
    return predict_sequence(model, features, torch.as_tensor(template, dtype=torch.float32), style)


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the clips that report it -- except ``lve_sq``, which pools the
    frames of all clips as CodeTalker reports it (:func:`engine.metrics.pool_by_frames`); its
    per-clip mean is kept as ``lve_sq_clip_mean``."""
    from engine.metrics import pool_by_frames

    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r and not (isinstance(r[k], float) and math.isnan(r[k]))]
        if vals:
            out[k] = float(np.mean(vals))
    pooled = [(r["lve_sq"], r["frames"]) for r in rows if "lve_sq" in r and "frames" in r]
    if pooled:
        out["lve_sq_clip_mean"] = out["lve_sq"]
        out["lve_sq"] = pool_by_frames([v for v, _ in pooled], [n for _, n in pooled])
    out["clips"] = float(len(rows))
    return out


def _style_of(model: Any, gt: np.ndarray) -> torch.Tensor | None:
    from engine.models.base import StyleNotSupported
    try:
        return model.style_from_reference(torch.from_numpy(gt)).detach()
    except StyleNotSupported:
        return None


def evaluate_model(model: Any, corpus: Any, cfg: Any, out: Path, features: Callable[[Any], torch.Tensor],
                   train_clips: list, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``cfg.eval.splits`` of ``corpus``; writes metrics.json, report.md, heatmap."""
    from engine.metrics import evaluate_all
    from training.baselines import JawFromLoudness, mean_face

    model.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fps = corpus.fps
    masks = corpus.topology.masks
    results: dict[str, Any] = {"splits": {}}
    jaw = None
    if cfg.eval.baselines:
        jaw = JawFromLoudness(fps=fps).fit((c.load_wav(), c.vertices, c.template) for c in train_clips[:200])
    err_sum = None
    n_frames = 0
    for split in cfg.eval.splits:
        clips = corpus.splits.get(split, [])
        clips = clips[: cfg.eval.max_clips] if cfg.eval.max_clips else clips
        if not clips:
            continue
        rows: dict[str, list[dict[str, float]]] = {"model": [], "model_gt_style": [], "mean_face": [],
                                                   "jaw_from_loudness": []}
        notes: list[str] = []
        for c in clips:
            gt = np.array(c.vertices, dtype=np.float32)
            feats = features(c)
            pred = predict_clip(model, feats, c.template)
            rows["model"].append(evaluate_all(pred, gt, c.template, masks, phones=c.phones, fps=fps))
            style = _style_of(model, gt)
            if style is not None:
                pred_gt = predict_clip(model, feats, c.template, style)
                rows["model_gt_style"].append(evaluate_all(pred_gt, gt, c.template, masks, phones=c.phones, fps=fps))
            e = np.linalg.norm(pred - gt, axis=-1).sum(0)
            err_sum = e if err_sum is None else err_sum + e
            n_frames += len(gt)
            if cfg.eval.baselines:
                rows["mean_face"].append(evaluate_all(mean_face(c.template, len(gt)), gt, c.template, masks,
                                                      phones=c.phones, fps=fps))
                wav = c.load_wav()
                rows["jaw_from_loudness"].append(evaluate_all(jaw.predict(wav, len(gt), c.template), gt, c.template,
                                                              masks, phones=c.phones, fps=fps))
                rig = _rig_upper_bound(cfg, c, wav, fps, notes)
                if rig is not None:
                    rows.setdefault("rig_aligned_phones", []).append(
                        evaluate_all(rig, gt, c.template, masks, phones=c.phones, fps=fps))
        results["splits"][split] = {k: aggregate(v) for k, v in rows.items() if v}
        if notes:
            results.setdefault("notes", []).extend(sorted(set(notes)))
    summary = {}
    for split, by in results["splits"].items():
        for k, v in by.get("model", {}).items():
            summary[f"{split}/{k}"] = v
    results["summary"] = summary
    with atomic_write(out / "metrics.json", "w") as fh:
        json.dump(results, fh, indent=1)
    heat = None
    if cfg.eval.heatmap and err_sum is not None:
        heat = error_heatmap(err_sum / max(1, n_frames), corpus.topology, out / "error_heatmap.png")
    write_report(results, out / "report.md", title=cfg.name, heatmap=heat, extra=facts)
    return results


def evaluate_trainer(trainer: Any) -> dict[str, Any]:
    """End-of-training evaluation of ``trainer.model`` into ``trainer.out``."""
    facts = {"dataset": f"{trainer.cfg.data.kind} ({trainer.cfg.data.root})", "train clips": len(trainer.train_clips),
             "steps": trainer.step, "epochs completed": trainer.epoch, "fps": trainer.corpus.fps,
             "vertices": trainer.corpus.topology.num_vertices}
    return evaluate_model(trainer.model, trainer.corpus, trainer.cfg, trainer.out, trainer.clip_features,
                          trainer.train_clips, facts)


def evaluate_checkpoint(checkpoint: str, cfg: Any, out: Path) -> dict[str, Any]:
    """Evaluate a checkpoint file on the corpus and splits of ``cfg`` (no trainer involved).

    The model is rebuilt exactly as stored (strict load, fine-tuned encoder included); its
    features come from its own encoder when it carries one, else from the frozen-feature cache.
    """
    from engine.checkpoint import build_model, load_checkpoint
    from training.corpus import load_corpus
    from training.features import FeatureCache, clip_features_live, encoder_specs

    ckpt = load_checkpoint(checkpoint)
    model = build_model(ckpt).float()
    corpus = load_corpus(cfg.data)
    train_clips = corpus.splits.get(cfg.data.train_split, [])
    eval_clips = [c for s in cfg.eval.splits
                  for c in (corpus.splits.get(s, [])[: cfg.eval.max_clips or None])]
    encs = getattr(model, "encoders", None)
    if encs is not None:
        def features(clip: Any) -> torch.Tensor:
            return clip_features_live(encs, clip.load_wav(), clip.num_frames)
    else:
        specs = encoder_specs({"encoders": ckpt.config.get("encoders") or [ckpt.encoder]})
        root = Path(cfg.train.feature_cache) if cfg.train.feature_cache else Path(out) / "features"
        cache = FeatureCache(root, specs, cfg.train.pack_seconds)
        cache.ensure(eval_clips)

        def features(clip: Any) -> torch.Tensor:
            return cache.load(clip, clip.num_frames)
    facts = {"checkpoint": str(checkpoint), "kind": ckpt.kind, "dataset": f"{cfg.data.kind} ({cfg.data.root})",
             "fps": corpus.fps, "vertices": corpus.topology.num_vertices,
             "features": "fine-tuned encoder (live)" if encs is not None else "frozen encoder (cached)"}
    return evaluate_model(model, corpus, cfg, out, features, train_clips, facts)


def _rig_upper_bound(cfg: Any, clip: Any, wav: np.ndarray, fps: float, notes: list[str]) -> np.ndarray | None:
    """SynthTalk only: the generator driven by forced-aligned phones (None when not applicable)."""
    from training.baselines import BaselineUnavailable, rig_from_aligned_phones
    if cfg.data.kind != "synthtalk":
        return None
    meta_path = Path(cfg.data.root) / "meta" / f"{clip.name}.json"
    if not meta_path.is_file():
        notes.append("rig_aligned_phones: no meta/<clip>.json (not a SynthTalk corpus)")
        return None
    meta = json.loads(meta_path.read_text())
    try:
        num = int(str(meta["sentence_id"]).lstrip("s"))
        pred = rig_from_aligned_phones(wav, meta["text"], int(meta["identity"]), num, clip.num_frames, fps)
    except BaselineUnavailable as exc:
        notes.append(f"rig_aligned_phones unavailable: {exc}")
        return None
    except Exception as exc:  # alignment failures are reported, not fatal
        notes.append(f"rig_aligned_phones failed on some clips ({type(exc).__name__}: {exc})")
        return None
    if pred.shape[1] != clip.template.shape[0]:
        notes.append("rig_aligned_phones: rig head does not match the corpus topology")
        return None
    return pred


def write_report(results: dict[str, Any], path: Path, title: str, heatmap: Path | None = None,
                 extra: dict[str, Any] | None = None) -> None:
    lines = [f"# Evaluation: {title}", ""]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "Units are the dataset's vertex units (lower is better; `bilabial_closure_rate` higher is better, "
              "compare with `bilabial_closure_rate_gt`). `model` uses the neutral style; `model_gt_style` takes the "
              "style statistics from the ground-truth clip (the paper's protocol).", ""]
    for split, by in results["splits"].items():
        lines.append(f"## {split}")
        lines.append("")
        keys = [k for k in HEADLINE + ["bilabial_closure_rate_gt"] if any(k in m for m in by.values())]
        lines.append("| method | " + " | ".join(keys) + " | clips |")
        lines.append("|---|" + "---|" * (len(keys) + 1))
        for name, m in by.items():
            cells = [f"{m[k]:.4g}" if k in m else "-" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(m.get('clips', 0))} |")
        lines.append("")
    for note in results.get("notes", []):
        lines.append(f"Note: {note}")
    if heatmap is not None:
        lines += ["", "## Per-vertex mean error", "", f"![error heatmap]({heatmap.name})", ""]
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines))


def error_heatmap(per_vertex: np.ndarray, topology: Any, path: Path) -> Path:
    """Per-vertex mean error on the template, front and side views, with a colour bar."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm

    err = np.asarray(per_vertex, dtype=np.float64)
    vmax = float(np.percentile(err, 99)) or 1.0
    colors = cm.inferno(np.clip(err / vmax, 0, 1))[:, :3]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4), dpi=100)
    verts = np.asarray(topology.vertices, dtype=np.float64)
    try:
        from engine.render import render_frames
        imgs = [render_frames(verts[None], topology.faces, size=320, view=v, vertex_colors=colors)[0]
                for v in ("front", "three_quarter")]
        for ax, img in zip(axes, imgs):
            ax.imshow(img)
    except Exception:  # renderer missing or failed: painter's-order scatter
        for ax, (i, j, k) in zip(axes, ((0, 1, 2), (2, 1, 0))):
            order = np.argsort(verts[:, k] * (1 if k == 2 else -1))
            ax.scatter(verts[order, i], verts[order, j], c=colors[order], s=4)
            ax.set_aspect("equal")
    for ax in axes:
        ax.axis("off")
    sm = cm.ScalarMappable(cmap="inferno", norm=matplotlib.colors.Normalize(0, vmax))
    fig.colorbar(sm, ax=axes, fraction=0.04, label="mean Euclidean error (dataset units)")
    fig.suptitle("per-vertex mean error (test + val clips)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from training.config import ConfigError, load_config

    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", required=True, help="the run's config (for the dataset and splits)")
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.checkpoint).with_suffix("").as_posix() + "_eval")
    res = evaluate_checkpoint(args.checkpoint, cfg, out)
    print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
