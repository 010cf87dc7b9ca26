"""Building blocks shared by the colorization networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: a*b* are predicted scaled to [-1, 1]: ab = AB_SCALE * prediction
AB_SCALE = 128.0


def conv_relu(
    cin: int, cout: int, stride: int = 1, norm: bool = True, dilation: int = 1
) -> nn.Sequential:
    """3x3 convolution (optionally dilated), optional batch norm, ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=not norm)
    ]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FusionLayer(nn.Module):
    """Deep Koalarization's fusion: repeat the global embedding over the feature grid, concatenate
    it to the local features and mix them with a 1x1 convolution."""

    def __init__(self, channels: int, embedding_dim: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.mix = nn.Conv2d(channels + embedding_dim, out_channels or channels, 1)

    def forward(self, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        b, _, h, w = features.shape
        grid = embedding.view(b, -1, 1, 1).expand(-1, -1, h, w).to(features.dtype)
        return F.relu(self.mix(torch.cat([features, grid], 1)))


class KoalaEncoder(nn.Module):
    """The paper's encoder: 8 convolutions, three of them stride 2 (H x W -> H/8 x W/8 x 256)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        self.layers = nn.Sequential(
            conv_relu(1, w, 2),
            conv_relu(w, 2 * w),
            conv_relu(2 * w, 2 * w, 2),
            conv_relu(2 * w, 4 * w),
            conv_relu(4 * w, 4 * w, 2),
            conv_relu(4 * w, 8 * w),
            conv_relu(8 * w, 8 * w),
            conv_relu(8 * w, 4 * w),
        )
        self.out_channels = 4 * w

    def forward(self, light: torch.Tensor) -> torch.Tensor:
        return self.layers(light)


class KoalaDecoder(nn.Module):
    """The paper's decoder: convolutions and three 2x upsamplings to tanh a*b* at full size."""

    def __init__(self, cin: int, width: int = 64) -> None:
        super().__init__()
        w = width
        self.stage1 = conv_relu(cin, 2 * w)
        self.stage2 = nn.Sequential(conv_relu(2 * w, w), conv_relu(w, w))
        self.stage3 = conv_relu(w, w // 2)
        self.head = nn.Conv2d(w // 2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.stage1(x), scale_factor=2.0, mode="nearest")
        x = F.interpolate(self.stage2(x), scale_factor=2.0, mode="nearest")
        x = torch.tanh(self.head(self.stage3(x)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_relu(cin, cout, stride, dilation=dilation),
            nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def conv_bn_lrelu(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """pix2pix's contracting step: 4x4 stride-2 convolution, optional batch norm, LeakyReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def up_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """A 2x transposed convolution (4x4, stride 2), batch norm, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) to ``size`` (a no-op when it already has it)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
