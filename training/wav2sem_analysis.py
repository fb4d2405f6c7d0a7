"""Wav2Sem analysis as in paper 000 (Sec. 4.4, Fig. 3, Table 2, Sec. 4.8), at small scale.

    python -m training.wav2sem_analysis --checkpoints runs/cr_none_s0/model.safetensors \
        runs/cr_c_s0/model.safetensors runs/cr_m_s0/model.safetensors --out out/wav2sem_analysis

For composite & regional checkpoints (the host where the fusion sits after AdaIN):

* **Near-homophone pairs** (:data:`PAIRS`): each word in a context sentence, both words of a pair
  spoken by the same held-out voice with exact TTS timings and rig ground truth (built like the
  tongue-twister sets, :func:`training.benchmark_sets.build_set`).  Per word, the mean over its
  frames of the feature before fusion (``Z_fuse``, the AdaIN output) and after (``F_d``, eq. 7);
  the pair's distance divided by the mean distance between *all* word pairs of the set
  (scale-free, so before and after can be compared, the paper's Table 2 uses raw L2); and the
  pair's lip-shape difference (mean lip vertices over the word) predicted vs ground truth.
* **Phone probe** (in place of the paper's TIMIT PER, Sec. 4.8): a linear softmax classifier of
  the frame's phone from the features, trained on half of the SynthTalk test clips, scored on the
  other half.
* **Picture** (Fig. 3): sklearn is not installed, so PCA (not t-SNE) of the pair words' frames.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["PAIRS", "PAIR_SENTENCES", "word_frames", "pair_distance_ratio", "linear_probe", "pca2", "join_smoothness"]

PAIRS = [("ship", "sheep"), ("bit", "beat"), ("pull", "pool"), ("full", "fool"), ("cot", "caught"), ("sell", "sale")]
# Ordered so that both words of a pair get the same held-out voice (sentence k -> voice k % 3).
PAIR_SENTENCES = [
    "The captain sailed the ship across the bay",        # ship   voice 0
    "The dog bit the mailman on the leg",                # bit    voice 1
    "Please pull the rope a little harder",              # pull   voice 2
    "The farmer counted every sheep in the field",       # sheep  voice 0
    "The drummer beat the drum all night",               # beat   voice 1
    "The children swam in the pool all day",             # pool   voice 2
    "The glass was full of cold water",                  # full   voice 0
    "The baby slept in a small cot",                     # cot    voice 1
    "They want to sell the old car soon",                # sell   voice 2
    "Only a fool would trust that man",                  # fool   voice 0
    "The boy caught the ball with one hand",             # caught voice 1
    "The shoes were on sale last week",                  # sale   voice 2
]
PAIR_WORDS = ["ship", "bit", "pull", "sheep", "beat", "pool", "full", "cot", "sell", "fool", "caught", "sale"]


def word_frames(words: list, word: str, fps: float, num_frames: int) -> np.ndarray:
    """Mesh frames whose centre lies inside the first occurrence of ``word`` (``[w, start_s, end_s]`` rows)."""
    for w, a, b in words:
        if w.lower().strip(".,?!") == word:
            t = (np.arange(num_frames) + 0.5) / fps
            idx = np.nonzero((t >= a) & (t < b))[0]
            if len(idx) == 0:
                idx = np.array([min(num_frames - 1, int(round((a + b) / 2 * fps)))])
            return idx
    raise KeyError(f"word {word!r} not in the clip's word timings")


def pair_distance_ratio(vectors: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> dict[str, float]:
    """``||v_a - v_b|| / mean over all word pairs ||v_x - v_y||`` for each pair (1 = as far apart as
    an average pair of unrelated words, 0 = coupled)."""
    names = sorted(vectors)
    allpairs = [np.linalg.norm(vectors[x] - vectors[y]) for i, x in enumerate(names) for y in names[i + 1:]]
    scale = float(np.mean(allpairs))
    return {f"{a}/{b}": float(np.linalg.norm(vectors[a] - vectors[b]) / scale) for a, b in pairs}


def linear_probe(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, classes: int,
                 steps: int = 300, lr: float = 0.05, seed: int = 0) -> float:
    """Accuracy on the test frames of a softmax-regression phone classifier (features standardised
    with the training frames' statistics; full-batch Adam)."""
    g = torch.Generator().manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    w = (torch.randn(a.shape[1], classes, generator=g) * 0.01).requires_grad_()
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(a @ w + bias, y_train) + 1e-4 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((b @ w + bias).argmax(1) == y_test).float().mean())


@torch.no_grad()
def join_smoothness(encoder, wav: np.ndarray) -> dict[str, float]:
    """How ``F_s`` behaves at the joins of its windows on long audio: the largest change of the
    per-frame ``F_s`` between two consecutive 20 ms frames (what the animation sees) against the
    largest change between two consecutive windows' own vectors (the step a hard switch would make)."""
    fs = encoder.encode(wav)
    plan = encoder._window_plan(len(wav))
    seg = torch.stack([encoder.net(torch.from_numpy(np.ascontiguousarray(wav[a:b]))[None])[0] for a, b in plan])
    frame_step = float((fs[1:] - fs[:-1]).norm(dim=1).max())
    hard_step = float((seg[1:] - seg[:-1]).norm(dim=1).max()) if len(seg) > 1 else 0.0
    return {"windows": len(plan), "max_frame_step": frame_step, "max_window_step": hard_step,
            "ratio": frame_step / hard_step if hard_step else 0.0}


@torch.no_grad()
def long_audio_check(anim, wav: np.ndarray) -> dict[str, float]:
    """Join smoothness of ``F_s`` (:func:`join_smoothness`) and its effect on the animation of long
    audio: the lip speed (mm per frame, mean over lip vertices) at the frames where a hard switch
    between windows would sit (the middle of each overlap), with the shipped cross-fade and with a
    hard switch (each frame takes its nearest window's vector), against the median over all frames."""
    from engine.audio import num_frames
    from engine.models.windowing import predict_sequence
    model = anim.model
    enc = model.semantic.encoder
    out = join_smoothness(enc, wav)
    T = num_frames(len(wav), anim.fps)
    feats = anim.features(wav, T)
    plan = enc._window_plan(len(wav))
    seg = torch.stack([enc.net(torch.from_numpy(np.ascontiguousarray(wav[a:b]))[None])[0] for a, b in plan])
    centres = np.array([(a + b) / 2 / 16000 for a, b in plan])
    t = np.arange(T) / anim.fps
    nearest = np.abs(t[:, None] - centres[None]).argmin(1)
    hard = feats.clone()
    hard[:, -model.semantic_dim:] = seg[torch.from_numpy(nearest)]
    switch = np.nonzero(np.diff(nearest))[0]                        # frame i -> i + 1 crosses a switch
    lips = np.asarray(anim.topology.masks["lips"])
    tmpl, style = model.template.detach().float().cpu(), model.neutral_style().detach().float().cpu()

    def speed(f: Tensor) -> np.ndarray:
        frames = predict_sequence(model, f, tmpl, style)
        return np.linalg.norm(np.diff(frames[:, lips], axis=0), axis=2).mean(1) * 1000

    smooth, stepped = speed(feats), speed(hard)
    out.update({"seconds": len(wav) / 16000, "switch_frames": int(len(switch)),
                "lip_speed_median_mm": float(np.median(smooth)),
                "lip_speed_at_joins_crossfade_mm": float(smooth[switch].mean()),
                "lip_speed_at_joins_hard_switch_mm": float(stepped[switch].mean()),
                "lip_jump_hard_minus_crossfade_mm": float(np.abs(stepped[switch] - smooth[switch]).mean())})
    return out


def pca2(x: np.ndarray) -> np.ndarray:
    """First two principal components of the rows of ``x``."""
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:2].T


# ----------------------------------------------------------------------------- model internals
@torch.no_grad()
def fused_features(model, feats: Tensor) -> tuple[Tensor, Tensor]:
    """Composite host: ``(Z_fuse, F_d)`` per frame ``(T, C)`` with the neutral style (no fusion: equal)."""
    from engine.models.composite_regional import adain
    x = feats.unsqueeze(0)
    z_audio = model.audio_latent(x)
    sigma_p, mu_p = model.modulation(model.neutral_style().unsqueeze(0))
    z = adain(z_audio, sigma_p, mu_p, model.audio_statistics(z_audio))
    f_d = model.semantic.fusion(z, x[..., -model.semantic_dim:]) if model.semantic is not None else z
    return z[0], f_d[0]


def analyse_checkpoint(path: Path, pair_clips: list[dict], probe_clips: list[dict]) -> dict:
    from engine.inference import Animator
    from engine.models.windowing import predict_sequence
    anim = Animator.from_checkpoint(path, device="cpu")
    model = anim.model
    res: dict = {"checkpoint": str(path), "wav2sem": model.semantic is not None}
    before, after, lips_pred, lips_gt, frames_for_pca = {}, {}, {}, {}, []
    for c in pair_clips:
        feats = anim.features(c["wav"], len(c["gt"]))
        zb, za = fused_features(model, feats)
        idx = c["idx"]
        before[c["word"]] = zb[idx].mean(0).numpy()
        after[c["word"]] = za[idx].mean(0).numpy()
        pred = predict_sequence(model, feats, torch.from_numpy(c["template"]), model.neutral_style())
        lips_pred[c["word"]] = pred[idx][:, c["lips"]].mean(0)
        lips_gt[c["word"]] = c["gt"][idx][:, c["lips"]].mean(0)
        frames_for_pca.append((c["word"], zb[idx].numpy(), za[idx].numpy()))
    res["distance_before"] = pair_distance_ratio(before, PAIRS)
    res["distance_after"] = pair_distance_ratio(after, PAIRS)
    res["lip_diff_mm"] = {f"{a}/{b}": {"pred": float(np.linalg.norm(lips_pred[a] - lips_pred[b], axis=1).mean() * 1000),
                                       "gt": float(np.linalg.norm(lips_gt[a] - lips_gt[b], axis=1).mean() * 1000)}
                          for a, b in PAIRS}
    res["lip_error_mm"] = float(np.mean([np.linalg.norm(lips_pred[w] - lips_gt[w], axis=1).mean() * 1000
                                         for w in lips_pred]))
    # phone probe
    xs_b, xs_a, ys, half = [], [], [], []
    for k, c in enumerate(probe_clips):
        feats = anim.features(c["wav"], c["num_frames"])
        zb, za = fused_features(model, feats)
        xs_b.append(zb); xs_a.append(za); ys.append(torch.from_numpy(c["labels"]))
        half.append(torch.full((len(c["labels"]),), k % 2))
    xb, xa, y, h = torch.cat(xs_b), torch.cat(xs_a), torch.cat(ys), torch.cat(half)
    ncls = int(y.max()) + 1
    res["probe_before"] = linear_probe(xb[h == 0], y[h == 0], xb[h == 1], y[h == 1], ncls)
    res["probe_after"] = linear_probe(xa[h == 0], y[h == 0], xa[h == 1], y[h == 1], ncls)
    res["probe_majority"] = float((y[h == 1] == torch.mode(y[h == 0]).values).float().mean())
    res["_pca"] = frames_for_pca
    return res


def load_pair_clips(root: Path) -> list[dict]:
    from engine.audio import load_audio
    from engine.topology import Topology
    topo = Topology.load(root / "topology.npz")
    lips = np.asarray(topo.masks["lips"])
    tmpl = dict(np.load(root / "templates.npz"))
    out = []
    for k, word in enumerate(PAIR_WORDS):
        name = f"{next(iter(tmpl))}_s{9000 + k:04d}"
        ph = json.loads((root / "phones" / f"{name}.json").read_text())
        gt = np.load(root / "vertices_npy" / f"{name}.npy").reshape(-1, topo.num_vertices, 3)
        out.append({"word": word, "wav": load_audio(root / "wav" / f"{name}.wav"), "gt": gt, "lips": lips,
                    "template": tmpl[next(iter(tmpl))], "idx": word_frames(ph["words"], word, 30.0, len(gt))})
    return out


def load_probe_clips(root: Path, n: int) -> tuple[list[dict], list[str]]:
    from engine.audio import load_audio
    metas = sorted((root / "meta").glob("*.json"))
    metas = [m for m in metas if json.loads(m.read_text())["split"] == "test"]
    metas = [metas[int(i)] for i in np.linspace(0, len(metas) - 1, n).round()]
    inventory: dict[str, int] = {}
    clips = []
    for m in metas:
        meta = json.loads(m.read_text())
        ph = json.loads((root / "phones" / f"{meta['clip']}.json").read_text())["phones"]
        t = (np.arange(meta["num_frames"]) + 0.5) / 30.0
        labels = np.zeros(meta["num_frames"], dtype=np.int64)
        for p, a, b in ph:
            labels[(t >= a) & (t < b)] = inventory.setdefault(p.rstrip("012"), len(inventory))
        clips.append({"wav": load_audio(root / "wav" / f"{meta['clip']}.wav"), "num_frames": meta["num_frames"],
                      "labels": labels})
    return clips, sorted(inventory, key=inventory.get)


def plot_pca(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(r, stage) for r in results for stage in ((1, 2) if r["wav2sem"] else (1,))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
    axes = np.atleast_1d(axes)
    colours = plt.cm.tab10(np.arange(len(PAIRS)))
    for ax, (r, stage) in zip(axes, panels):
        rows = [(w, b if stage == 1 else a) for w, b, a in r["_pca"]]
        x = np.concatenate([f for _, f in rows])
        y = pca2(x)
        k = 0
        for w, f in rows:
            pi = next(i for i, p in enumerate(PAIRS) if w in p)
            marker = "o" if PAIRS[pi][0] == w else "^"
            ax.scatter(y[k:k + len(f), 0], y[k:k + len(f), 1], color=colours[pi], marker=marker, s=18,
                       label=w)
            k += len(f)
        name = Path(r["checkpoint"]).parent.name
        ax.set_title(f"{name}: {'Z_fuse (before eq. 7)' if stage == 1 else 'F_d (after eq. 7)'}", fontsize=9)
        ax.set_xticks([]); ax.set_yticks([])
    axes[-1].legend(fontsize=6, ncol=2, loc="best")
    fig.suptitle("PCA of the near-homophone words' frames (o = first word, ^ = second; one colour per pair)",
                 fontsize=9)
    fig.tight_layout()
    from engine.fileio import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("out/wav2sem_analysis"))
    ap.add_argument("--sets-dir", type=Path, default=Path("runs/benchmark_sets"))
    ap.add_argument("--synthtalk", type=Path, default=Path("data/synthtalk"))
    ap.add_argument("--probe-clips", type=int, default=20)
    ap.add_argument("--realspeech", type=Path, default=Path("data/realspeech"), help="long-audio join check")
    a = ap.parse_args(argv)
    from training.benchmark_sets import build_set
    root = build_set("homophones", a.sets_dir, sentences=PAIR_SENTENCES)
    pairs = load_pair_clips(root)
    probe, inventory = load_probe_clips(a.synthtalk, a.probe_clips)
    results = [analyse_checkpoint(p, pairs, probe) for p in a.checkpoints]
    a.out.mkdir(parents=True, exist_ok=True)
    plot_pca(results, a.out / "homophones_pca.png")
    from engine.fileio import atomic_write
    with atomic_write(a.out / "analysis.json", "w") as fh:
        json.dump({"phones": inventory, "results": [{k: v for k, v in r.items() if k != "_pca"} for r in results]},
                  fh, indent=1)
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k not in ("_pca", "lip_diff_mm")}))
    with_w2s = [p for p, r in zip(a.checkpoints, results) if r["wav2sem"]]
    if with_w2s:
        from engine.audio import load_audio
        from engine.inference import Animator
        wav = np.concatenate([load_audio(w) for w in sorted((a.realspeech / "wav").glob("*.wav"))])
        joins = long_audio_check(Animator.from_checkpoint(with_w2s[0], device="cpu"), wav)
        joins["checkpoint"] = str(with_w2s[0])
        print(json.dumps(joins))
        with atomic_write(a.out / "joins.json", "w") as fh:
            json.dump(joins, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
