"""Stage 2: train the speech-to-image transcoder (eqs. 1-5) and assemble the shipped model.

Data per step: ``batch_clips`` R clips cropped to ``crop_frames`` consecutive frames (cached
Whisper features + the synchronised R images), ``batch_s`` S images, both neutral images.
With ``paired_fraction > 0`` (the semi-supervised sweep, our addition) that share of the R clips
also comes with the S character's meshes (the clip's rig controls posed on the S identity) and
adds an RMSE term through the frozen regressor.

Writes ``transcoder.safetensors`` (all four networks), ``crossmodal.safetensors`` (the
:class:`engine.models.crossmodal.CrossModalModel` checkpoint: E_A + D_S + zbar_R + E_G, fp16),
``log.csv`` and ``curve.png``.
"""
from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.fileio import atomic_path
from training.crossmodal.augment import images_to_tensor
from training.crossmodal.config import TranscoderConfig
from training.crossmodal.renders import load_split, r_clips
from training.crossmodal.train_regressor import load_regressor, s_rig
from training.crossmodal.transcoder import Transcoder, TranscoderBatch

__all__ = ["build_shipped_model", "clip_features", "train_transcoder"]


def clip_features(cfg: TranscoderConfig, clips: list) -> dict[str, torch.Tensor]:
    """Cached frozen Whisper features of ``clips`` at their frame counts (computed if missing)."""
    from training.features import FeatureCache, encoder_specs
    cache = FeatureCache(Path(cfg.feature_cache), encoder_specs({}), pack_seconds=cfg.pack_seconds)
    cache.ensure(clips)
    return {c.name: cache.load(c, c.num_frames) for c in clips}


def _clip_table(renders: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = [str(n) for n in renders["names"]]
    starts = np.concatenate([[0], np.cumsum(renders["num_frames"])[:-1]]).astype(np.int64)
    return names, starts


def build_shipped_model(net: Transcoder, regressor: torch.nn.Module, neutral_r: torch.Tensor, rig, size: int,
                        feature_dim: int):
    """E_A, D_S, zbar_R (from the trained E_V) and E_G as one :class:`CrossModalModel`."""
    from engine.models.crossmodal import CrossModalConfig, CrossModalModel
    c = net.cfg
    mc = CrossModalConfig(feature_dim=feature_dim, latent=c.latent, image_size=size, channels=c.channels,
                          speech_width=c.speech_width, speech_layers=c.speech_layers, speech_heads=c.speech_heads,
                          speech_radius=c.speech_radius, regressor_width=regressor.backbone.stages[0].conv1.in_channels,
                          deneutralize=c.deneutralize)
    model = CrossModalModel(mc, torch.as_tensor(rig.template, dtype=torch.float32))
    model.speech_encoder.load_state_dict(net.speech_encoder.state_dict())
    model.decoder_s.load_state_dict(net.decoder_s.state_dict())
    model.regressor.load_state_dict(regressor.state_dict())
    with torch.no_grad():
        model.neutral_code_r.copy_(net.visual_encoder(neutral_r)[0])
    return model.eval()


def train_transcoder(cfg: TranscoderConfig, log=sys.stderr) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.num_threads)
    rng = np.random.default_rng(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    r_train, s_train, neutral = (load_split(cfg.renders, n) for n in ("R_train", "S_train", "neutral"))
    size = cfg.image_size
    names, starts = _clip_table(r_train)
    subject = int(str(r_train["subjects"][0]).split("_")[-1])
    clips = {c.name: c for c in r_clips(cfg.data_root, "train", subject, 10 ** 6) if c.name in set(names)}
    missing = sorted(set(names) - set(clips))
    if missing:
        raise ValueError(f"R clips {missing[:3]}... are not in {cfg.data_root}: render and train from the same corpus")
    feats = clip_features(cfg, [clips[n] for n in names])
    feature_dim = int(next(iter(feats.values())).shape[1])
    rig = s_rig(cfg.renders)
    n_paired = round(cfg.paired_fraction * len(names))
    paired = set(rng.choice(len(names), size=n_paired, replace=False).tolist()) if n_paired else set()
    controls = {k: np.load(Path(cfg.data_root) / "controls" / f"{names[k]}.npy") for k in paired}
    regressor = None
    if paired:
        regressor, _ = load_regressor(cfg.regressor)
        for p in regressor.parameters():
            p.requires_grad_(False)
    r_subjects = [str(s) for s in neutral["R_subjects"]]
    neutral_r = images_to_tensor(neutral["R"][r_subjects.index(str(r_train["subjects"][0]))][None], size)
    neutral_s = images_to_tensor(neutral["S"][None], size)
    net = Transcoder(cfg, feature_dim, size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1.0))))
    lengths = r_train["num_frames"].astype(np.int64)
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for step in range(1, cfg.steps + 1):
        net.train()
        ks = rng.choice(len(names), size=cfg.batch_clips, replace=False)
        T = int(min(cfg.crop_frames, lengths[ks].min()))
        f, im, pk, meshes = [], [], [], []
        for j, k in enumerate(ks):
            s = int(rng.integers(0, lengths[k] - T + 1))
            f.append(feats[names[k]][s:s + T])
            im.append(r_train["images"][starts[k] + s: starts[k] + s + T])
            if k in paired:
                pk.append(j)
                meshes.append(rig.pose(controls[k][s:s + T]))
        sidx = rng.integers(0, len(s_train["images"]), cfg.batch_s)
        batch = TranscoderBatch(features=torch.stack(f), images_r=images_to_tensor(np.concatenate(im), size).unflatten(0, (len(ks), T)),
                                images_s=images_to_tensor(s_train["images"][sidx], size), neutral_r=neutral_r, neutral_s=neutral_s,
                                meshes=torch.as_tensor(np.stack(meshes)) if meshes else None,
                                paired=torch.as_tensor(pk, dtype=torch.long) if pk else None)
        if regressor is not None:
            regressor.eval()
        loss, terms = net.losses(batch, regressor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            rows.append({"step": step, **terms, "seconds": round(time.time() - t0, 1)})
            print(f"transcoder step {step}/{cfg.steps} " + " ".join(f"{k} {v:.4f}" for k, v in terms.items())
                  + f" ({rows[-1]['seconds']} s)", file=log, flush=True)
    from safetensors.torch import save_file
    with atomic_path(out / "transcoder.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    _write_log(rows, out)
    if regressor is None:
        regressor, _ = load_regressor(cfg.regressor)
    net.eval()
    model = build_shipped_model(net, regressor, neutral_r, rig, size, feature_dim)
    _save_model(model, rig, cfg, out / "crossmodal.safetensors", n_paired, len(names))
    return {"steps": cfg.steps, "seconds": round(time.time() - t0, 1), "paired_clips": n_paired,
            "final": rows[-1] if rows else {}}


def _save_model(model, rig, cfg: TranscoderConfig, path: Path, n_paired: int, n_clips: int) -> None:
    from engine.checkpoint import save_checkpoint
    card = {"method": "paper 001 (cross-modal semi-supervised)", "dataset": "SynthTalk renders",
            "r_clips": n_clips, "paired_clips": n_paired, "renders": cfg.renders, "steps": cfg.steps,
            "command": "python -m training.crossmodal transcoder --config training/configs/crossmodal_transcoder.toml"}
    save_checkpoint(path, model, config=model.checkpoint_config(), topology=rig.head.topology,
                    encoder=model.config.encoders[0], fps=30.0, data_card=card, half=True)


def _write_log(rows: list[dict[str, Any]], out: Path) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(out / "log.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    terms = [k for k in keys if k not in ("step", "seconds")]
    fig = Figure(figsize=(3 * len(terms), 2.6))
    for i, k in enumerate(terms):
        ax = fig.add_subplot(1, len(terms), i + 1)
        ax.plot([r["step"] for r in rows], [r.get(k, np.nan) for r in rows])
        ax.set_title(k, fontsize=8)
        ax.set_yscale("log")
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    with atomic_path(out / "curve.png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")
