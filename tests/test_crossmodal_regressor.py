"""Paper 001's face-to-geometry regressor: ResNet-34 layout, eq. 6, augmentation, and that training fits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models.crossmodal_nets import FaceToGeometry, ResNet34, _BasicBlock
from training.crossmodal.augment import color_jitter, images_to_tensor, random_affine
from training.crossmodal.train_regressor import rmse_loss


@pytest.fixture(autouse=True)
def _one_thread():
    """Two torch threads on this shared 2-core machine were 25x slower than one (measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_resnet34_has_the_3_4_6_3_basic_block_layout():
    net = ResNet34(width=8)
    blocks = [m for m in net.stages if isinstance(m, _BasicBlock)]
    assert len(blocks) == 16
    assert [b.conv1.out_channels for b in blocks] == [8] * 3 + [16] * 4 + [32] * 6 + [64] * 3
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 64)
    # 33 convolutions with weights + the final FC = the "34 layers" (projection shortcuts not counted)
    convs = [m for b in blocks for m in (b.conv1, b.conv2)]
    assert len(convs) + 1 == 33


def test_regressor_starts_at_the_template_and_outputs_template_units():
    tmpl = torch.randn(50, 3) * 0.1
    reg = FaceToGeometry(tmpl, width=4).eval()
    out = reg(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 50, 3)
    assert torch.allclose(out, tmpl.expand(3, -1, -1), atol=1e-6)


def test_rmse_loss_hand_case():
    pred = torch.zeros(2, 4, 3)
    target = torch.full((2, 4, 3), 2.0)
    target[1] = 0.0                                          # second image exact
    assert rmse_loss(pred, target).item() == pytest.approx(1.0)   # (2 + 0) / 2


def test_augmentations_are_identities_at_zero_strength_and_stay_in_range():
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(color_jitter(x, 0.0), x)
    assert torch.allclose(random_affine(x, 0.0, 0.0, 0.0), x, atol=1e-5)
    g = torch.Generator().manual_seed(0)
    y = random_affine(color_jitter(x, 0.3, g), 5.0, 0.05, 0.05, g)
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, x, atol=1e-2)


def test_images_to_tensor_box_filters_to_the_training_size():
    img = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    img[0, :2, :2] = 255
    t = images_to_tensor(img, 2)
    assert t.shape == (1, 3, 2, 2)
    assert t[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="must divide"):
        images_to_tensor(img, 3)


def test_regressor_training_fits_images_to_meshes():
    """Images whose dark band moves with a 'jaw' value -> meshes whose vertices move with it."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    tmpl = torch.zeros(10, 3)
    direction = torch.randn(10, 3) * 0.01
    jaw = torch.rand(24, generator=g)
    imgs = torch.full((24, 3, 32, 32), 0.8)
    for i, j in enumerate(jaw):
        imgs[i, :, 12:14 + int(j * 14)] = 0.1
    meshes = tmpl + jaw.view(-1, 1, 1) * direction
    reg = FaceToGeometry(tmpl, width=4)
    opt = torch.optim.Adam(reg.parameters(), lr=3e-3)
    first = rmse_loss(reg(imgs) * 1000, meshes * 1000).item()
    for _ in range(80):
        loss = rmse_loss(reg(imgs) * 1000, meshes * 1000)
        opt.zero_grad()
        loss.backward()
        opt.step()
    reg.eval()
    assert rmse_loss(reg(imgs) * 1000, meshes * 1000).item() < 0.5 * first
