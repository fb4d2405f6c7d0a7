"""Paper 001's transcoder losses (eqs. 1-5) on hand-made cases, and one training step of the transcoder."""
from __future__ import annotations

import pytest
import torch

from training.crossmodal import losses as L
from training.crossmodal.config import TranscoderConfig
from training.crossmodal.transcoder import Transcoder, TranscoderBatch


@pytest.fixture(autouse=True)
def _one_thread():
    """Two torch threads on this shared 2-core machine were 25x slower than one (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_deneutralize_is_the_offset_from_the_neutral_code():
    z = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    zbar = torch.tensor([[1.0, 1.0]])
    assert torch.equal(L.deneutralize(z, zbar), torch.tensor([[0.0, 1.0], [2.0, 4.0]]))


def test_pixel_l2_is_the_mean_rgb_distance_over_pixels():
    a = torch.zeros(1, 3, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0], b[0, 1, 0, 0] = 0.3, 0.4          # one pixel 0.5 away, three identical
    assert L.pixel_l2(a, b).item() == pytest.approx(0.5 / 4, abs=1e-5)


def test_ssim_is_one_for_identical_images_and_low_for_inverted_ones():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 16, 16, generator=g)
    assert L.ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert L.ssim(a, 1 - a).item() < 0.0


def test_gradient_loss_ignores_a_brightness_offset_but_sees_an_edge():
    flat = torch.full((1, 3, 4, 4), 0.2)
    assert L.gradient_loss(flat, flat + 0.3).item() == pytest.approx(0.0, abs=1e-7)
    edge = flat.clone()
    edge[..., :, 2:] = 0.6                            # a vertical edge of height 0.4 between columns 1 and 2
    # horizontal differences: 4 rows x 3 columns, one column of them is 0.4 -> mean 0.4/3; vertical: 0
    assert L.gradient_loss(edge, flat).item() == pytest.approx(0.4 / 3, abs=1e-6)


def test_reconstruction_loss_without_standins_is_pixel_l2_and_standins_add():
    a, b = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.1)
    assert L.reconstruction_loss(a, b).item() == pytest.approx(L.pixel_l2(a, b).item())
    assert L.reconstruction_loss(a, b, 0.0, 1.0).item() == pytest.approx(L.pixel_l2(a, b).item())  # no edges
    noisy = b.clone()
    noisy[..., ::2, :] = 0.3
    assert L.reconstruction_loss(noisy, b, 0.5, 1.0).item() > L.pixel_l2(noisy, b).item()


def test_feature_and_cycle_losses_are_mean_euclidean_code_distances():
    za = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    zr = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert L.feature_alignment_loss(za, zr).item() == pytest.approx(2.5, abs=1e-5)
    assert L.cycle_loss(zr, za).item() == pytest.approx(2.5, abs=1e-5)


def _batch(size=16, b=2, t=3, f=6):
    g = torch.Generator().manual_seed(1)
    return TranscoderBatch(features=torch.randn(b, t, f, generator=g),
                           images_r=torch.rand(b, t, 3, size, size, generator=g),
                           images_s=torch.rand(4, 3, size, size, generator=g),
                           neutral_r=torch.rand(1, 3, size, size, generator=g),
                           neutral_s=torch.rand(1, 3, size, size, generator=g))


def _tiny_cfg(**kw):
    return TranscoderConfig(latent=8, channels=4, speech_width=8, speech_heads=2, speech_layers=1, speech_radius=2, **kw)


def test_transcoder_loss_terms_follow_the_config_and_reach_every_network():
    torch.manual_seed(0)
    net = Transcoder(_tiny_cfg(), feature_dim=6, size=16)
    total, terms = net.losses(_batch())
    assert set(terms) == {"rec", "cf", "cs", "ccl", "loss"}
    total.backward()
    for name in ("speech_encoder", "visual_encoder", "decoder_r", "decoder_s"):
        grads = [p.grad for p in getattr(net, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name
    no_cycle = Transcoder(_tiny_cfg(w_ccl=0.0), feature_dim=6, size=16)
    assert "ccl" not in no_cycle.losses(_batch())[1]


def test_deneutralisation_changes_what_the_decoders_see():
    torch.manual_seed(0)
    a = Transcoder(_tiny_cfg(), feature_dim=6, size=16)
    b = Transcoder(_tiny_cfg(deneutralize=False), feature_dim=6, size=16)
    b.load_state_dict(a.state_dict())
    batch = _batch()
    assert a.losses(batch)[1]["cs"] != pytest.approx(b.losses(batch)[1]["cs"])
    assert a.losses(batch)[1]["cf"] == pytest.approx(b.losses(batch)[1]["cf"])   # L_cf uses raw codes


def test_transcoder_training_lowers_its_losses_on_a_learnable_toy():
    torch.manual_seed(0)
    net = Transcoder(_tiny_cfg(), feature_dim=6, size=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    # a learnable toy: each frame's R image is a bar whose height is the frame's first feature
    g = torch.Generator().manual_seed(2)
    feats = torch.rand(2, 6, 6, generator=g)
    rows = torch.arange(16).view(1, 1, 1, 16, 1)
    h = (feats[..., 0] * 12 + 2).view(2, 6, 1, 1, 1)
    images_r = torch.where(rows < h, 0.9, 0.1).expand(2, 6, 3, 16, 16).clone()
    images_s = torch.where(torch.arange(16).view(1, 1, 16, 1) < torch.tensor([3, 6, 9, 12]).view(4, 1, 1, 1), 0.8, 0.2)
    batch = TranscoderBatch(features=feats, images_r=images_r, images_s=images_s.expand(4, 3, 16, 16).clone(),
                            neutral_r=images_r[0, :1] * 0 + 0.1, neutral_s=images_s[:1].expand(1, 3, 16, 16) * 0 + 0.2)
    first = None
    for _ in range(60):
        loss, terms = net.losses(batch)
        first = terms if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = net.losses(batch)[1]
    # E_V learns only from reconstruction (align_stopgrad), so its codes grow in 60 steps and L_cf with
    # them; the terms the networks can lower on this toy do fall
    assert last["rec"] < 0.8 * first["rec"] and last["cs"] < 0.6 * first["cs"] and last["ccl"] < 0.3 * first["ccl"]


def test_alignment_terms_do_not_train_the_visual_encoder_unless_asked():
    """Without de-neutralisation (with it, ``zbar_R = E_V(neutral)`` in ``dz_A`` is not detached)."""
    torch.manual_seed(0)
    batch = _batch()
    for stopgrad in (True, False):
        net = Transcoder(_tiny_cfg(w_rec=0.0, w_cs=0.0, align_stopgrad=stopgrad, deneutralize=False),
                         feature_dim=6, size=16)
        total, _ = net.losses(batch)
        total.backward()
        grad_ev = sum(p.grad.abs().sum() for p in net.visual_encoder.parameters() if p.grad is not None)
        grad_ea = sum(p.grad.abs().sum() for p in net.speech_encoder.parameters())
        assert grad_ea > 0
        assert (grad_ev == 0) == stopgrad
