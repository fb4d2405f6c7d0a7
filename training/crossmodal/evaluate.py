"""Evaluation of paper 001's pipeline on held-out R clips (Sec. 4.3) plus the pictures.

For each R test clip (a speaker and sentences never seen in training):

* **lip vertex error (mm)** -- the paper's "maximal l2 error of vertices in the lip region"
  (:func:`engine.metrics.lip_vertex_error_l2`: max over lip vertices, mean over frames) against the
  ground truth the rig gives: the clip's own rig controls posed on the S character;
* **lip landmark error (px)** -- the predicted lip vertices projected with the S camera, aligned to
  the R face's 2-D lip landmarks (its lip vertices projected with the R camera: exact landmarks
  instead of a detector) by one least-squares similarity per clip, RMSE in pixels of the 64-px
  crop.

Rows: each crossmodal checkpoint given, the rest pose (no motion: the floor any method must beat)
and the supervised composite & regional model (``default``: trained on paired SynthTalk
speech-mesh data of 8 other speakers -- the upper bound) on the same features.

``python -m training.crossmodal evaluate name=path ... [clips=20] [out=runs/crossmodal/eval]``
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.fileio import atomic_write

__all__ = ["evaluate_models", "main", "project", "similarity_rmse"]


def similarity_rmse(src: np.ndarray, dst: np.ndarray) -> float:
    """RMSE after the least-squares 2-D similarity (Umeyama) taking ``src (N, 2)`` onto ``dst (N, 2)``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.eye(2)
    if np.linalg.det(u @ vt) < 0:
        d[1, 1] = -1
    r = u @ d @ vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(sig) @ d) / var) if var > 0 else 1.0
    res = b - s * a @ r.T
    return float(np.sqrt((res ** 2).sum(1).mean()))


def project(frames: np.ndarray, camera, look) -> np.ndarray:
    """Pixel coordinates ``(T, N, 2)`` of vertices under a domain camera (as :func:`render_look` draws them)."""
    from training.crossmodal.domains import camera_rotation
    rot = (np.asarray(frames, np.float64) - camera.pivot) @ camera_rotation(look.yaw_deg, look.pitch_deg).T
    size = camera.scale * look.crop_m
    x = (rot[..., 0] - camera.centre[0]) * camera.scale + size / 2
    y = size / 2 - (rot[..., 2] - camera.centre[1]) * camera.scale
    return np.stack([x, y], axis=-1)


def _features(renders: dict, data_root: str, feature_cache: str, pack_seconds: float) -> tuple[list, dict]:
    from training.crossmodal.config import TranscoderConfig
    from training.crossmodal.renders import r_clips
    from training.crossmodal.train_transcoder import clip_features
    names = [str(n) for n in renders["names"]]
    subject = int(str(renders["subjects"][0]).split("_")[-1])
    clips = [c for c in r_clips(data_root, "test", subject, 10 ** 6) if c.name in set(names)]
    cfg = TranscoderConfig(data_root=data_root, feature_cache=feature_cache, pack_seconds=pack_seconds)
    return clips, clip_features(cfg, clips)


@torch.no_grad()
def evaluate_models(models: dict[str, str], renders_dir: str = "runs/crossmodal/renders",
                    data_root: str = "data/synthtalk", feature_cache: str = "runs/feature_cache",
                    pack_seconds: float = 28.0, max_clips: int = 20, upper_bound: str | None = "default") -> dict[str, Any]:
    from engine.checkpoint import build_model, load_checkpoint
    from engine.metrics import lip_vertex_error_l2, lip_vertex_error_l2_mean
    from engine.models.windowing import predict_sequence
    from training.crossmodal.domains import LOOK_R, LOOK_S, mouth_camera
    from training.crossmodal.renders import load_split
    from training.crossmodal.train_regressor import s_rig

    torch.set_num_threads(1)
    r_test = load_split(renders_dir, "R_test")
    clips, feats = _features(r_test, data_root, feature_cache, pack_seconds)
    clips = clips[:max_clips]
    rig = s_rig(renders_dir)
    topo = rig.head.topology
    lips = np.asarray(topo.masks["lips"])
    cam_s = mouth_camera(rig.template, topo, LOOK_S, 64)
    cam_r = mouth_camera(clips[0].template, topo, LOOK_R, 64)
    runners: dict[str, Any] = {"rest pose": None}
    for name, path in models.items():
        runners[name] = build_model(load_checkpoint(path))
    if upper_bound:
        runners["supervised composite (upper bound)"] = build_model(load_checkpoint(upper_bound))
    tmpl = torch.as_tensor(rig.template, dtype=torch.float32)
    per: dict[str, dict[str, list]] = {k: {"lve": [], "lve_mean": [], "lmk": [], "frames": []} for k in runners}
    for c in clips:
        gt = rig.pose(np.load(Path(data_root) / "controls" / f"{c.name}.npy"))
        real_lmk = project(np.asarray(c.vertices), cam_r, LOOK_R)[:, lips]
        for name, m in runners.items():
            if m is None:
                pred = np.broadcast_to(rig.template, gt.shape).astype(np.float32)
            else:
                style = m.neutral_style()
                pred = predict_sequence(m, feats[c.name], tmpl, style)
            per[name]["lve"].append(lip_vertex_error_l2(pred, gt, lips) * 1000)
            per[name]["lve_mean"].append(lip_vertex_error_l2_mean(pred, gt, lips) * 1000)
            p2 = project(pred, cam_s, LOOK_S)[:, lips]
            per[name]["lmk"].append(similarity_rmse(p2.reshape(-1, 2), real_lmk.reshape(-1, 2)))
            per[name]["frames"].append(len(gt))
    rows = {}
    for name, d in per.items():
        w = np.asarray(d["frames"], float)
        rows[name] = {"lip_vertex_error_mm": float(np.average(d["lve"], weights=w)),
                      "lip_mean_error_mm": float(np.average(d["lve_mean"], weights=w)),
                      "lip_landmark_error_px": float(np.average(d["lmk"], weights=w))}
    return {"clips": len(clips), "frames": int(sum(per["rest pose"]["frames"])), "rows": rows,
            "test_subject": str(r_test["subjects"][0])}


def main(overrides: list[str]) -> int:
    opts: dict[str, str] = {}
    models: dict[str, str] = {}
    for item in overrides:
        k, _, v = item.partition("=")
        if k in ("clips", "out", "renders", "upper_bound", "data_root", "feature_cache"):
            opts[k] = v
        else:
            models[k] = v
    if not models:
        print("give at least one model: name=path/to/crossmodal.safetensors", file=sys.stderr)
        return 2
    res = evaluate_models(models, renders_dir=opts.get("renders", "runs/crossmodal/renders"),
                          data_root=opts.get("data_root", "data/synthtalk"),
                          feature_cache=opts.get("feature_cache", "runs/feature_cache"),
                          max_clips=int(opts.get("clips", 20)), upper_bound=opts.get("upper_bound", "default") or None)
    out = Path(opts.get("out", "runs/crossmodal/eval"))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "results.json", "w", encoding="utf-8") as fh:
        fh.write(json.dumps(res, indent=1))
    print(f"{res['clips']} clips, {res['frames']} frames of {res['test_subject']}")
    print("| model | lip vertex error (mm, max over lips) | mean lip error (mm) | lip landmark error (px) |")
    print("|---|---:|---:|---:|")
    for name, r in res["rows"].items():
        print(f"| {name} | {r['lip_vertex_error_mm']:.2f} | {r['lip_mean_error_mm']:.2f} | {r['lip_landmark_error_px']:.2f} |")
    return 0
