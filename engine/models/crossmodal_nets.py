"""Networks of the cross-modal method (paper 001): speech encoder, visual encoder, image decoder,
ResNet-34 face-to-geometry regressor.

Both encoders end in ``tanh``: the shared code lives in (-1, 1)^m.  Why (our choice, the paper
does not say): the alignment terms (eqs. 3-4) are distances between codes, and without a bound
the codes drifted -- collapsing to a point when the terms trained E_V, growing without limit
when they did not (measured, README "Cross-modal").  Assembled by :mod:`engine.models.crossmodal` (what ships)
and :mod:`training.crossmodal.transcoder` (what trains).

Images are ``(N, 3, H, W)`` floats in [0, 1] with ``H = W = 2**k`` (64 by default).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FaceToGeometry", "ImageDecoder", "ResNet34", "SpeechEncoder", "VisualEncoder", "band_mask"]


# ---------------------------------------------------------------------- E_A
def band_mask(t: int, radius: int, device: torch.device | None = None) -> Tensor:
    """``(t, t)`` additive attention mask: frame i attends to frames within ``radius`` of i."""
    i = torch.arange(t, device=device)
    far = (i[:, None] - i[None, :]).abs() > radius
    return torch.zeros(t, t, device=device).masked_fill(far, float("-inf"))


class SpeechEncoder(nn.Module):
    """E_A (Sec. 3.2): audio features -> multi-layer transformer encoder -> ``z_A`` per frame.

    The paper's feature extractor is wav2vec 2.0; here it is the frozen Whisper tiny.en encoder
    (features arrive at the mesh rate).  A kernel-3 convolution gives the transformer the frame
    order, and attention is limited to +-``radius`` frames per layer, so the receptive field is
    finite (:attr:`receptive_field`) and any length runs in exact windows.
    """

    def __init__(self, feature_dim: int, latent: int, width: int = 128, layers: int = 2, heads: int = 4,
                 radius: int = 8) -> None:
        super().__init__()
        self.radius = int(radius)
        self.layers = int(layers)
        self.inp = nn.Linear(feature_dim, width)
        self.pos = nn.Conv1d(width, width, 3, padding=1, groups=width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, latent)

    @property
    def receptive_field(self) -> int:
        return 1 + self.layers * self.radius

    def forward(self, features: Tensor) -> Tensor:
        """``(B, T, F)`` -> ``(B, T, latent)``."""
        x = self.inp(features)
        x = x + self.pos(x.transpose(1, 2)).transpose(1, 2)
        x = self.encoder(x, mask=band_mask(x.shape[1], self.radius, x.device))
        return torch.tanh(self.out(x))


# ---------------------------------------------------------------------- E_V, D_R, D_S
def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class VisualEncoder(nn.Module):
    """E_V (shared by both image domains): stride-2 4x4 convolutions down to 4x4 (channels double
    per level from ``channels``, at most 8x), then a linear layer to ``z``."""

    def __init__(self, latent: int, channels: int = 32, size: int = 64) -> None:
        super().__init__()
        n_down = int(math.log2(size // 4))
        if 4 * 2 ** n_down != size:
            raise ValueError(f"image size must be 4 * 2**k, got {size}")
        layers: list[nn.Module] = []
        c_in, c = 3, channels
        for _ in range(n_down):
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), _act()]
            c_in, c = c, min(2 * c, 8 * channels)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * 16, latent)

    def forward(self, images: Tensor) -> Tensor:
        return torch.tanh(self.fc(self.features(images * 2.0 - 1.0).flatten(1)))


class ImageDecoder(nn.Module):
    """D_R / D_S: a linear layer to a 4x4 map, then upsampling blocks of scale 2 (nearest x2 + 3x3
    convolution; the paper's decoder, after Naruniec et al., is such a stack) to the image size,
    channels halving per block down to ``channels``; sigmoid output in [0, 1]."""

    def __init__(self, latent: int, channels: int = 32, size: int = 64) -> None:
        super().__init__()
        n_up = int(math.log2(size // 4))
        if 4 * 2 ** n_up != size:
            raise ValueError(f"image size must be 4 * 2**k, got {size}")
        widths = [min(channels * 2 ** (n_up - 1 - k), 8 * channels) for k in range(n_up)]
        self.c0 = widths[0]
        self.fc = nn.Linear(latent, self.c0 * 16)
        blocks: list[nn.Module] = []
        c_in = self.c0
        for c in widths:
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c, 3, padding=1), _act()]
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c_in, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = F.leaky_relu(self.fc(z), 0.2).view(-1, self.c0, 4, 4)
        return torch.sigmoid(self.to_rgb(self.blocks(x)))


# ---------------------------------------------------------------------- E_G
class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.down = None
        if stride != 1 or c_in != c:
            self.down = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet34(nn.Module):
    """He et al.'s ResNet-34 (basic blocks 3-4-6-3, 7x7 stride-2 stem + max-pool, global average
    pool), written here because torchvision is not installed with the pinned torch.  ``width`` is
    the first stage's channel count (64 in the paper's network)."""

    LAYERS = (3, 4, 6, 3)

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        c_in = width
        for k, n in enumerate(self.LAYERS):
            c = width * 2 ** k
            stages += [_BasicBlock(c_in if i == 0 else c, c, 2 if (i == 0 and k > 0) else 1) for i in range(n)]
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))


class FaceToGeometry(nn.Module):
    """E_G (Sec. 3.3, Fig. 2): ResNet-34 + one fully connected layer -> mesh coordinates ``(N, V, 3)``.

    The FC layer's bias starts at the neutral mesh, so it regresses coordinates as in the paper
    and starts from the rest pose; its output is in millimetres (``unit_scale`` = 1000 for metre
    meshes) so the RMSE of eq. 6 is well scaled.
    """

    def __init__(self, template: Tensor, width: int = 64, unit_scale: float = 1000.0) -> None:
        super().__init__()
        self.num_vertices = int(template.shape[0])
        self.unit_scale = float(unit_scale)
        self.backbone = ResNet34(width)
        self.fc = nn.Linear(self.backbone.out_dim, 3 * self.num_vertices)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(template.reshape(-1).float() * self.unit_scale)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, V, 3)`` in the template's units."""
        h = self.backbone((images - self.mean) / 0.25)
        return (self.fc(h) / self.unit_scale).view(-1, self.num_vertices, 3)
