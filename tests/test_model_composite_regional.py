"""Equation-level checks of the composite & regional model (Wu et al. 2023) and its loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.losses import composite_regional_loss, reconstruction_loss, sparsity_loss
from engine.models.composite_regional import (CompositeRegionalConfig, CompositeRegionalModel, adain,
                                              instance_stats)

V = 50


def small_model(seed: int = 0, **kw) -> CompositeRegionalModel:
    torch.manual_seed(seed)
    cfg = CompositeRegionalConfig(feature_dim=8, channels=16, **kw)
    tmpl = torch.randn(V, 3)
    return CompositeRegionalModel(cfg, tmpl).eval()


def test_shapes_and_default_template():
    m = small_model()
    out = m(torch.randn(2, 37, 8))
    assert out.shape == (2, 37, V, 3)
    ref = torch.randn(2, 11, V, 3)
    assert m(torch.randn(2, 37, 8), reference=ref).shape == (2, 37, V, 3)
    assert m.decoder_radius == 16  # 8 blocks x 2 kernel-3 convs


def test_output_equals_template_when_W_is_zero():
    """Eq. 3: S_hat = S_bar + alpha W Z_pred; with W = 0 the template comes out exactly."""
    m = small_model()
    with torch.no_grad():
        m.W.zero_()
    tmpl = torch.randn(3, V, 3)
    out = m(torch.randn(3, 20, 8), template=tmpl)
    assert torch.equal(out, tmpl.unsqueeze(1).expand_as(out))


def test_alpha_scales_the_displacement_linearly():
    """Doubling alpha doubles S_hat - S_bar (everything before the W decode is alpha-free)."""
    a = small_model(alpha=0.1)
    b = small_model(alpha=0.2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 25, 8)
    da = a(x) - a.template
    db = b(x) - b.template
    torch.testing.assert_close(db, 2 * da, rtol=1e-5, atol=1e-6)


def test_decode_is_W_transpose_of_embed():
    """One W: embed(s) = W^T s and decode(z) = W z, i.e. <embed(s), z> == <s, decode(z)>."""
    m = small_model()
    s = torch.randn(V, 3)
    z = torch.randn(16)
    lhs = (m.embed(s) * z).sum()
    rhs = (s * m.decode(z)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-5, atol=1e-5)


def test_adain_hand_computed():
    """Eq. 2 on a 1-channel, 4-frame signal, worked out by hand."""
    z = torch.tensor([[[1.0], [3.0], [5.0], [7.0]]])       # mean 4, population std sqrt(5)
    sigma_p = torch.tensor([[2.0]])
    mu_p = torch.tensor([[10.0]])
    out = adain(z, sigma_p, mu_p)
    s = np.sqrt(5.0 + 1e-5)
    expected = torch.tensor([10 + 2 * (-3) / s, 10 + 2 * (-1) / s, 10 + 2 * 1 / s, 10 + 2 * 3 / s],
                            dtype=torch.float32).reshape(1, 4, 1)
    torch.testing.assert_close(out, expected)
    mu, sig = instance_stats(z)
    assert float(mu) == 4.0 and abs(float(sig) - s) < 1e-6


def test_reference_normalisation_removes_identity():
    """Eq. 1: a reference shifted by any constant face (another identity) gives the same style."""
    m = small_model()
    ref = torch.randn(1, 16, V, 3)
    other_identity = torch.randn(1, 1, V, 3) * 5
    torch.testing.assert_close(m.style_statistics(ref), m.style_statistics(ref + other_identity),
                               rtol=1e-4, atol=1e-4)


def test_style_changes_output_and_neutral_is_used_without_reference():
    m = small_model()
    x = torch.randn(1, 30, 8)
    with torch.no_grad():
        m.style_to_modulation.weight.normal_()  # make the modulation depend on the style
    still = m(x, reference=torch.zeros(1, 12, V, 3) + m.template)
    moving = m(x, reference=torch.randn(1, 12, V, 3))
    assert (still - moving).abs().max() > 1e-4
    neutral = m(x)
    explicit = m(x, style_stats=m.neutral_style().unsqueeze(0))
    torch.testing.assert_close(neutral, explicit)


def test_loss_is_eq4_hand_computed():
    """L = mean_t sum_v ||S_hat - S||^2 (in normalised units) + beta ||W||_1."""
    pred = torch.zeros(1, 2, 2, 3)
    gt = torch.zeros(1, 2, 2, 3)
    gt[0, 0, 0, 0] = 1.0     # frame 0: squared error 1
    gt[0, 1, 1, 2] = 2.0     # frame 1: squared error 4
    assert float(reconstruction_loss(pred, gt)) == pytest.approx(2.5)
    assert float(reconstruction_loss(pred, gt, scale=2.0)) == pytest.approx(2.5 / 4)
    assert float(reconstruction_loss(pred, gt, squared=False)) == pytest.approx(1.5)
    W = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert float(sparsity_loss(W)) == pytest.approx(3.5)
    m = small_model()
    p, g = torch.randn(1, 4, V, 3), torch.randn(1, 4, V, 3)
    terms = composite_regional_loss(m, p, g, beta=1e-4)
    expected = ((p - g) / m.coord_scale).pow(2).sum((-1, -2)).mean() + 1e-4 * m.W.abs().sum()
    torch.testing.assert_close(terms.total, expected)


def test_default_size_fits_the_25mb_budget():
    """256 channels, V=5023: the fp16 checkpoint stays under 25 MB."""
    cfg = CompositeRegionalConfig()
    m = CompositeRegionalModel(cfg, torch.zeros(5023, 3))
    n = sum(t.numel() for t in m.state_dict().values())
    assert n * 2 < 25e6, n


def test_registered_and_round_trips_through_checkpoint(tmp_path):
    from engine.checkpoint import build_model, load_checkpoint, save_checkpoint
    from engine.topology import Topology

    verts = np.random.default_rng(0).standard_normal((V, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype=np.int64)
    topo = Topology(vertices=verts, faces=faces, masks={"lips": np.arange(5), "upper_face": np.arange(5, 10),
                                                        "face": np.arange(V)})
    m = CompositeRegionalModel.from_config({"feature_dim": 8, "channels": 16}, topo)
    with torch.no_grad():
        m.neutral_style().normal_()
    save_checkpoint(tmp_path / "m.safetensors", m, config=m.checkpoint_config(), topology=topo,
                    encoder={"kind": "hama", "name_or_path": None, "layer": -1}, fps=30.0, data_card={})
    back = build_model(load_checkpoint(tmp_path / "m.safetensors"))
    x = torch.randn(1, 9, 8)
    torch.testing.assert_close(back(x), m.eval()(x))
