"""Pretrain the Wav2Sem encoder (paper 000, Sec. 3.4-3.5): audio -> the teacher's sentence embedding.

    python -m training.wav2sem --variant c --out runs/wav2sem_c      # Wav2Sem_c (first-token target)
    python -m training.wav2sem --variant m --out runs/wav2sem_m      # Wav2Sem_m (mean-of-tokens target)

Audio-text pairs: the SynthTalk *training* clips with their exact text (the corpus's held-out
voices and val/test sentences stay out; the val split is only used to report teacher similarity).
Loss: eq. 8 (L1).  Optimiser: Adam as the paper, but lr 5e-4 with a 100-step warm-up and batches of
16 clips instead of lr 1e-4 with batch 1 for 200 epochs (a few thousand steps on 2 CPU cores).

Writes ``<out>/wav2sem.safetensors`` (the encoder), ``<out>/log.csv`` (train loss, val L1, val
cosine similarity to the teacher, val sentence retrieval top-1) and ``<out>/curves.png``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from engine.encoders.wav2sem import Wav2SemConfig, Wav2SemEncoder, save_wav2sem, semantic_l1_loss

__all__ = ["PairSet", "load_pairs", "pretrain_step", "evaluate", "main"]


@dataclass
class PairSet:
    """Waveforms (16 kHz float32) and the teacher target of each."""

    wavs: list[np.ndarray]
    texts: list[str]
    targets: Tensor              # (N, D)


def load_pairs(root: str | Path, split: str, variant: str, cache: str | Path, max_clips: int = 0) -> PairSet:
    """The ``split`` clips of a SynthTalk-format corpus (``meta/*.json`` with ``text``) and their targets."""
    import soundfile as sf

    from training.wav2sem_teacher import teacher_embeddings
    root = Path(root)
    metas = [json.loads(p.read_text()) for p in sorted((root / "meta").glob("*.json"))]
    all_texts = [m["text"] for m in metas]
    metas = [m for m in metas if m.get("split") == split]
    if max_clips and max_clips < len(metas):      # evenly spaced: every speaker of the split
        metas = [metas[int(i)] for i in np.linspace(0, len(metas) - 1, max_clips).round()]
    if not metas:
        raise ValueError(f"no {split!r} clips with text in {root}/meta")
    emb = teacher_embeddings(all_texts, cache)[variant]
    wavs = []
    for m in metas:
        w, sr = sf.read(str(root / "wav" / f"{m['clip']}.wav"), dtype="float32")
        if sr != 16000:
            raise ValueError(f"{m['clip']}: expected 16 kHz audio, got {sr}")
        wavs.append(w if w.ndim == 1 else w.mean(1))
    texts = [m["text"] for m in metas]
    return PairSet(wavs, texts, torch.stack([emb[t] for t in texts]))


def collate(wavs: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Right-padded ``(B, S)`` batch and the lengths in samples."""
    n = max(len(w) for w in wavs)
    out = torch.zeros(len(wavs), n)
    for i, w in enumerate(wavs):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, torch.tensor([len(w) for w in wavs])


def pretrain_step(enc: Wav2SemEncoder, opt: torch.optim.Optimizer, wavs: list[np.ndarray], target: Tensor) -> float:
    """One optimiser step of eq. 8 on a batch; returns the loss before the step."""
    enc.train()
    x, lengths = collate(wavs)
    loss = semantic_l1_loss(enc.net(x, lengths), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def predict(enc: Wav2SemEncoder, wavs: list[np.ndarray], batch: int = 32) -> Tensor:
    enc.eval()
    order = np.argsort([len(w) for w in wavs])
    out = torch.empty(len(wavs), enc.config.out_dim)
    for i in range(0, len(wavs), batch):
        idx = order[i:i + batch]
        x, lengths = collate([wavs[j] for j in idx])
        out[torch.from_numpy(idx)] = enc.net(x, lengths)
    return out


def evaluate(pred: Tensor, pairs: PairSet, train_mean: Tensor) -> dict[str, float]:
    """L1 (eq. 8), cosine similarity to the teacher, the same for the constant train-mean guess,
    and top-1 retrieval of the clip's sentence among the split's distinct sentences."""
    tgt = pairs.targets
    cos = torch.nn.functional.cosine_similarity(pred, tgt, dim=1)
    base = torch.nn.functional.cosine_similarity(train_mean.expand_as(tgt), tgt, dim=1)
    uniq = sorted(set(pairs.texts))
    bank = torch.stack([tgt[pairs.texts.index(s)] for s in uniq])
    sims = torch.nn.functional.normalize(pred, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    hit = [uniq[int(j)] == t for j, t in zip(sims.argmax(1), pairs.texts)]
    return {"l1": float((pred - tgt).abs().mean()), "cos": float(cos.mean()), "cos_mean_guess": float(base.mean()),
            "l1_mean_guess": float((train_mean - tgt).abs().mean()), "top1": float(np.mean(hit)),
            "chance_top1": 1.0 / len(uniq)}


def plot_curves(log: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    tr = [r for r in log if r.get("train_l1") is not None]
    ax[0].plot([r["step"] for r in tr], [r["train_l1"] for r in tr], label="train L1 (eq. 8)", alpha=0.6)
    ev = [r for r in log if r.get("val_l1") is not None]
    ax[0].plot([r["step"] for r in ev], [r["val_l1"] for r in ev], "o-", label="val L1")
    ax[0].axhline(ev[-1]["val_l1_mean_guess"], ls="--", c="gray", label="val L1 of the train-mean vector")
    ax[0].set_xlabel("step"); ax[0].legend(); ax[0].set_title("Wav2Sem pretraining loss")
    ax[1].plot([r["step"] for r in ev], [r["val_cos"] for r in ev], "o-", label="val cos(F_s, teacher)")
    ax[1].axhline(ev[-1]["val_cos_mean_guess"], ls="--", c="gray", label="train-mean vector")
    ax[1].plot([r["step"] for r in ev], [r["val_top1"] for r in ev], "s-", label="val sentence top-1")
    ax[1].set_xlabel("step"); ax[1].legend(); ax[1].set_title("teacher similarity on val (unseen sentences)")
    fig.tight_layout()
    from engine.fileio import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def rows_from_stdout(text: str) -> list[dict]:
    """The rows of a run's printed progress (``step N train_l1 X [val {...}]``): a run stopped early
    by hand still gets its curves (``--replot LOG``)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] != "step" or parts[2] != "train_l1":
            continue
        row: dict = {"step": int(parts[1]), "train_l1": float(parts[3])}
        if " val {" in line:
            val = json.loads(line[line.index("{"): line.rindex("}") + 1])
            row.update({f"val_{k}": v for k, v in val.items()})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=["c", "m"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--root", default="data/synthtalk")
    ap.add_argument("--teacher-cache", default="runs/wav2sem_teacher.safetensors")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-clips", type=int, default=0, help="per split (smoke runs)")
    ap.add_argument("--replot", type=Path, default=None, help="only draw <out>/curves.png from a run's printed log")
    ap.add_argument("--val-clips", type=int, default=80, help="val clips scored at each evaluation (0 = all)")
    args = ap.parse_args(argv)
    if args.replot is not None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        plot_curves(rows_from_stdout(args.replot.read_text()), Path(args.out) / "curves.png")
        return 0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed); random.seed(args.seed); np.random.seed(args.seed)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    train = load_pairs(args.root, "train", args.variant, args.teacher_cache, args.max_clips)
    val = load_pairs(args.root, "val", args.variant, args.teacher_cache, args.val_clips or args.max_clips)
    train_mean = train.targets.mean(0)
    enc = Wav2SemEncoder(Wav2SemConfig(variant=args.variant))
    opt = torch.optim.Adam(enc.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    log: list[dict] = []
    t0 = time.time()
    order: list[int] = []
    for step in range(1, args.steps + 1):
        if len(order) < args.batch:
            order = random.sample(range(len(train.wavs)), len(train.wavs))
        idx, order = order[: args.batch], order[args.batch:]
        loss = pretrain_step(enc, opt, [train.wavs[i] for i in idx], train.targets[idx])
        sched.step()
        row: dict = {"step": step, "train_l1": loss, "seconds": round(time.time() - t0, 1)}
        if step % args.eval_every == 0 or step == args.steps:
            m = evaluate(predict(enc, val.wavs), val, train_mean)
            row.update({f"val_{k}": v for k, v in m.items()})
            print(f"step {step} train_l1 {loss:.4f} val {json.dumps({k: round(v, 4) for k, v in m.items()})} "
                  f"{row['seconds']}s", flush=True)
            save_wav2sem(out / "wav2sem.safetensors", enc, {"step": step, "val": m, "teacher": "all-MiniLM-L6-v2",
                                                           "data": f"{args.root} train split"})
        elif step % 10 == 0:
            print(f"step {step} train_l1 {loss:.4f} {row['seconds']}s", flush=True)
        log.append(row)
    keys = sorted({k for r in log for k in r}, key=lambda k: (k != "step", k))
    with open(out / "log.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys); w.writeheader(); w.writerows(log)
    plot_curves(log, out / "curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
