"""Xception (Chollet, 2017) as a frozen encoder of L for the pretrained-encoder CNN, with the
module names of timm's ``legacy_xception`` so that a user's checkpoint loads as it is. No
weights ship with Koala (they cannot be downloaded here); without a checkpoint the network is
randomly initialised (tests, or loading a registered model whose weights replace it)."""

from __future__ import annotations

import torch
from torch import nn

from models.backbones import CheckpointError, load_into, read_state_dict

MEAN, STD = 0.5, 0.5  # per channel, on RGB in [0, 1]


class SeparableConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, kernel, stride, padding, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """``reps`` ReLU-separable conv-BN units, an optional max-pool, and a (projected) shortcut."""

    def __init__(
        self, cin: int, cout: int, reps: int, stride: int = 1, relu_first=True, grow_first=True
    ) -> None:
        super().__init__()
        projected = cout != cin or stride != 1
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False) if projected else None
        self.skipbn = nn.BatchNorm2d(cout) if projected else None
        layers: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                a, b = (cin if i == 0 else cout), cout
            else:
                a, b = cin, (cin if i < reps - 1 else cout)
            layers += [nn.ReLU(inplace=i > 0), SeparableConv2d(a, b), nn.BatchNorm2d(b)]
        if not relu_first:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        skip = self.skipbn(self.skip(inp)) if self.skip is not None else inp
        return self.rep(inp) + skip


class XceptionEncoder(nn.Module):
    """L in [0, 1] (B, 1, H, W) -> Xception's last features (B, 2048, ~H/32, ~W/32)."""

    out_channels = 2048

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.block1 = Block(64, 128, 2, 2, relu_first=False)
        self.block2 = Block(128, 256, 2, 2)
        self.block3 = Block(256, 728, 2, 2)
        for i in range(4, 12):
            setattr(self, f"block{i}", Block(728, 728, 3, 1))
        self.block12 = Block(728, 1024, 2, 2, grow_first=False)
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)

    def forward(self, light: torch.Tensor) -> torch.Tensor:
        relu = nn.functional.relu
        x = (light.expand(-1, 3, -1, -1) - MEAN) / STD
        x = relu(self.bn2(self.conv2(relu(self.bn1(self.conv1(x))))))
        for i in range(1, 13):
            x = getattr(self, f"block{i}")(x)
        x = relu(self.bn3(self.conv3(x)))
        return relu(self.bn4(self.conv4(x)))


def xception_encoder(weights: str | None) -> XceptionEncoder:
    """Xception with the user's ImageNet checkpoint (its classifier ``fc.*`` is dropped)."""
    net = XceptionEncoder()
    if weights:
        state = {k: v for k, v in read_state_dict(weights).items() if not k.startswith("fc.")}
        load_into(net, state, weights, "xception")
    return net


def require_weights(encoder: str, weights: str | None, pretrained: bool) -> None:
    """Xception as a *pretrained* encoder needs the user's checkpoint."""
    if encoder == "xception" and pretrained and not weights:
        raise CheckpointError(
            "encoder 'xception' needs encoder_weights=PATH: a checkpoint with timm's "
            "legacy_xception key names (.pth or .safetensors); none ships with Koala"
        )
