"""The lip benchmark end to end (``python -m training.benchmark --quick``) on a tiny corpus."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import benchmark as B
from training.benchmark_sets import HELDOUT_EXACT_VOICES, SETS
from training.synthtalk.text import cmudict, words_of
from training.synthtalk.voices import voice_by_name


def test_every_tongue_twister_word_is_in_cmudict_and_sets_are_dense():
    d = cmudict()
    for name, sentences in SETS.items():
        for s in sentences:
            missing = [w for w in words_of(s) if w not in d]
            assert not missing, f"{name}: {s!r} has words outside cmudict: {missing}"
    # density: the set's own class is at least 15 % of its phones
    classes = {"bilabial": {"P", "B", "M"}, "labiodental": {"F", "V"}, "rounding": {"UW", "OW", "W"}}
    for name, want in classes.items():
        phones = [p.rstrip("012") for s in SETS[name] for w in words_of(s) for p in d[w][0]]
        assert sum(p in want for p in phones) / len(phones) >= 0.15, name


def test_tongue_twisters_use_held_out_voices_with_exact_timings():
    for v in HELDOUT_EXACT_VOICES:
        spec = voice_by_name(v)
        assert spec.held_out and spec.engine != "piper"


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    from training.synthtalk import generate as G

    out = tmp_path_factory.mktemp("bench_corpus")
    G.generate(out, G.preset("small", clips=4), workers=1, progress=False)
    return out


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = B.main(["--quick", "--sets", "synthtalk", "bilabial", "--synthtalk", str(tiny_corpus),
                 "--sets-dir", str(tmp_path / "sets"), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    ckpts = sorted(p.stem for p in Path("engine/assets").glob("*.safetensors"))
    assert "default" in ckpts
    names = res["methods"]
    for c in ckpts:                       # every shipped checkpoint, and its post-processed row apart
        assert c in names and f"{c}+lipclose" in names
    assert {"mean_face", "jaw_from_loudness", "rig_aligned"} <= set(names)
    bil = next(s for s in res["sets"] if s["set"] == "bilabial")
    assert bil["clips"] == 2
    gt, model = bil["rows"]["ground_truth"], bil["rows"]["default"]
    # the rig closes every bilabial of its own ground truth; the metrics must say so
    assert gt["closure_mid"] == 1.0 and gt["closure_any"] == 1.0 and gt["lve_l2"] == 0.0
    for key in ("lve_l2", "lve_sq", "mve", "fdd", "f_dtw_lips", "lrp", "aperture_corr", "closure_mid",
                "closure_any", "open_gap", "open_gap_ratio", "upper_face_error", "rtf", "rounding_narrow"):
        assert key in model and np.isfinite(model[key]), key
    assert 0 <= model["closure_mid"] <= model["closure_any"] <= 1
    assert model["rtf"] > 0
    # a still face is a worse lip animation than the model, and a rig on aligned phones better
    assert bil["rows"]["mean_face"]["lve_l2"] > model["lve_l2"] > bil["rows"]["rig_aligned"]["lve_l2"]
    assert "| default+lipclose |" in table and "closure any" in table


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        B.main(["--sets", "bilabial", "--checkpoints", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="make data"):
        B.main(["--sets", "synthtalk", "--synthtalk", str(tmp_path / "none"), "--checkpoints", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="unknown set"):
        B.main(["--sets", "vocaset", "--checkpoints", "--out", str(tmp_path)])
