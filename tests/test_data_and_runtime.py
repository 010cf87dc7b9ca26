"""Training-time augmentation and the Dask GPU resource request."""

from __future__ import annotations

import dask
import torch
from distributed import Client, LocalCluster

from flows.train import gpu_resource_annotation
from models.data import Augment, crop, hflip


def sample() -> dict:
    light = torch.arange(200 * 200, dtype=torch.float32).view(1, 200, 200)
    return {
        "key": "k",
        "light": light,
        "ab": torch.stack([light[0], -light[0]]),
        "embedding": torch.zeros(4),
        "box": torch.tensor([0, 33, 200, 166]),
    }


def test_flip_mirrors_pixels_and_box() -> None:
    item = {**sample(), "box": torch.tensor([10, 33, 150, 166])}
    flipped = hflip(item)
    assert flipped["box"].tolist() == [50, 33, 190, 166]
    assert torch.equal(flipped["light"][..., 0], item["light"][..., -1])
    assert torch.equal(hflip(flipped)["ab"], item["ab"])


def test_crop_moves_and_clips_the_box() -> None:
    out = crop(sample(), 20, 10, 176)
    assert out["light"].shape == (1, 176, 176) and out["ab"].shape == (2, 176, 176)
    assert out["box"].tolist() == [0, 23, 176, 156]
    assert out["light"][0, 0, 0] == sample()["light"][0, 10, 20]


def test_augment_is_seeded_and_crops_only_when_asked() -> None:
    a = [Augment(7, 176)(sample())["light"].sum() for _ in range(1)]
    b = [Augment(7, 176)(sample())["light"].sum() for _ in range(1)]
    assert a == b
    assert Augment(7)(sample())["light"].shape == (1, 200, 200)


def test_training_asks_for_a_gpu_worker_only_when_the_cluster_has_one() -> None:
    assert dask.get_annotations() == {}
    with gpu_resource_annotation():  # no Dask client at all: nothing requested
        assert dask.get_annotations() == {}
    for resources, expected in (({"GPU": 1}, {"resources": {"GPU": 1}}), (None, {})):
        with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=False,
                dashboard_address=None,
                resources=resources,
            ) as cluster,
            Client(cluster),
            gpu_resource_annotation(),
        ):
            assert dask.get_annotations() == expected


def test_precast_weights_give_the_same_outputs_under_autocast() -> None:
    import copy

    from models.runtime import precast_for_autocast

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 3, padding=1),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 16 * 16, 3),
    ).eval()
    cast = precast_for_autocast(copy.deepcopy(net), torch.bfloat16)
    assert cast[0].weight.dtype == torch.bfloat16 and cast[1].weight.dtype == torch.float32
    x = torch.rand(2, 1, 16, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(net(x), cast(x))
    assert precast_for_autocast(net, None)[0].weight.dtype == torch.float32


class _Residual(torch.nn.Module):
    """conv -> BN, a BN that reads a sum (not a convolution), a conv read by two BNs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(6)
        self.bn_of_sum = torch.nn.BatchNorm2d(6)
        self.shared = torch.nn.Conv2d(6, 6, 1)
        self.left, self.right = torch.nn.BatchNorm2d(6), torch.nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = self.bn_of_sum(y + 1.0)
        z = self.shared(y)
        return self.left(z) - self.right(z)


def _with_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics and affine parameters, then eval mode."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen))
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=gen))
            m.bias.data.copy_(torch.randn(n, generator=gen))
    return net.eval()


def test_fold_batchnorm_folds_only_real_conv_to_bn_edges() -> None:
    from models.runtime import fold_batchnorm

    torch.manual_seed(0)
    net = _with_statistics(_Residual())
    x = torch.rand(2, 3, 12, 12)
    folded, count = fold_batchnorm(net, lambda m: m(x))
    assert count == 1  # conv->bn; not the BN of a sum, not the two BNs sharing one conv
    assert isinstance(folded.bn, torch.nn.Identity)
    assert isinstance(folded.bn_of_sum, torch.nn.BatchNorm2d)
    assert isinstance(folded.left, torch.nn.BatchNorm2d)
    assert isinstance(net.bn, torch.nn.BatchNorm2d) and net.conv.bias is None  # untouched
    other = torch.rand(3, 3, 20, 16)  # not the probe the fold was checked on
    with torch.inference_mode():
        torch.testing.assert_close(folded(other), net(other), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_training_mode_alone() -> None:
    from models.runtime import fold_batchnorm

    net = _with_statistics(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)))
    net.train()
    folded, count = fold_batchnorm(net, lambda m: m(torch.rand(2, 1, 8, 8)))
    assert count == 0 and isinstance(folded[1], torch.nn.BatchNorm2d) and folded is not net


def test_streamlined_colorizer_predicts_what_the_model_does() -> None:
    """The colorize path's folded, pad-merged copies of a real chroma_unet (EfficientNet
    encoder and embedding backbone, random weights and statistics) predict the same a*b*."""
    from models.backbones import load_backbone
    from models.calibration import predict_ab
    from models.chroma_unet import ChromaUNet, ChromaUNetConfig
    from tasks.colorize import streamlined

    torch.manual_seed(0)
    model = _with_statistics(ChromaUNet(ChromaUNetConfig(pretrained=False)))
    backbone = _with_statistics(load_backbone("efficientnet-lite0"))
    lean_model, lean_backbone = streamlined(model, backbone, torch.device("cpu"))
    batch_norms = [m for m in lean_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not batch_norms
    assert not [m for m in lean_backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    light, gray = torch.rand(2, 1, 96, 128), torch.rand(2, 1, 128, 128)
    with torch.inference_mode():
        want = predict_ab(model, light, backbone(gray)[0])
        got = predict_ab(lean_model, light, lean_backbone(gray)[0])
    assert float((want - got).abs().max()) < 0.05  # a*b* units
