"""Losses of the speech-to-image transcoder (paper 001, eqs. 1-5).

* eq. 1  :func:`deneutralize` -- ``dz_i = z_i - zbar_i`` (the speech domain uses ``zbar_R``);
* eq. 2  :func:`reconstruction_loss` -- ``||D_i(dz_i) - I_i||_2 + L_percep``;
* eq. 3  :func:`feature_alignment_loss` (``L_cf = ||z_A - z_R||_2``) and the image-space term
  ``L_cs = ||D_R(dz_A) - I_R||_2`` (:func:`pixel_l2`);
* eq. 4  :func:`cycle_loss` -- ``||z_S* - z_A||_2`` with ``z_S* = E_V(D_S(dz_A))``.

``||.||_2`` of images is read as "the mean error of all pixels" (Sec. 3.2): the Euclidean
distance of each pixel's RGB vector, averaged over pixels; of codes, the Euclidean distance of
each frame's code, averaged over frames.

The perceptual term of eq. 2 needs ImageNet-pretrained VGG weights, which are not available
offline.  It is replaced by two terms that also reward structure over flat colour error:
``1 - SSIM`` (Wang et al. 2004; 7x7 uniform window, on luminance) and an L1 loss on horizontal
and vertical image gradients (edges of the lips and the mouth opening).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cycle_loss",
    "deneutralize",
    "feature_alignment_loss",
    "gradient_loss",
    "perceptual_standin",
    "pixel_l2",
    "reconstruction_loss",
    "ssim",
]


def deneutralize(z: Tensor, z_neutral: Tensor) -> Tensor:
    """Eq. 1: the expression offset ``z - zbar`` (``z_neutral`` broadcasts over frames)."""
    return z - z_neutral


def pixel_l2(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over pixels of the RGB Euclidean distance; images ``(N, 3, H, W)``."""
    return (pred - target).pow(2).sum(dim=1).add(1e-12).sqrt().mean()


def _luma(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def ssim(a: Tensor, b: Tensor, window: int = 7, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> Tensor:
    """Mean structural similarity of the luminance of two image batches in [0, 1] (1 = identical)."""
    a, b = _luma(a), _luma(b)
    pool = lambda x: F.avg_pool2d(x, window, stride=1)
    mu_a, mu_b = pool(a), pool(b)
    var_a = pool(a * a) - mu_a ** 2
    var_b = pool(b * b) - mu_b ** 2
    cov = pool(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean()


def gradient_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 distance of horizontal and vertical finite differences."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]
    return (dx(pred) - dx(target)).abs().mean() + (dy(pred) - dy(target)).abs().mean()


def perceptual_standin(pred: Tensor, target: Tensor, w_ssim: float, w_grad: float) -> Tensor:
    """What replaces L_percep: ``w_ssim (1 - SSIM) + w_grad * gradient L1``."""
    out = pred.new_zeros(())
    if w_ssim > 0:
        out = out + w_ssim * (1.0 - ssim(pred, target))
    if w_grad > 0:
        out = out + w_grad * gradient_loss(pred, target)
    return out


def reconstruction_loss(pred: Tensor, target: Tensor, w_ssim: float = 0.0, w_grad: float = 0.0) -> Tensor:
    """Eq. 2 for one domain: ``pixel_l2 + perceptual stand-in``."""
    return pixel_l2(pred, target) + perceptual_standin(pred, target, w_ssim, w_grad)


def feature_alignment_loss(z_a: Tensor, z_r: Tensor) -> Tensor:
    """Eq. 3, ``L_cf``: mean over frames of ``||z_A - z_R||_2``; codes ``(..., m)``."""
    return (z_a - z_r).pow(2).sum(dim=-1).add(1e-12).sqrt().mean()


def cycle_loss(z_s_star: Tensor, z_a: Tensor) -> Tensor:
    """Eq. 4: mean over frames of ``||z_S* - z_A||_2`` (as printed: against ``z_A``, not ``dz_A``)."""
    return (z_s_star - z_a).pow(2).sum(dim=-1).add(1e-12).sqrt().mean()
