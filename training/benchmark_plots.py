"""Pictures for the lip benchmark (called by :mod:`training.benchmark`).

* ``closure_bars.png``  -- per set, closure rate at /p/, /b/, /m/ for every method (pale: anywhere
  inside the phone, hatched: at the phone midpoint); ground truth for reference; mean_face left out.
* ``contact_sheet_<set>.png`` -- one tongue-twister, mouth close-ups of ground truth and every method
  on the same frames (each bilabial's midpoint), rendered in one call so they share one camera.
* ``lip_gap_<set>.png`` -- the inner-lip gap over time of ground truth and every method, the
  bilabial phones shaded and the contact threshold drawn.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engine.fileio import atomic_path

MM = 1000.0


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def closure_bars(results: dict, out: Path) -> Path:
    from matplotlib.figure import Figure

    sets = [s for s in results["sets"] if any("closure_by_phone" in r for r in s["rows"].values())]
    fig = Figure(figsize=(13, 2.6 * len(sets) + 0.8))
    labels = ["p", "b", "m"]
    for k, s in enumerate(sets):
        ax = fig.add_subplot(len(sets), 1, k + 1)
        # mean_face is left out: its lips never open, so it "closes" every bilabial trivially
        rows = {m: r for m, r in s["rows"].items() if "closure_by_phone" in r and m != "mean_face"}
        width = 0.8 / len(rows)
        cmap = __import__("matplotlib").colormaps["tab10"]
        for j, (m, r) in enumerate(rows.items()):
            xs = np.arange(len(labels)) + (j - (len(rows) - 1) / 2) * width
            by = r["closure_by_phone"]
            anyw = [by.get(lab, {}).get("any", np.nan) for lab in labels]
            mid = [by.get(lab, {}).get("mid", np.nan) for lab in labels]
            col = "black" if m == "ground_truth" else cmap(j % 10)
            ax.bar(xs, anyw, width * 0.95, color=col, alpha=0.35 if m != "ground_truth" else 0.15, label=m)
            ax.bar(xs, mid, width * 0.95, color=col, edgecolor="white", hatch="//")
        n = {lab: rows["ground_truth"]["closure_by_phone"].get(lab, {}).get("n", 0) for lab in labels}
        ax.set_xticks(range(len(labels)), [f"/{lab}/ (n={n[lab]})" for lab in labels])
        ax.set_ylim(0, 1.05)
        ax.axhline(0.9, color="k", lw=0.6, ls="--")
        ax.axhline(0.8, color="k", lw=0.6, ls=":")
        ax.set_ylabel("closure rate")
        ax.set_title(f"{s['set']}: pale = anywhere in phone, hatched = at midpoint "
                     "(targets 0.90 / 0.80 dashed / dotted)", fontsize=9)
        if k == 0:
            ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.subplots_adjust(right=0.78, hspace=0.45)
    return _save(fig, out / "closure_bars.png")


def mouth_view(topo, masks: dict, template: np.ndarray) -> SimpleNamespace:
    """The topology with its framing region set to the mouth (vertices within 3.5 cm of the lips)."""
    inner = np.concatenate([masks["lip_upper_inner"], masks["lip_lower_inner"]])
    centre = template[inner].mean(axis=0)
    near = np.nonzero(np.linalg.norm(template - centre, axis=1) < 0.035)[0]
    return SimpleNamespace(faces=topo.faces, masks={**topo.masks, "face": near})


def contact_sheet(set_name: str, clip, preds: dict[str, np.ndarray], topo, masks: dict, fps: float,
                  out: Path, max_cols: int = 8) -> Path:
    from matplotlib.figure import Figure

    from engine import metrics as M
    from engine.render import render_frames

    spans = M.phone_frame_spans(clip.phones, M.BILABIALS, fps, len(clip.gt))
    mids = [m for _, m, _ in spans]
    if len(mids) > max_cols:
        mids = [mids[i] for i in np.linspace(0, len(mids) - 1, max_cols).round().astype(int)]
    rows = {"ground truth": clip.gt, **preds}
    stack = np.concatenate([np.asarray(v, dtype=np.float32)[mids] for v in rows.values()])
    imgs = render_frames(stack, mouth_view(topo, masks, clip.template), size=150, supersample=2)
    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    nr, nc = len(rows), len(mids)
    fig = Figure(figsize=(1.5 * nc + 1.6, 1.55 * nr + 0.6))
    fig.suptitle(f"{set_name}: \"{clip.text}\" -- every method on the frames at bilabial midpoints", fontsize=9)
    gs = fig.add_gridspec(nr, nc, wspace=0.03, hspace=0.25, left=0.13, right=0.99, top=0.9, bottom=0.02)
    labs = {m: lab for (_, m, _), lab in zip(spans, [p[0] for p in clip.phones if M._phone_label(p[0]) in M.BILABIALS])}
    for i, (name, frames) in enumerate(rows.items()):
        gap = M.inner_lip_gap(np.asarray(frames)[mids], up, lo) * MM
        for j, f in enumerate(mids):
            ax = fig.add_subplot(gs[i, j])
            ax.imshow(imgs[i * nc + j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{f / fps:.2f}s /{labs.get(f, '?').lower()}/ {gap[j]:.1f}mm", fontsize=6)
            if j == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    return _save(fig, out / f"contact_sheet_{set_name}.png")


def lip_gap_plot(set_name: str, clip, preds: dict[str, np.ndarray], masks: dict, fps: float,
                 threshold: float, out: Path) -> Path:
    from matplotlib.figure import Figure

    from engine import metrics as M

    up, lo = masks["lip_upper_inner"], masks["lip_lower_inner"]
    fig = Figure(figsize=(12, 4))
    ax = fig.add_subplot(1, 1, 1)
    for lab, s, e in clip.phones:
        if M._phone_label(lab) in M.BILABIALS:
            ax.axvspan(s, e, color="#d62728", alpha=0.15)
            ax.text((s + e) / 2, 0.98, lab.lower(), transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7)
    t = np.arange(len(clip.gt)) / fps
    ax.plot(t, M.inner_lip_gap(clip.gt, up, lo) * MM, color="k", lw=2.2, label="ground truth")
    for name, frames in preds.items():
        g = M.inner_lip_gap(frames, up, lo) * MM
        ax.plot(np.arange(len(g)) / fps, g, lw=1.1, label=name, ls="--" if "+lipclose" in name else "-")
    ax.axhline(threshold * MM, color="#d62728", lw=0.8, ls=":", label=f"contact < {threshold * MM:.1f} mm")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("inner-lip gap (mm)")
    ax.set_title(f"{set_name}: \"{clip.text}\" (red bands: /p b m/)", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper right", bbox_to_anchor=(1.0, 0.9))
    ax.set_xlim(0, t[-1])
    fig.tight_layout()
    return _save(fig, out / f"lip_gap_{set_name}.png")


def make_plots(results: dict, sets: dict, methods: list, topo, masks: dict, fps: float, out: Path) -> list[Path]:
    from engine.metrics import default_closure_threshold

    paths = [closure_bars(results, out)]
    skip = {"mean_face"}   # a still face adds nothing to these pictures
    for name in ("bilabial", "realspeech"):
        if name not in sets:
            continue
        clips = sets[name]
        clip = max(clips[: min(4, len(clips))], key=lambda c: sum(p[0].lower() in ("p", "b", "m") for p in c.phones))
        preds: dict[str, np.ndarray] = {}
        for m in methods:
            if m.name in skip:
                continue
            if m.base is not None:
                m_base = next(b for b in methods if b.name == m.base)
                m_base.cache[clip.name] = preds[m.base]
            preds[m.name] = m.predict(clip)[: len(clip.gt)]
            m.cache.pop(clip.name, None)
        for b in methods:
            b.cache.pop(clip.name, None)
        thr = default_closure_threshold(clip.template, masks.get("face"))
        if name == "bilabial":
            paths.append(contact_sheet(name, clip, preds, topo, masks, fps, out))
        paths.append(lip_gap_plot(name, clip, preds, masks, fps, thr, out))
    return paths
