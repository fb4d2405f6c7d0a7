"""SelfTalk (paper 002): masks, zero-initialised animator, losses of eqs. 13-17 on hand-made cases,
the commutative diagram's gradient flow, a few training steps and the checkpoint round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.checkpoint import build_model, load_checkpoint, model_class, save_checkpoint
from engine.models.base import StyleNotSupported
from engine.models.selftalk import SelfTalkConfig, SelfTalkModel
from engine.models.transformer_parts import alibi_slopes, alignment_mask, biased_causal_mask
from engine.topology import Topology
from training.recipes.base import recipe_for
from training.recipes.selftalk import (LipReadingInterpreter, SelfTalkRecipe, latent_consistency_loss,
                                       reconstruction_loss, text_consistency_loss, velocity_loss)

V, F = 24, 8


def tiny_topology() -> Topology:
    rng = np.random.default_rng(0)
    return Topology(rng.normal(size=(V, 3)).astype(np.float32) * 0.1, np.array([[0, 1, 2], [2, 3, 4]]),
                    masks={"lips": np.arange(6), "upper_face": np.arange(12, 20), "face": np.arange(V)}, fps=30.0)


def tiny_model(seed: int = 0) -> SelfTalkModel:
    torch.manual_seed(seed)
    cfg = SelfTalkConfig(feature_dim=F, d_model=16, num_heads=4, num_layers=1, period=4, dropout=0.0)
    return SelfTalkModel.from_config(cfg.to_dict(), tiny_topology())


# ---------------------------------------------------------------------- masks
def test_alibi_slopes_hand_values():
    assert alibi_slopes(4) == [0.25, 0.0625, 0.015625, 0.00390625]
    assert alibi_slopes(3) == [0.0625, 0.00390625, 0.25]  # 2 heads of 2^k, then every other slope of 4 heads


def test_biased_causal_mask_hand_values():
    m = biased_causal_mask(num_heads=4, length=5, period=2)
    assert m.shape == (4, 5, 5)
    # row 4, head 0 (slope 1/4): floor((4 - j) / 2) = 2, 1, 1, 0, 0
    assert m[0, 4].tolist() == [-0.5, -0.25, -0.25, 0.0, 0.0]
    assert m[3, 4, 0].item() == -2 * 0.00390625
    # future frames are blocked, the diagonal is free
    assert torch.isinf(m[:, 1, 2:]).all() and (m[:, 1, 2:] < 0).all()
    assert (torch.diagonal(m, dim1=1, dim2=2) == 0).all()


def test_alignment_mask_is_the_diagonal():
    m = alignment_mask(3)
    assert m.tolist() == [[False, True, True], [True, False, True], [True, True, False]]
    assert alignment_mask(4, 2)[3].tolist() == [True, False]  # rows past the memory keep its last frame


# ---------------------------------------------------------------------- animator
def test_zero_initialised_output_layer_gives_the_template():
    m = tiny_model().eval()
    tmpl = torch.randn(2, V, 3)
    out = m.predict(torch.randn(2, 9, F), tmpl, m.neutral_style().expand(2, 0))
    assert out.shape == (2, 9, V, 3)
    assert torch.equal(out, tmpl.unsqueeze(1).expand_as(out))


def test_animator_is_causal_in_self_attention_but_sees_the_audio():
    """Self-attention is masked; the cross-attention over the audio is not, so a change in the last
    audio frame may reach earlier frames only through the cross-attention (as in the release)."""
    m = tiny_model().eval()
    with torch.no_grad():
        torch.nn.init.normal_(m.vertex_map.weight, std=0.1)
    f = torch.randn(1, 10, F)
    out = m.offsets(f)
    assert out.abs().sum() > 0
    assert m.receptive_field is None and m.chunk_frames == 600 and m.chunk_overlap == 60


def test_style_reference_is_refused_and_bad_shapes_are_errors():
    m = tiny_model()
    with pytest.raises(StyleNotSupported):
        m.style_from_reference(torch.zeros(5, V, 3))
    with pytest.raises(ValueError, match="features must be"):
        m.offsets(torch.zeros(1, 4, F + 1))
    with pytest.raises(ValueError, match="template must be"):
        m.predict(torch.zeros(1, 4, F), torch.zeros(1, V + 1, 3))
    with pytest.raises(ValueError, match="unknown selftalk model options"):
        SelfTalkConfig.from_dict({"width": 3})


# ---------------------------------------------------------------------- losses (eqs. 13-17)
def test_reconstruction_and_velocity_losses_hand_computed():
    target = torch.zeros(1, 2, 2, 3)
    pred = torch.zeros(1, 2, 2, 3)
    pred[0, 1, 0] = torch.tensor([1.0, 2.0, 2.0])           # one vertex of frame 1 off by length 3
    assert reconstruction_loss(pred, target).item() == pytest.approx(9.0 / 4)   # 9 over 2 frames x 2 vertices
    assert velocity_loss(pred, target).item() == pytest.approx(9.0 / 2)        # one difference frame, 2 vertices


def test_latent_loss_hand_computed():
    a = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    b = torch.tensor([[[0.0, 0.0], [0.0, 3.0]]])
    assert latent_consistency_loss(a, b).item() == pytest.approx((1 + 4 + 9) / 4)


def test_ctc_loss_hand_computed():
    """T = 2 frames, vocabulary {blank, 1, 2}, target "1": paths (1,1), (0,1), (1,0)."""
    logits = torch.tensor([[[0.0, 1.0, -1.0], [0.5, 0.2, 0.0]]])
    p = torch.softmax(logits[0], dim=-1).numpy()
    prob = p[0, 1] * p[1, 1] + p[0, 0] * p[1, 1] + p[0, 1] * p[1, 0]
    loss = text_consistency_loss(logits, torch.tensor([[1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(prob), rel=1e-5)
    # two labels, same class twice, need a blank between them: impossible in 2 frames -> zeroed (zero_infinity)
    assert text_consistency_loss(logits, torch.tensor([[1, 1]]), torch.tensor([2])).item() == 0.0


# ---------------------------------------------------------------------- the training diagram
def make_batch(b: int = 4, t: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, t, F, generator=g)
    topo = tiny_topology()
    tmpl = torch.from_numpy(topo.vertices).expand(b, -1, -1).clone()
    proj = torch.randn(F, V * 3, generator=g) * 0.01
    verts = tmpl.unsqueeze(1) + (feats @ proj).unflatten(-1, (V, 3))
    phones = torch.randint(1, 40, (b, 6), generator=g)
    return {"features": feats, "vertices": verts, "template": tmpl, "subject": torch.zeros(b, dtype=torch.long),
            "phones": phones, "phone_lengths": torch.full((b,), 6)}


def build(options: dict | None = None):
    recipe = SelfTalkRecipe()
    recipe.configure(options or {})
    torch.manual_seed(0)
    cfg = SelfTalkConfig(feature_dim=F, d_model=16, num_heads=4, num_layers=1, period=4, dropout=0.0)
    model = recipe.build_model(cfg.to_dict(), tiny_topology())
    aux = recipe.build_aux(model, {})
    return recipe, model, aux


def test_recipe_is_registered_and_weights_are_the_papers():
    r = recipe_for("selftalk")
    assert isinstance(r, SelfTalkRecipe)
    c = r.options
    assert (c.w_rec, c.w_vel, c.w_lat, c.w_ctc) == (1000.0, 1000.0, 0.001, 0.0001)
    with pytest.raises(ValueError, match="w_text"):
        r.configure({"w_text": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        r.configure({"w_lat": -1.0})


def test_total_is_eq12_of_the_terms():
    recipe, model, aux = build()
    out = recipe.loss(model, aux, make_batch(), 0)
    t = out.terms
    expect = 1000 * t["rec"] + 1000 * t["vel"] + 0.001 * t["lat"] + 0.0001 * t["ctc"]
    assert out.total.item() == pytest.approx(expect, rel=1e-5)


def test_lip_losses_reach_the_animator_through_the_lip_reader():
    """No stop-gradient between animator and lip reader (Fig. 2): with only L_lat + L_ctc, the
    animator's output layer gets a gradient; the lip reader is trained by the same loss."""
    recipe, model, aux = build({"w_rec": 0.0, "w_vel": 0.0, "w_lat": 1.0, "w_ctc": 1.0})
    out = recipe.loss(model, aux, make_batch(), 0)
    out.total.backward()
    assert model.vertex_map.weight.grad.abs().sum() > 0
    assert aux["lip_reader"].to_latent.weight.grad.abs().sum() > 0  # (lip_map.weight sees zero input at init)


def test_ablations_drop_their_term():
    for name in ("vel", "lat", "ctc"):
        recipe, model, aux = build({f"w_{name}": 0.0})
        assert name not in recipe.loss(model, aux, make_batch(), 0).terms
    recipe, model, aux = build({"w_lat": 0.0, "w_ctc": 0.0})
    assert len(aux) == 0


def test_missing_phones_is_an_actionable_error():
    recipe, model, aux = build()
    batch = make_batch()
    del batch["phones"], batch["phone_lengths"]
    with pytest.raises(ValueError, match="w_ctc = 0"):
        recipe.loss(model, aux, batch, 0)


def test_lip_reader_needs_lip_vertices():
    with pytest.raises(ValueError, match="lips"):
        LipReadingInterpreter(np.zeros(0, dtype=np.int64), latent_dim=F)


@pytest.fixture
def one_thread():
    """Tiny ops on 2 shared cores: more threads only add contention (30 s -> 4 s here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_a_few_training_steps_lower_every_loss_term(one_thread):
    recipe, model, aux = build()
    params = list(model.parameters()) + list(aux.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    batch = make_batch()
    first = recipe.loss(model, aux, batch, 0).terms
    for step in range(40):
        out = recipe.loss(model, aux, batch, step)
        opt.zero_grad()
        out.total.backward()
        opt.step()
    last = recipe.loss(model, aux, batch, 40).terms
    for k in ("loss", "rec"):
        assert last[k] < 0.7 * first[k], (k, first[k], last[k])
    for k in ("lat", "ctc"):   # the lip reader learns too (random latent targets: slower)
        assert last[k] < first[k], (k, first[k], last[k])


# ---------------------------------------------------------------------- shipping
def test_checkpoint_round_trip(tmp_path):
    model = tiny_model(1).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.vertex_map.weight, std=0.05)
    path = save_checkpoint(tmp_path / "st.safetensors", model, config=model.checkpoint_config(),
                           topology=tiny_topology(), encoder={"kind": "whisper"}, fps=30.0, data_card={})
    assert model_class("selftalk") is SelfTalkModel
    loaded = build_model(load_checkpoint(path))
    f = torch.randn(1, 7, F)
    tmpl = torch.from_numpy(tiny_topology().vertices).unsqueeze(0)
    assert torch.allclose(loaded.predict(f, tmpl, loaded.neutral_style()[None]), model.predict(f, tmpl), atol=1e-6)


def test_shipped_size_fits_the_15mb_fp16_budget():
    """The configuration we train (d_model 128, 1 layer) on the 5,672-vertex SynthTalk head."""
    cfg = SelfTalkConfig()
    m = SelfTalkModel(cfg, torch.zeros(5672, 3))
    n = sum(p.numel() for p in m.parameters())
    assert n * 2 <= 15e6, n


# ---------------------------------------------------------------------- through the harness
@pytest.mark.slow
def test_trains_through_the_harness_and_ships(tmp_path, one_thread):
    """training.train with training/configs/selftalk.toml on a tiny corpus: every loss term of eq. 12
    is logged (phones reach L_ctc), the loss falls, and model.safetensors animates through the
    inference windowing; the lip reader stays out of the shipped checkpoint."""
    from pathlib import Path

    from engine.checkpoint import read_metadata
    from tests.test_train_support import ToneEncoder, make_tiny_corpus
    from training.evaluate import predict_clip
    from training.train import Trainer, load_config

    root = make_tiny_corpus(tmp_path / "corpus", n_subjects=4, n_sentences=4)
    cfg = load_config(Path(__file__).resolve().parents[1] / "training" / "configs" / "selftalk.toml",
                      [f'data.root="{root}"', 'model.params.encoders=[{kind="hama"}]', "model.params.d_model=32",
                       "recipe.lip_width=32", "recipe.lip_layers=1", "train.max_steps=60", "train.batch_size=4",
                       "train.crop_frames=48", "train.checkpoint_every=60", "train.num_threads=1",
                       'train.feature_cache=""', "optim.lr=3e-3"])
    tr = Trainer(cfg, tmp_path / "run", encoder_factory=lambda s: ToneEncoder())
    tr.fit()
    tr.finish(evaluate=False)
    rows = tr.log_rows
    assert {"rec", "vel", "lat", "ctc"} <= set(rows[0])
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], (rows[0]["loss"], rows[-1]["loss"])
    meta = read_metadata(tmp_path / "run" / "model.safetensors")
    assert meta["kind"] == "selftalk" and meta["half"] is True
    model = build_model(load_checkpoint(tmp_path / "run" / "model.safetensors"))
    assert not any(k.startswith("lip") for k in model.state_dict())
    clip = tr.corpus.splits["test"][0]
    pred = predict_clip(model, tr.clip_features(clip), clip.template)
    assert pred.shape == (clip.num_frames, model.num_vertices, 3) and np.isfinite(pred).all()


def test_lrp_threshold_is_one_percent_of_the_face_diagonal():
    from engine.metrics import lip_readability_percentage
    from engine.metrics_lrp import lrp_threshold
    t = np.zeros((5, 3))
    t[1] = [3.0, 4.0, 12.0]          # face box diagonal 13 ...
    t[4] = [100.0, 0.0, 0.0]         # ... this vertex is outside the face mask
    assert lrp_threshold(t, [0, 1, 2]) == pytest.approx(0.13)
    assert lrp_threshold(t) == pytest.approx(0.01 * np.linalg.norm([100.0, 4.0, 12.0]))
    with pytest.raises(ValueError, match="empty"):
        lrp_threshold(t, [])
    gt = np.zeros((2, 5, 3))
    pred = gt.copy()
    pred[0, 0, 0] = 0.2               # one of 2 frames x 2 lip vertices is beyond mu = 0.13
    assert lip_readability_percentage(pred, gt, [0, 1], lrp_threshold(t, [0, 1, 2])) == pytest.approx(75.0)
