"""Regression baseline (the Hwang & Zhou line of work): the same kind of encoder-decoder as
Deep Koalarization without the global embedding, trained with the Huber loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.base import Colorizer
from models.blocks import KoalaDecoder, KoalaEncoder


@dataclass(frozen=True)
class RegressionConfig:
    width: int = 64
    huber_delta: float = 0.1  # in a*b*/128 units, i.e. about 13 a*b* units


class Regression(Colorizer):
    """``forward(light, embedding=None)``: L in [0, 1] -> a*b*/128; the embedding is ignored."""

    uses_embedding = False
    loss = "huber"

    def __init__(self, config: RegressionConfig = RegressionConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = KoalaEncoder(config.width)
        self.decoder = KoalaDecoder(self.encoder.out_channels, config.width)

    def forward(self, light: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(light), light.shape[-2:])
