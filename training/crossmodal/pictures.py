"""Pictures of paper 001's pipeline on a held-out R clip (Fig. 3 as a contact sheet).

Rows, every ``step`` frames: the R "video" frame (what the speaker's face did), the S image the
transcoder decoded from the audio alone, the S character rendered with the ground-truth mesh
(the clip's controls on the S identity), and the mesh the regressor read off the decoded image,
rendered the same way; below, the inner-lip gap over time (truth vs prediction).

``python -m training.crossmodal.pictures CKPT OUT.png [clip_index] [step]``
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["pipeline_sheet"]


@torch.no_grad()
def pipeline_sheet(ckpt: str, out_png: str, clip_index: int = 0, step: int = 6, n: int = 10,
                   renders_dir: str = "runs/crossmodal/renders", data_root: str = "data/synthtalk",
                   feature_cache: str = "runs/feature_cache") -> str:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from engine.checkpoint import build_model, load_checkpoint
    from engine.fileio import atomic_path
    from engine.metrics import inner_lip_gap
    from engine.models.windowing import predict_sequence
    from training.crossmodal.domains import LOOK_S, mouth_camera, render_look
    from training.crossmodal.evaluate import _features
    from training.crossmodal.renders import load_split
    from training.crossmodal.train_regressor import s_rig

    torch.set_num_threads(1)
    r_test = load_split(renders_dir, "R_test")
    clips, feats = _features(r_test, data_root, feature_cache, 28.0)
    clip = clips[clip_index]
    names = [str(x) for x in r_test["names"]]
    k = names.index(clip.name)
    start = int(np.concatenate([[0], np.cumsum(r_test["num_frames"])])[k])
    model = build_model(load_checkpoint(ckpt))
    rig = s_rig(renders_dir)
    topo = rig.head.topology
    f = feats[clip.name]
    tmpl = torch.as_tensor(rig.template, dtype=torch.float32)
    pred = predict_sequence(model, f, tmpl, model.neutral_style())
    gt = rig.pose(np.load(Path(data_root) / "controls" / f"{clip.name}.npy"))
    idx = np.arange(0, len(gt), step)[:n]
    decoded = (model.images(f[idx][None])[0].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    cam = mouth_camera(rig.template, topo, LOOK_S, 64)
    truth_s = render_look(gt[idx], cam, LOOK_S, 64)
    pred_s = render_look(pred[idx], cam, LOOK_S, 64)
    rows = [("R frame (speaker)", r_test["images"][start + idx]), ("decoded S image (from audio)", decoded),
            ("S truth (rig)", truth_s), ("regressed mesh", pred_s)]
    fig = Figure(figsize=(1.3 * len(idx), 1.4 * len(rows) + 1.6))
    gs = fig.add_gridspec(len(rows) + 1, len(idx), height_ratios=[1] * len(rows) + [1.2], hspace=0.3, wspace=0.05)
    for r, (label, imgs) in enumerate(rows):
        for c in range(len(idx)):
            ax = fig.add_subplot(gs[r, c])
            ax.imshow(imgs[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6)
            if r == 0:
                ax.set_title(f"{idx[c] / 30:.2f}s", fontsize=6)
    ax = fig.add_subplot(gs[len(rows), :])
    up, lo = topo.masks["lip_upper_inner"], topo.masks["lip_lower_inner"]
    t = np.arange(len(gt)) / 30
    ax.plot(t, inner_lip_gap(gt, up, lo) * 1000, label="truth", color="k")
    ax.plot(t, inner_lip_gap(pred, up, lo) * 1000, label="cross-modal", color="C3")
    ax.set_ylabel("inner-lip gap (mm)", fontsize=7)
    ax.set_xlabel("time (s)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6)
    fig.suptitle(f"{clip.name}: audio -> E_A -> D_S -> E_G (never-seen speaker and sentence)", fontsize=8)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return out_png


if __name__ == "__main__":
    a = sys.argv[1:]
    print(pipeline_sheet(a[0], a[1], int(a[2]) if len(a) > 2 else 0, int(a[3]) if len(a) > 3 else 6))
