"""The KTH report's convolutional autoencoder: four strided convolutions, a dense bottleneck,
four transposed convolutions, at 128x128; RMSprop and MSE on a*b*.

The dense bottleneck fixes the input size, so the network works on L resized to 128x128 and its
a*b* is resized back to the input's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from models.base import Colorizer
from models.blocks import conv_relu, resize, up_bn_relu


@dataclass(frozen=True)
class AutoencoderConfig:
    size: int = 128
    width: int = 32
    bottleneck: int = 512


class Autoencoder(Colorizer):
    """``forward(light, embedding=None)``: L in [0, 1] -> a*b*/128 (the embedding is unused)."""

    uses_embedding = False
    loss = "mse"
    optimizer = "rmsprop"

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        if config.size % 16:
            raise ValueError(f"autoencoder size must be a multiple of 16, not {config.size}")
        self.config = config
        w = config.width
        chans = (1, w, 2 * w, 4 * w, 8 * w)
        self.down = nn.Sequential(*(conv_relu(a, b, 2) for a, b in pairwise(chans)))
        self.grid = config.size // 16
        flat = 8 * w * self.grid * self.grid
        self.bottleneck = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, config.bottleneck),
            nn.ReLU(inplace=True),
            nn.Linear(config.bottleneck, flat),
            nn.ReLU(inplace=True),
        )
        ups = [up_bn_relu(b, a) for a, b in pairwise(chans[1:])]
        self.up = nn.Sequential(*reversed(ups))
        self.head = nn.ConvTranspose2d(w, 2, 4, 2, 1)

    def forward(self, light: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        size = (self.config.size, self.config.size)
        x = self.down(resize(light, size) * 2.0 - 1.0)
        x = self.bottleneck(x).view(len(x), -1, self.grid, self.grid)
        ab = torch.tanh(self.head(self.up(x)))
        return resize(ab, light.shape[-2:])
