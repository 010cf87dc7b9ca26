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
