"""Koala's flagship: a U-Net whose encoder is the ImageNet-pretrained EfficientNet-Lite0, with
multi-scale skips, the global embedding fused in at the bottleneck, and a*b* predicted at the
input resolution. The encoder starts frozen and can be fine-tuned later in training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.backbones import efficientnet_lite0_weights_path, load_into, read_state_dict
from models.blocks import FusionLayer, conv_relu

#: EfficientNet-Lite0 block indices whose outputs are the skips (strides 2, 4, 8, 16, 32)
SKIP_BLOCKS = (0, 2, 4, 10, 15)
SKIP_CHANNELS = (16, 24, 40, 112, 320)
DECODER_CHANNELS = (256, 128, 64, 48, 32)


@dataclass(frozen=True)
class UNetConfig:
    embedding_dim: int = 1280
    pretrained: bool = True
    freeze_encoder: bool = True
    #: start fine-tuning the frozen encoder (at a tenth of the learning rate) after this many
    #: epochs; None keeps it frozen
    finetune_after: int | None = None
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


class UNet(nn.Module):
    """``forward(light, embedding)``: L in [0, 1] (B, 1, H, W) -> a*b*/128 (B, 2, H, W)."""

    uses_embedding = True
    loss = "smooth_l1"

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.config = config
        self.encoder = EfficientNet.from_name("efficientnet-lite0")
        if config.pretrained:
            path = efficientnet_lite0_weights_path()
            load_into(self.encoder, read_state_dict(path), path, "efficientnet-lite0")
        del self.encoder._conv_head, self.encoder._bn1, self.encoder._fc  # unused head
        self.register_buffer("mean", torch.tensor(0.498), persistent=False)
        self.register_buffer("std", torch.tensor(0.502), persistent=False)
        self.fusion = FusionLayer(SKIP_CHANNELS[-1], config.embedding_dim, DECODER_CHANNELS[0])
        ups, cin = [], DECODER_CHANNELS[0]
        for skip, cout in zip(reversed(SKIP_CHANNELS[:-1]), DECODER_CHANNELS[1:], strict=True):
            ups.append(UpBlock(cin, skip, cout))
            cin = cout
        self.ups = nn.ModuleList(ups)
        self.final = UpBlock(cin, 1, DECODER_CHANNELS[-1])
        self.head = nn.Conv2d(DECODER_CHANNELS[-1], 2, 3, padding=1)
        self.set_encoder_trainable(not config.freeze_encoder)

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze (and keep in eval mode) or unfreeze the pretrained encoder."""
        self.encoder_trainable = trainable
        for p in self.encoder.parameters():
            p.requires_grad_(trainable)

    def train(self, mode: bool = True) -> UNet:
        super().train(mode)
        for m in self.encoder.modules():  # batch-norm statistics stay ImageNet's, even when
            if isinstance(m, nn.BatchNorm2d):  # fine-tuning: our batches are small
                m.eval()
        return self

    def encode(self, light: torch.Tensor) -> list[torch.Tensor]:
        enc = self.encoder
        x = (light.expand(-1, 3, -1, -1) - self.mean) / self.std
        x = enc._swish(enc._bn0(enc._conv_stem(x)))
        skips = []
        for i, block in enumerate(enc._blocks):
            x = block(x)
            if i in SKIP_BLOCKS:
                skips.append(x)
        return skips

    def forward(self, light: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        skips = self.encode(light)
        x = self.fusion(skips[-1], embedding)
        for up, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            x = up(x, skip)
        x = self.final(x, light)
        return torch.tanh(self.head(x))
