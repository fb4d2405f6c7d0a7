"""The benchmark's characters set: template frames carried onto test characters and scored there."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.retarget_common import CELL, template
from training.benchmark import Method
from training.benchmark_characters import run_characters, score
from training.characters import rig_speech


def _clip():
    frames, phones, rest = rig_speech(30.0)
    return SimpleNamespace(name="rig_speech", gt=frames, template=rest, phones=phones)


@pytest.mark.slow
def test_characters_set_scores_the_retarget_on_the_character():
    c = _clip()
    still = Method("still", lambda clip: np.repeat(clip.template[None], len(clip.gt), 0))
    res = run_characters([c], [still], template(), 30.0, lambda s: None, names=("remeshed", "cm_yup"), cell=CELL)
    rows = res["rows"]
    assert set(rows) == {f"{m} → {n}" for m in ("ground_truth_retargeted", "still") for n in ("remeshed", "cm_yup")}
    for n in ("remeshed", "cm_yup"):
        gt, st = rows[f"ground_truth_retargeted → {n}"], rows[f"still → {n}"]
        assert gt["n_bilabial"] == 8
        # the rig's closures survive the retarget onto a head of other topology (cm: units undone)
        assert gt["closure_any"] == 1.0 and gt["aperture_corr"] > 0.95
        assert 0.8 < gt["open_gap_ratio"] < 1.25
        # a face that never moves is further from the truth than the retargeted truth; the remesh
        # leaves its contact rows ~2 mm apart at rest (over the 1.2 mm threshold), so only the
        # retarget's contact term makes them meet: a still face closes none and never opens
        assert st["lip_mean"] > 2 * gt["lip_mean"]
        assert st["closure_any"] == 0.0 and st["open_gap_ratio"] < 0.2
    # the centimetre head scores like the metre one: errors are reported after undoing the units
    a, b = rows["still → cm_yup"]["lip_mean"], rows["still → remeshed"]["lip_mean"]
    assert 0.5 * b < a < 2 * b, (a, b)


def test_score_is_zero_against_itself_and_counts_units():
    import tempfile
    from pathlib import Path

    from training.benchmark_characters import prepare

    c = _clip()
    with tempfile.TemporaryDirectory() as td:
        t = prepare("cm_yup", template(), 30.0, Path(td), CELL)
    gt = t.character.project(c.gt, c.template)
    per_clip, _ = score(gt, gt, t, c.phones, 30.0)
    assert per_clip["lve_l2"] == 0.0 == per_clip["lip_mean"] and per_clip["aperture_corr"] > 0.999
    shifted = gt.copy()
    shifted[:, t.lips, 1] += 2.0          # 2 character units = 2 cm = 0.02 m on every lip vertex
    per_clip, _ = score(shifted, gt, t, c.phones, 30.0)
    assert np.isclose(per_clip["lve_l2"], 0.02) and np.isclose(per_clip["lip_mean"], 0.02)
