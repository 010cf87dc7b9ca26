"""Colorful Image Colorization (Zhang, Isola and Efros, ECCV 2016): colorization as
classification over the in-gamut a*b* bins (models/ab_bins.py).

The network follows the paper's layout at a width that trains on a CPU: convolution stages at
strides 2, 4 and 8, dilated stages at stride 8, a transposed convolution back to stride 4 and a
1x1 convolution to one logit per bin. The loss is the multinomial cross entropy against
soft-encoded targets (5 nearest bins, Gaussian sigma 5), each pixel weighted by the rebalancing
weight of its nearest bin (the training split's smoothed distribution mixed with uniform,
lambda 0.5). Prediction decodes the logits by their annealed mean (T 0.38) and upsamples.

``variant="resnet"`` replaces each stage's plain convolutions by residual blocks (the
anime-colorization blog's plan); it is registered as ``zhang_resnet``. ``num_bins`` picks the
grid size whose gamut has about that many bins (50: the Pune paper's variant).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from models import ab_bins
from models.base import Colorizer
from models.blocks import AB_SCALE, ResidualBlock, conv_relu, resize
from models.losses import box_mask


@dataclass(frozen=True)
class ZhangConfig:
    width: int = 32
    #: a*b* grid size of the bins (10 in the paper)
    grid: float = 10.0
    #: when set, the grid whose gamut has the closest number of bins (overrides ``grid``)
    num_bins: int | None = None
    temperature: float = 0.38
    rebalance: float = 0.5  # lambda: weight of the uniform distribution in the mix
    neighbours: int = 5
    sigma: float = 5.0
    variant: str = "plain"  # or "resnet"


@dataclass(frozen=True)
class ZhangResNetConfig(ZhangConfig):
    variant: str = "resnet"


#: (output channels as multiples of the width, stride, dilation, layers) per stage
STAGES = ((1, 2, 1, 2), (2, 2, 1, 2), (4, 2, 1, 3), (8, 1, 1, 3), (8, 1, 2, 3), (8, 1, 2, 3))


def _stage(cin: int, cout: int, stride: int, dilation: int, layers: int, resnet: bool):
    if resnet:  # residual blocks of two convolutions each
        blocks = [ResidualBlock(cin, cout, stride, dilation)]
        blocks += [ResidualBlock(cout, cout, 1, dilation) for _ in range(max(layers // 2, 1) - 1)]
        return nn.Sequential(*blocks)
    convs = [conv_relu(cin, cout, dilation=dilation)]
    convs += [conv_relu(cout, cout, dilation=dilation) for _ in range(layers - 2)]
    convs.append(conv_relu(cout, cout, stride, dilation=dilation))  # the paper downsamples last
    return nn.Sequential(*convs)


class Zhang(Colorizer):
    """``forward(light, embedding=None)``: L in [0, 1] -> a*b*/128 by annealed-mean decoding;
    :meth:`logits` gives the per-bin scores at a quarter of the input size."""

    uses_embedding = False
    loss = "cross_entropy"

    def __init__(self, config: ZhangConfig = ZhangConfig()) -> None:
        super().__init__()
        if config.variant not in ("plain", "resnet"):
            raise ValueError(f"zhang variant must be 'plain' or 'resnet', not {config.variant!r}")
        self.config = config
        grid = ab_bins.grid_for_bins(config.num_bins) if config.num_bins else config.grid
        centres = ab_bins.gamut_bins(grid)
        self.register_buffer("centres", centres)
        self.register_buffer("class_weights", torch.ones(len(centres)))
        w, cin, stages = config.width, 1, []
        for mult, stride, dilation, layers in STAGES:
            stages.append(
                _stage(cin, mult * w, stride, dilation, layers, config.variant == "resnet")
            )
            cin = mult * w
        self.stages = nn.Sequential(*stages)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(cin, 4 * w, 4, 2, 1), nn.ReLU(inplace=True), conv_relu(4 * w, 4 * w)
        )
        self.classify = nn.Conv2d(4 * w, len(centres), 1)

    @property
    def num_bins(self) -> int:
        return len(self.centres)

    def logits(self, light: torch.Tensor) -> torch.Tensor:
        """Scores (B, Q, H/4, W/4) of the a*b* bins."""
        x = self.stages(light * 2.0 - 1.0)
        size = ((light.shape[-2] + 3) // 4, (light.shape[-1] + 3) // 4)
        return self.classify(resize(self.up(x), size))

    def decode(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Annealed-mean a*b*/128 at ``size``."""
        ab = ab_bins.annealed_mean(logits, self.centres, self.config.temperature) / AB_SCALE
        return resize(ab, size).clamp(-1.0, 1.0)

    def forward(self, light: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.logits(light), light.shape[-2:])

    def fit_prior(self, batches: Iterable[dict]) -> None:
        """Rebalancing weights from the training split's a*b* (real pixels only)."""
        counts = torch.zeros(self.num_bins, dtype=torch.long)
        centres = self.centres.cpu()
        for b in batches:
            mask = box_mask(b["box"], b["ab"].shape[-2:])
            counts += ab_bins.bin_counts(b["ab"] * AB_SCALE, mask, centres)
        weights = ab_bins.rebalancing_weights(counts, centres, self.config.rebalance)
        self.class_weights.copy_(weights.to(self.class_weights))

    def objective(self, light, embedding, ab, mask):
        """Rebalanced cross entropy against soft-encoded targets at the logits' resolution."""
        logits = self.logits(light)
        size = logits.shape[-2:]
        target_ab = ab_bins.downsample(ab, size) * AB_SCALE
        real = ab_bins.downsample(mask, size)[:, 0]
        target = ab_bins.soft_encode(
            target_ab, self.centres, self.config.neighbours, self.config.sigma
        )
        nearest = target.argmax(1)  # the closest bin carries the largest soft weight
        weight = real * self.class_weights[nearest]
        ce = -(target * torch.log_softmax(logits.float(), dim=1)).sum(1)
        loss = (ce * weight).sum() / real.sum().clamp_min(1.0)
        return loss, self.decode(logits, light.shape[-2:])
