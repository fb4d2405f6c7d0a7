"""The regressor's data augmentation (Sec. 3.3): colour jitter and a random affine transform.

Why: the regressor is trained on clean S renders but at inference reads images the transcoder
*decoded*; jitter and small affine moves make it robust to their colour and framing errors.
Batched in torch (``(N, 3, H, W)`` in [0, 1]), one random draw per image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["color_jitter", "images_to_tensor", "random_affine"]


def images_to_tensor(images, size: int | None = None) -> Tensor:
    """uint8 ``(N, H, W, 3)`` (numpy or torch) -> float ``(N, 3, size, size)`` in [0, 1].

    ``size`` below the stored size box-filters by the integer factor (renders are cached at 64 px;
    the 2-core runs train at 32 px).
    """
    t = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255.0
    if size is not None and size != t.shape[-1]:
        k = t.shape[-1] // size
        if k * size != t.shape[-1]:
            raise ValueError(f"image size {size} must divide the rendered size {t.shape[-1]}")
        t = F.avg_pool2d(t, k)
    return t


def color_jitter(x: Tensor, strength: float, gen: torch.Generator | None = None) -> Tensor:
    """Brightness, contrast and saturation each scaled by ``1 +- strength``; hue moved by mixing
    each channel with the others (up to ``strength / 2``)."""
    if strength <= 0:
        return x
    n = x.shape[0]

    def u(*shape: int) -> Tensor:
        return (torch.rand(*shape, generator=gen) * 2 - 1) * strength

    x = x * (1 + u(n, 1, 1, 1))                                             # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + u(n, 1, 1, 1)) + mean                             # contrast
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * (1 + u(n, 1, 1, 1)) + grey                             # saturation
    mix = torch.eye(3).expand(n, 3, 3) + 0.5 * u(n, 3, 3) * (1 - torch.eye(3))
    mix = mix / mix.sum(dim=2, keepdim=True)                                # hue-like channel mixing
    x = torch.einsum("nij,njhw->nihw", mix, x)
    return x.clamp(0.0, 1.0)


def random_affine(x: Tensor, max_deg: float, max_shift: float, max_scale: float,
                  gen: torch.Generator | None = None) -> Tensor:
    """Rotate by up to ``max_deg``, shift by up to ``max_shift`` of the image, scale by ``1 +- max_scale``
    (border pixels replicated)."""
    n = x.shape[0]

    def u(k: int) -> Tensor:
        return torch.rand(n, k, generator=gen) * 2 - 1

    ang = u(1)[:, 0] * math.radians(max_deg)
    sc = 1 + u(1)[:, 0] * max_scale
    sh = u(2) * max_shift * 2                                               # grid units span [-1, 1]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / sc
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc
    theta[:, 1, 1] = torch.cos(ang) / sc
    theta[:, :, 2] = sh
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
