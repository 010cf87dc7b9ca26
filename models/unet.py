"""Koala's flagship: a U-Net whose encoder is the ImageNet-pretrained EfficientNet-Lite0, with
multi-scale skips, the global embedding fused in at the bottleneck, and a*b* predicted at the
input resolution. The encoder starts frozen and can be fine-tuned later in training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models import ab_bins
from models.backbones import LITE0_CHANNELS, LITE0_INFO, lite0_encoder, lite0_features
from models.base import Colorizer
from models.blocks import AB_SCALE, FusionLayer, conv_relu
from models.losses import box_mask, chroma_loss, masked_loss

SKIP_CHANNELS = LITE0_CHANNELS
DECODER_CHANNELS = (256, 128, 64, 48, 32)


@dataclass(frozen=True)
class UNetConfig:
    embedding_dim: int = LITE0_INFO.embedding_dim
    pretrained: bool = True
    freeze_encoder: bool = True
    #: start fine-tuning the frozen encoder (at a tenth of the learning rate) after this many
    #: epochs; None keeps it frozen
    finetune_after: int | None = 2
    #: weight of the chroma-matching term added to the smooth L1 loss (see models/losses.py)
    chroma_weight: float = 0.0
    #: Zhang-style class rebalancing of the loss (lambda of the uniform mix); 0 turns it off
    rebalance: float = 0.0


class UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, two 3x3 convolutions."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_relu(cin + skip, cout), conv_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], 1))


class UNet(Colorizer):
    """``forward(light, embedding)``: L in [0, 1] (B, 1, H, W) -> a*b*/128 (B, 2, H, W)."""

    uses_embedding = True
    loss = "smooth_l1"
    frozen_encoder_statistics = True

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = lite0_encoder(config.pretrained)
        self.fusion = FusionLayer(SKIP_CHANNELS[-1], config.embedding_dim, DECODER_CHANNELS[0])
        ups, cin = [], DECODER_CHANNELS[0]
        for skip, cout in zip(reversed(SKIP_CHANNELS[:-1]), DECODER_CHANNELS[1:], strict=True):
            ups.append(UpBlock(cin, skip, cout))
            cin = cout
        self.ups = nn.ModuleList(ups)
        self.final = UpBlock(cin, 1, DECODER_CHANNELS[-1])
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], 2, 3, padding=1)
        self.set_encoder_trainable(not config.freeze_encoder)
        self.bin_weights: torch.Tensor | None = None  # set by fit_prior when rebalancing

    def fit_prior(self, batches) -> None:
        """Class-rebalancing weights of the gamut bins from the training split (if asked)."""
        if not self.config.rebalance:
            return
        centres = ab_bins.gamut_bins(10.0)
        counts = sum(
            ab_bins.bin_counts(b["ab"] * AB_SCALE, box_mask(b["box"], b["ab"].shape[-2:]), centres)
            for b in batches
        )
        self.register_buffer("centres", centres, persistent=False)
        weights = ab_bins.rebalancing_weights(counts, centres, self.config.rebalance)
        self.register_buffer("bin_weights", weights, persistent=False)

    def objective(self, light, embedding, ab, mask):
        """Smooth L1, with pixels weighted by the rarity of their colour when rebalancing, plus
        the optional chroma-matching term."""
        pred = self(light, embedding)
        weight = mask
        if self.bin_weights is not None:
            idx = ab_bins.nearest_bins(ab * AB_SCALE, self.centres.to(ab.device))
            weight = mask * self.bin_weights.to(ab.device)[idx].unsqueeze(1)
        loss = masked_loss(self.loss, pred, ab, weight)
        if self.config.chroma_weight:
            loss = loss + self.config.chroma_weight * chroma_loss(pred, ab, mask)
        return loss, pred

    def forward(self, light: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        skips = lite0_features(self.encoder, light)
        x = self.fusion(skips[-1], embedding)
        for up, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            x = up(x, skip)
        x = self.final(x, light)
        return torch.tanh(self.head(x))
