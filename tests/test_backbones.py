"""Embedding backbones: the shipped EfficientNet-Lite0 and Inception-ResNet-v2 (random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from skimage import data

from koala.colour import resize_and_pad, rgb_to_lab
from models.backbones import CheckpointError, load_backbone
from models.inception_resnet_v2 import InceptionResNetV2


def gray_view(img: np.ndarray, size: int = 299) -> torch.Tensor:
    from PIL import Image

    rgb, _ = resize_and_pad(Image.fromarray(img), size)
    return torch.from_numpy(rgb_to_lab(rgb)[..., 0] / np.float32(100))[None, None]


def test_efficientnet_lite0_ships_working_imagenet_weights() -> None:
    model = load_backbone("efficientnet-lite0")
    with torch.inference_mode():
        emb, logits = model(gray_view(data.chelsea()))
    assert emb.shape == (1, 1280) and logits.shape == (1, 1000)
    assert int(logits.argmax()) in {281, 282, 285}  # tabby / tiger cat / Egyptian cat, from gray
    assert len(model.weights_sha256) == 64


@pytest.fixture(scope="module")
def irv2_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = InceptionResNetV2().eval()
    for m in net.modules():  # non-trivial BN statistics, so a wrong load would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


def test_inception_resnet_v2_shapes_and_timm_key_names(irv2_state) -> None:
    net = InceptionResNetV2().eval()
    with torch.inference_mode():
        pooled, logits = net(torch.randn(2, 3, 299, 299))
        fmap = net.features(torch.randn(1, 3, 299, 299))
    assert pooled.shape == (2, 1536) and logits.shape == (2, 1000)
    assert fmap.shape == (1, 1536, 8, 8)
    keys = set(irv2_state)
    for k in (
        "conv2d_1a.conv.weight",
        "mixed_5b.branch3.1.conv.weight",
        "repeat.9.branch2.2.bn.running_var",
        "mixed_6a.branch1.2.conv.weight",
        "repeat_1.19.conv2d.bias",
        "mixed_7a.branch2.2.conv.weight",
        "repeat_2.8.branch1.2.conv.weight",
        "block8.conv2d.weight",
        "conv2d_7b.bn.weight",
        "classif.weight",
    ):
        assert k in keys, k
    assert sum(
        v.numel() for k, v in irv2_state.items() if "num_batches" not in k and "running" not in k
    ) == pytest.approx(55.84e6, rel=0.002)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_inception_resnet_v2_checkpoint_round_trip(tmp_path: Path, irv2_state, fmt: str) -> None:
    path = tmp_path / f"irv2.{fmt}"
    if fmt == "pth":
        torch.save({"state_dict": {f"module.{k}": v for k, v in irv2_state.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in irv2_state.items()}, str(path))
    model = load_backbone("inception-resnet-v2", str(path))
    reference = InceptionResNetV2().eval()
    reference.load_state_dict(irv2_state)
    x = gray_view(data.astronaut())
    with torch.inference_mode():
        emb, logits = model(x)
        _, ref_logits = reference(((x.expand(-1, 3, -1, -1)) - 0.5) / 0.5)
    assert emb.shape == (1, 1000)  # the paper's embedding: the 1000-d last layer
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(emb, logits)


def test_tf_port_with_background_class_loads(tmp_path: Path, irv2_state) -> None:
    state = dict(irv2_state)
    state["classif.weight"] = torch.cat([torch.zeros(1, 1536), state["classif.weight"]])
    state["classif.bias"] = torch.cat([torch.zeros(1), state["classif.bias"]])
    torch.save(state, tmp_path / "tf.pth")
    assert load_backbone("inception-resnet-v2", str(tmp_path / "tf.pth")).info.embedding_dim == 1000


def test_checkpoint_errors_are_clear(tmp_path: Path, irv2_state) -> None:
    with pytest.raises(CheckpointError, match="needs --weights"):
        load_backbone("inception-resnet-v2")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone("inception-resnet-v2", str(tmp_path / "missing.pth"))
    partial = {k: v for k, v in irv2_state.items() if not k.startswith("repeat_2")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"does not match inception-resnet-v2: \d+ missing"):
        load_backbone("inception-resnet-v2", str(tmp_path / "partial.pth"))
    torch.save(load_backbone("efficientnet-lite0").net.model.state_dict(), tmp_path / "lite.pth")
    with pytest.raises(CheckpointError, match="does not match"):
        load_backbone("inception-resnet-v2", str(tmp_path / "lite.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch state dict"):
        load_backbone("inception-resnet-v2", str(tmp_path / "junk.pth"))
