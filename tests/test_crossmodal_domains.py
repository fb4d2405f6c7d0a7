"""Paper 001's two image domains: both render, their looks differ, neutral = all controls at zero."""
from __future__ import annotations

import json

import numpy as np
import pytest

from training.crossmodal.config import RenderConfig, load_stage_config
from training.crossmodal.domains import (
    LOOK_R,
    LOOK_S,
    MOUTH_CONTROLS,
    mouth_camera,
    render_look,
    sample_sparse_controls,
)
from training.synthtalk.head import build_head
from training.synthtalk.rig import CONTROLS, Rig


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A SynthTalk corpus of 8 clips (train speakers 0 and 1, test speaker 10): CI has no `make data`."""
    from training.synthtalk import generate as G

    out = tmp_path_factory.mktemp("xm_corpus")
    G.generate(out, G.preset("small", clips=8), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def rig():
    return Rig(build_head(10))


def _render(rig, W, look, size=32):
    cam = mouth_camera(rig.template, rig.head.topology, look, size)
    return render_look(rig.pose(W), cam, look, size, np.random.default_rng(0))


def test_neutral_is_all_controls_at_zero(rig):
    assert np.array_equal(rig.pose(np.zeros((1, 13)))[0], rig.template.astype(np.float32))
    cam = mouth_camera(rig.template, rig.head.topology, LOOK_S, 32)
    a = render_look(rig.template[None], cam, LOOK_S, 32)
    assert np.array_equal(a, _render(rig, np.zeros((1, 13)), LOOK_S))


def test_both_domains_render_a_mouth_that_opens(rig):
    W = np.zeros((2, 13))
    W[1, CONTROLS.index("jaw_open")] = 0.8
    for look in (LOOK_R, LOOK_S):
        img = _render(rig, W, look)
        assert img.shape == (2, 32, 32, 3) and img.dtype == np.uint8
        assert img[0].std() > 10                                   # a face, not a blank frame
        centre = (slice(8, 28), slice(8, 24))
        diff = np.abs(img[1].astype(int) - img[0].astype(int))[centre].mean()
        assert diff > 10, f"{look.name}: opening the jaw changed the mouth region by only {diff:.1f} levels"


def test_the_two_looks_differ_on_the_same_pose(rig):
    W = np.zeros((1, 13))
    r, s = _render(rig, W, LOOK_R)[0].astype(float), _render(rig, W, LOOK_S)[0].astype(float)
    assert np.abs(r - s).mean() > 40                               # palette, light, background, camera
    assert r[..., 0].mean() > r[..., 2].mean() and s[..., 2].mean() > s[..., 0].mean()   # warm skin vs cool CG


def test_r_noise_is_seeded_and_s_is_clean(rig):
    W = np.zeros((1, 13))
    assert np.array_equal(_render(rig, W, LOOK_S), _render(rig, W, LOOK_S))
    cam = mouth_camera(rig.template, rig.head.topology, LOOK_R, 32)
    a = render_look(rig.template[None], cam, LOOK_R, 32, np.random.default_rng(1))
    b = render_look(rig.template[None], cam, LOOK_R, 32, np.random.default_rng(2))
    assert not np.array_equal(a, b) and np.abs(a.astype(int) - b.astype(int)).mean() < 6


def test_sparse_controls_are_sparse_mouth_only_and_in_range():
    W = sample_sparse_controls(400, np.random.default_rng(0))
    active = (W > 0).sum(1)
    assert W.min() >= 0 and W.max() <= 1
    assert active.max() <= 6 and (active == 0).mean() < 0.15 and (active >= 3).mean() > 0.3
    assert np.all(W[:, len(MOUTH_CONTROLS):] == 0)                # blinks and brows never set


def test_stage_config_rejects_unknown_keys_and_wrong_types(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[renders]\nsize = 32\nbogus = 1\n")
    with pytest.raises(ValueError, match="bogus"):
        load_stage_config(RenderConfig, p)
    with pytest.raises(ValueError, match="size must be int"):
        load_stage_config(RenderConfig, None, ['size="big"'])
    assert load_stage_config(RenderConfig, None, ["s_train=7"]).s_train == 7


@pytest.mark.slow
def test_build_renders_writes_both_domains_with_their_meshes(tmp_path, rig, tiny_corpus):
    from training.crossmodal.renders import build_renders, load_split
    cfg = RenderConfig(out=str(tmp_path / "r"), data_root=str(tiny_corpus), size=32, r_clips_per_identity=1,
                       r_test_identity=10, r_test_clips=1, s_train=6, s_val=2)
    counts = build_renders(cfg)
    s = load_split(cfg.out, "S_train")
    assert s["images"].shape == (6, 32, 32, 3) and s["controls"].shape == (6, 13)
    # each S image is exactly its controls' mesh rendered with the S look
    again = _render(rig, s["controls"][:1], LOOK_S)
    assert np.array_equal(again[0], s["images"][0])
    r = load_split(cfg.out, "R_train")
    assert len(r["images"]) == counts["R_train"] == int(r["num_frames"].sum())
    assert list(r["subjects"]) == ["synth_00"]
    n = load_split(cfg.out, "neutral")
    assert n["S"].shape == (32, 32, 3) and n["R"].shape == (2, 32, 32, 3)
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["config"]["s_identity"] == 10
