"""What a run leaves behind for people: ``log.csv`` and the loss curve ``loss.png``.

The evaluation report (``metrics.json``, ``report.md``, error heatmap) is :mod:`training.evaluate`.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from engine.fileio import atomic_path, atomic_write

__all__ = ["write_log", "read_log", "plot_loss"]


def write_log(rows: list[dict[str, Any]], out: Path) -> None:
    """``<out>/log.csv`` (one column per logged term) and ``<out>/loss.png``."""
    if not rows:
        return
    keys = list(rows[0].keys())
    with atomic_write(out / "log.csv", "w") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    plot_loss(rows, out / "loss.png")


def read_log(out: Path) -> list[dict[str, Any]]:
    p = out / "log.csv"
    if not p.is_file():
        return []
    with open(p, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss curves PNG: one small log-scale panel per logged term (the total first), so terms of
    very different sizes (an l2 near 1, an l1 norm near 1000) each stay readable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    if not rows:
        return
    steps = [float(r["step"]) for r in rows]
    terms = [k for k in rows[0] if k not in ("step", "epoch", "time_s")]
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3.0), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], terms):
        vals = [float(r[key]) for r in rows]
        ax.plot(steps, vals, lw=1.5, color="C0" if key == "loss" else "C1")
        if all(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
