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
    """Loss curve PNG (log scale): the total and every logged term -- a glance tells whether the
    run is converging and which term dominates."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    steps = [float(r["step"]) for r in rows]
    terms = [k for k in rows[0] if k not in ("step", "epoch", "time_s")] if rows else []
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key in terms:
        vals = [float(r[key]) for r in rows]
        if all(v > 0 for v in vals):       # log axis: skip terms that reach zero or go negative
            ax.plot(steps, vals, label=key, lw=2.0 if key == "loss" else 1.0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
