"""Stage 1: train the face-to-geometry regressor E_G on S renders (Sec. 3.3, eq. 6).

Only the S domain is used: images and the meshes the rig gives for their controls.  Loss: the
RMSE of eq. 6 (per image, over all vertex coordinates, in mm), with the paper's colour-jitter and
random-affine augmentation.  Writes ``regressor.safetensors`` (weights + JSON metadata: width,
S identity, template, metrics), ``log.csv`` and ``curve.png``.
"""
from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.fileio import atomic_path
from engine.models.crossmodal_nets import FaceToGeometry
from training.crossmodal.augment import color_jitter, images_to_tensor, random_affine
from training.crossmodal.config import RegressorConfig
from training.crossmodal.renders import load_split

__all__ = ["evaluate_regressor", "load_regressor", "rmse_loss", "s_rig", "save_regressor", "train_regressor"]


def rmse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``||E_G(I_S) - Y_S||_2`` as the root of the mean squared coordinate error, per image, averaged."""
    return (pred - target).pow(2).flatten(1).mean(dim=1).clamp_min(1e-12).sqrt().mean()


def s_rig(renders: str | Path):
    """The rig of the S identity the renders were made with (meshes = ``rig.pose(controls)``)."""
    from training.synthtalk.head import build_head
    from training.synthtalk.rig import Rig
    meta = json.loads((Path(renders) / "meta.json").read_text())
    return Rig(build_head(int(meta["config"]["s_identity"])))


def save_regressor(path: Path, model: FaceToGeometry, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"parley_regressor": json.dumps(meta)})


def load_regressor(path: str | Path) -> tuple[FaceToGeometry, dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train the regressor first "
                                "(python -m training.crossmodal regressor --config training/configs/crossmodal_regressor.toml)")
    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["parley_regressor"])
    state = load_file(str(path))
    model = FaceToGeometry(state["fc.bias"].view(-1, 3) / meta["unit_scale"], width=meta["width"],
                           unit_scale=meta["unit_scale"])
    model.load_state_dict(state)
    return model.eval(), meta


@torch.no_grad()
def evaluate_regressor(model: FaceToGeometry, images: np.ndarray, meshes: np.ndarray, lips: np.ndarray,
                       size: int | None = None, batch: int = 100) -> dict[str, float]:
    """Mean per-vertex error and lip errors (mm) on un-augmented images."""
    model.eval()
    errs = []
    for a in range(0, len(images), batch):
        pred = model(images_to_tensor(images[a:a + batch], size)).numpy()
        errs.append(np.linalg.norm(pred - meshes[a:a + batch], axis=-1))
    e = np.concatenate(errs) * 1000.0
    return {"vertex_mm": float(e.mean()), "lip_mean_mm": float(e[:, lips].mean()),
            "lip_max_mm": float(e[:, lips].max(axis=1).mean())}


def train_regressor(cfg: RegressorConfig, log=sys.stderr) -> dict[str, float]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = load_split(cfg.renders, "S_train"), load_split(cfg.renders, "S_val")
    rig = s_rig(cfg.renders)
    lips = np.asarray(rig.head.topology.masks["lips"])
    val_meshes = rig.pose(val["controls"])
    model = FaceToGeometry(torch.as_tensor(rig.template, dtype=torch.float32), width=cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))))
    rows = []
    t0 = time.time()
    n = len(train["images"])
    for step in range(1, cfg.steps + 1):
        model.train()
        idx = rng.integers(0, n, cfg.batch_size)
        x = images_to_tensor(train["images"][idx], cfg.image_size)
        x = random_affine(color_jitter(x, cfg.jitter, gen), cfg.affine_deg, cfg.affine_shift, cfg.affine_scale, gen)
        y = torch.as_tensor(rig.pose(train["controls"][idx]))
        loss = rmse_loss(model(x) * 1000.0, y * 1000.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {"step": step, "rmse_mm": loss.item(), "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            print(f"regressor step {step}/{cfg.steps} rmse {row['rmse_mm']:.3f} mm ({row['seconds']} s)",
                  file=log, flush=True)
    metrics = evaluate_regressor(model, val["images"], val_meshes, lips, cfg.image_size)
    # the mean-face baseline: predicting the rest pose for every image
    rest = np.linalg.norm(np.broadcast_to(rig.template, val_meshes.shape) - val_meshes, axis=-1) * 1000.0
    metrics.update(rest_vertex_mm=float(rest.mean()), rest_lip_mean_mm=float(rest[:, lips].mean()),
                   train_seconds=round(time.time() - t0, 1), steps=cfg.steps)
    meta = {"width": cfg.width, "unit_scale": model.unit_scale, "size": cfg.image_size,
            "metrics": metrics, "config": cfg.__dict__}
    save_regressor(out / "regressor.safetensors", model, meta)
    with atomic_path(out / "log.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["step", "rmse_mm", "seconds"])
        w.writeheader()
        w.writerows(rows)
    _plot(rows, metrics, out / "curve.png")
    return metrics


def _plot(rows: list[dict], metrics: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5, 3))
    ax = fig.add_subplot(111)
    ax.plot([r["step"] for r in rows], [r["rmse_mm"] for r in rows], label="train RMSE (augmented)")
    ax.axhline(metrics["vertex_mm"], color="C1", ls="--", label=f"val vertex error {metrics['vertex_mm']:.2f} mm")
    ax.set_xlabel("step")
    ax.set_ylabel("mm")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
