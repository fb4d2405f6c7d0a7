"""Bugs a review of the trainer found, each pinned by a test that failed before the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint
from tests.test_train_harness import _LearnableTone, run, tiny_cfg
from tests.test_train_support import make_tiny_corpus
from training.recipes.composite_regional import neutral_style_of


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny") / "corpus", n_subjects=6, n_sentences=6)


def test_style_reference_none_ships_the_style_training_used(corpus, tmp_path):
    """Trained without references, the modulation only ever saw the placeholder neutral style: the
    shipped neutral style must be exactly that vector, not statistics of an untrained style encoder."""
    torch.set_num_threads(1)
    tr = run(tiny_cfg(corpus, 'recipe.style_reference="none"', "train.max_steps=10", "train.checkpoint_every=5",
                      "eval.max_clips=1", "eval.baselines=false", "eval.heatmap=false"), tmp_path / "none")
    used = tr.model.neutral_style().clone()
    c = tr.model.config.channels
    torch.testing.assert_close(used, torch.cat([torch.zeros(c), torch.ones(c)]))
    tr.finish()
    for name in ("model.safetensors", "last.safetensors"):
        shipped = build_model(load_checkpoint(tmp_path / "none" / name)).neutral_style()
        torch.testing.assert_close(shipped, used, atol=1e-3, rtol=0)   # model.safetensors is fp16


def test_killed_runs_checkpoint_carries_the_neutral_style(corpus, tmp_path):
    """last.safetensors written mid-run (what a killed run leaves) holds the training-set mean style
    of its own weights, not the placeholder."""
    torch.set_num_threads(1)
    tr = run(tiny_cfg(corpus, "train.max_steps=6", "train.checkpoint_every=3"), tmp_path / "killed")
    ck = load_checkpoint(tmp_path / "killed" / "last.safetensors")
    assert ck.data_card["steps"] == 6
    m = build_model(ck)
    expected = neutral_style_of(m, tr.train_clips, torch.device("cpu"))
    torch.testing.assert_close(m.neutral_style(), expected, atol=1e-5, rtol=1e-5)
    c = m.config.channels
    assert not torch.allclose(m.neutral_style(), torch.cat([torch.zeros(c), torch.ones(c)]))


def test_evaluate_loads_finetuned_encoder_and_scores_its_features(corpus, tmp_path, monkeypatch):
    """python -m training.evaluate on a checkpoint whose encoder was fine-tuned: loads (no strict-load
    error on encoders.*) and scores the fine-tuned encoder's features, not cached frozen ones."""
    import engine.encoders
    from engine.metrics import evaluate_all
    from training.evaluate import main, predict_clip
    from training.features import clip_features_live

    torch.set_num_threads(1)
    cfg = tiny_cfg(corpus, "train.epochs=2", "train.warmup_epochs=1", "train.max_steps=6",
                   "train.checkpoint_every=1000", "eval.splits=[\"val\"]", "eval.baselines=false",
                   "eval.heatmap=false")
    from training.trainer import Trainer
    tr = Trainer(cfg, tmp_path / "ft", encoder_factory=lambda s: _LearnableTone())
    tr.fit()
    with torch.no_grad():  # make the fine-tuned encoder clearly differ from the frozen one
        tr.model.encoders[0].gain.mul_(torch.linspace(0.0, 2.0, 16))
    tr.save_checkpoint(tmp_path / "ft.safetensors", half=False)
    (tmp_path / "ft.toml").write_text((tmp_path / "ft" / "config.toml").read_text())
    monkeypatch.setattr(engine.encoders, "build_encoder", lambda spec: _LearnableTone())
    assert main(["--checkpoint", str(tmp_path / "ft.safetensors"), "--config", str(tmp_path / "ft.toml"),
                 "--out", str(tmp_path / "eval")]) == 0
    import json
    got = json.loads((tmp_path / "eval" / "metrics.json").read_text())["summary"]["val/mve"]
    masks = tr.corpus.topology.masks
    clips = tr.corpus.splits["val"]

    def mve(features_of) -> float:
        rows = []
        for c in clips:
            pred = predict_clip(tr.model.eval(), features_of(c), c.template)
            rows.append(evaluate_all(pred, np.asarray(c.vertices), c.template, masks)["mve"])
        return float(np.mean(rows))

    live = mve(lambda c: clip_features_live(tr.model.encoders, c.load_wav(), c.num_frames))
    frozen = mve(lambda c: tr.cache.load(c, c.num_frames))
    assert got == pytest.approx(live, rel=1e-5)
    assert abs(live - frozen) > 1e-3 * live


def test_evaluation_pools_lve_sq_over_frames():
    """Evaluation tables report CodeTalker's pooled LVE (frames of all clips), per-clip mean beside it."""
    from training.evaluate import aggregate
    agg = aggregate([{"lve_sq": 4.0, "frames": 1.0, "mve": 1.0}, {"lve_sq": 1.0, "frames": 3.0, "mve": 3.0}])
    assert agg["lve_sq"] == pytest.approx(1.75) and agg["lve_sq_clip_mean"] == pytest.approx(2.5)
    assert agg["mve"] == pytest.approx(2.0) and agg["clips"] == 2.0
