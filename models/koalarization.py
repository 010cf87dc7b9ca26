"""Deep Koalarization (Baldassarre, Morín, Rodés-Guirao, 2017): encoder on L, fusion with the
precomputed global embedding, decoder to a*b*; trained with MSE on a*b* (scaled to [-1, 1])."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.backbones import LITE0_INFO
from models.base import Colorizer
from models.blocks import FusionLayer, KoalaDecoder, KoalaEncoder


@dataclass(frozen=True)
class KoalarizationConfig:
    #: 1000 with Inception-ResNet-v2 embeddings, as in the paper
    embedding_dim: int = LITE0_INFO.embedding_dim
    width: int = 64


class Koalarization(Colorizer):
    """``forward(light, embedding)``: L in [0, 1] (B, 1, H, W) -> a*b*/128 (B, 2, H, W)."""

    uses_embedding = True
    loss = "mse"

    def __init__(self, config: KoalarizationConfig = KoalarizationConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = KoalaEncoder(config.width)
        self.fusion = FusionLayer(self.encoder.out_channels, config.embedding_dim)
        self.decoder = KoalaDecoder(self.encoder.out_channels, config.width)

    def forward(self, light: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        features = self.fusion(self.encoder(light), embedding)
        return self.decoder(features, light.shape[-2:])
