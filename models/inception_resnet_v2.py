"""Inception-ResNet-v2 (Szegedy et al., 2016), the Deep Koalarization paper's embedding network.

Module names follow timm's ``inception_resnet_v2`` so that a checkpoint saved by timm (or
converted to its key names) loads with ``load_state_dict`` unchanged. No weights ship with
Koala: they are not obtainable offline; users supply their own checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

#: input normalisation of the TF-trained Inception family: x in [0, 1] -> (x - 0.5) / 0.5
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in TF), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def chain(*specs: tuple) -> nn.Sequential:
    """A branch of consecutive ``BasicConv2d(*spec)``."""
    return nn.Sequential(*(BasicConv2d(*s) for s in specs))


class Concat(nn.Module):
    """Runs ``branch0..branchN`` on the same input and concatenates them on channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.n = len(branches)
        for i, b in enumerate(branches):
            setattr(self, f"branch{i}", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n)], 1)


class Residual(Concat):
    """An Inception-ResNet block: branches, 1x1 projection (``conv2d``), scaled residual, ReLU."""

    def __init__(self, channels: int, scale: float, *branches: nn.Module, relu: bool = True):
        super().__init__(*branches)
        width = sum(_out_channels(b) for b in branches)
        self.conv2d = nn.Conv2d(width, channels, kernel_size=1)
        self.scale = scale
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(super().forward(x)) * self.scale + x
        return self.relu(out) if self.relu is not None else out


def _out_channels(m: nn.Module) -> int:
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    return convs[-1].out_channels


def block35() -> Residual:
    return Residual(
        320,
        0.17,
        BasicConv2d(320, 32, 1),
        chain((320, 32, 1), (32, 32, 3, 1, 1)),
        chain((320, 32, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1)),
    )


def block17() -> Residual:
    return Residual(
        1088,
        0.10,
        BasicConv2d(1088, 192, 1),
        chain((1088, 128, 1), (128, 160, (1, 7), 1, (0, 3)), (160, 192, (7, 1), 1, (3, 0))),
    )


def block8(scale: float = 0.20, relu: bool = True) -> Residual:
    return Residual(
        2080,
        scale,
        BasicConv2d(2080, 192, 1),
        chain((2080, 192, 1), (192, 224, (1, 3), 1, (0, 1)), (224, 256, (3, 1), 1, (1, 0))),
        relu=relu,
    )


class InceptionResNetV2(nn.Module):
    """The network; ``forward`` returns (1536-d pooled features, class logits)."""

    num_features = 1536

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Concat(
            BasicConv2d(192, 96, 1),
            chain((192, 48, 1), (48, 64, 5, 1, 2)),
            chain((192, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
            nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), BasicConv2d(192, 64, 1)),
        )
        self.repeat = nn.Sequential(*(block35() for _ in range(10)))
        self.mixed_6a = Concat(
            BasicConv2d(320, 384, 3, stride=2),
            chain((320, 256, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2)),
            nn.MaxPool2d(3, stride=2),
        )
        self.repeat_1 = nn.Sequential(*(block17() for _ in range(20)))
        self.mixed_7a = Concat(
            chain((1088, 256, 1), (256, 384, 3, 2)),
            chain((1088, 256, 1), (256, 288, 3, 2)),
            chain((1088, 256, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2)),
            nn.MaxPool2d(3, stride=2),
        )
        self.repeat_2 = nn.Sequential(*(block8() for _ in range(9)))
        self.block8 = block8(scale=1.0, relu=False)
        self.conv2d_7b = BasicConv2d(2080, self.num_features, 1)
        self.classif = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1536-channel feature map (8x8 for a 299x299 input)."""
        for name in (
            "conv2d_1a",
            "conv2d_2a",
            "conv2d_2b",
            "maxpool_3a",
            "conv2d_3b",
            "conv2d_4a",
            "maxpool_5a",
            "mixed_5b",
            "repeat",
            "mixed_6a",
            "repeat_1",
            "mixed_7a",
            "repeat_2",
            "block8",
            "conv2d_7b",
        ):
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.features(x).mean((2, 3))
        return pooled, self.classif(pooled)
