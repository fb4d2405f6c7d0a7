"""Forced alignment for SynthTalk (the aligner itself is :mod:`engine.align`), and a comparison of
two phone timelines.

Used (1) to time the piper voice, whose own durations are loose, (2) to time real recorded speech
for the real-speech evaluation set, and (3) to check the exact timings the rule-based engines report.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.align import AlignmentError, Phone, align, fill_silence

__all__ = ["AlignmentError", "Phone", "TimingAgreement", "align", "compare_timings", "fill_silence"]


@dataclass
class TimingAgreement:
    """Boundary agreement between two phone timelines (seconds)."""

    matched: int          # phone starts compared (same label, matched by edit-distance alignment)
    mean_abs: float
    median_abs: float
    p90_abs: float
    mean_signed: float    # positive: ``test`` boundaries later than ``ref``


def compare_timings(test: list[Phone], ref: list[Phone]) -> TimingAgreement:
    """Match the non-silence phones of ``test`` and ``ref`` by label with a minimum edit-distance
    alignment, then compare the start times of matched phones."""
    a = [p for p in test if p[0] != "sil"]
    b = [p for p in ref if p[0] != "sil"]
    n, m = len(a), len(b)
    cost = np.zeros((n + 1, m + 1), np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = 0 if a[i - 1][0] == b[j - 1][0] else 1
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + sub)
    i, j, diffs = n, m, []
    while i > 0 and j > 0:
        sub = 0 if a[i - 1][0] == b[j - 1][0] else 1
        if cost[i, j] == cost[i - 1, j - 1] + sub:
            if sub == 0:
                diffs.append(a[i - 1][1] - b[j - 1][1])
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    if not diffs:
        return TimingAgreement(0, float("nan"), float("nan"), float("nan"), float("nan"))
    d = np.asarray(diffs)
    ad = np.abs(d)
    return TimingAgreement(len(d), float(ad.mean()), float(np.median(ad)), float(np.percentile(ad, 90)), float(d.mean()))
