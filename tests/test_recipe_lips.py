"""The contact-aware lip recipe (training/recipes/composite_regional_lips.py)."""
import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from training.recipes.base import recipe_for
from training.recipes.composite_regional_lips import lip_contact_terms


def test_lip_contact_terms_by_hand():
    # pair 0: predicted gap 1 (target 0, closed -> weight 1 + 4); pair 1: gap 0.5 as the target,
    # but the predicted lips cross by 0.5 along Z (penetration 0.5)
    pred = torch.tensor([[[[0, 0, 1.0], [1, 0, -0.5], [0, 0, 0], [1, 0, 0]]]])
    target = torch.tensor([[[[0, 0, 0.0], [1, 0, 0.5], [0, 0, 0], [1, 0, 0]]]])
    gap, pen = lip_contact_terms(pred, target, torch.tensor([0, 1]), torch.tensor([2, 3]), threshold=0.1,
                                 scale=2.0, contact_weight=4.0)
    assert gap.item() == 5.0 / 4.0          # (5 * 1^2 + 1 * 0^2) / scale^2
    assert pen.item() == 0.25 / 4.0         # relu(-(-0.5))^2 / scale^2


def _recipe(**options):
    r = recipe_for("composite_regional_lips")
    r.configure({"style_reference": "self", **options})
    return r


@pytest.mark.slow
def test_init_from_loads_the_checkpoint_exactly_and_the_lip_term_trains():
    ckpt = load_checkpoint("engine/assets/default.safetensors")
    # a heavy lip weight so that term dominates the few steps below
    r = _recipe(init_from="engine/assets/default.safetensors", lip_gap_weight=1000.0)
    model = r.build_model({}, ckpt.topology)
    r.prepare(model, np.asarray(ckpt.topology.vertices)[None])
    state = model.state_dict()
    for k, v in ckpt.state_dict.items():   # checkpoints before the model interface named it neutral_style
        torch.testing.assert_close(state[k if k != "neutral_style" else "neutral_style_stats"], v.float())
    assert model.checkpoint_config()["channels"] == ckpt.config["channels"]
    # a few steps on one crop lower the lip-gap term (the gradient reaches the model)
    torch.manual_seed(0)
    T, V = 16, ckpt.topology.num_vertices
    tmpl = torch.as_tensor(np.asarray(ckpt.topology.vertices), dtype=torch.float32)
    verts = tmpl.expand(1, T, V, 3).clone()          # target: the neutral face, lips closed
    batch = {"features": torch.randn(1, T, ckpt.config["feature_dim"]), "vertices": verts, "template": tmpl[None]}
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    first = None
    for step in range(8):
        out = r.loss(model, torch.nn.ModuleDict(), batch, step)
        first = out.terms["lip_gap"] if first is None else first
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert np.isfinite(out.terms["lip_gap"]) and out.terms["lip_gap"] < first
