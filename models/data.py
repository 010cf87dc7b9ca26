"""Feature shards (``preprocess``'s output) streamed with webdataset into torch batches."""

from __future__ import annotations

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from koala import storage
from koala.colour import L_SCALE
from koala.errors import KoalaError
from models.blocks import AB_SCALE


def feature_shards(root: str, backbone: str, split: str) -> list[str]:
    """The feature shard URLs of one split, or a one-line error when there are none."""
    urls = storage.list_files(storage.join(root, "features", backbone), f"{split}-*.tar")
    if not urls:
        raise KoalaError(
            f"no {split} feature shards for {backbone} under {root} (run koala preprocess first)"
        )
    return urls


def to_tensors(sample: dict) -> dict[str, torch.Tensor | str]:
    """A decoded feature sample as model inputs: L in [0, 1], a*b*/128, embedding, pad box."""
    light = torch.from_numpy(sample["l.npy"].astype(np.float32) / (100.0 * L_SCALE))[None]
    ab = torch.from_numpy(sample["ab.npy"].astype(np.float32) / AB_SCALE)
    return {
        "key": sample["__key__"],
        "light": light,
        "ab": ab,
        "embedding": torch.from_numpy(sample["emb.npy"].astype(np.float32)),
        "box": torch.tensor(sample["json"]["box200"], dtype=torch.long),
    }


def hflip(item: dict) -> dict:
    """Mirror a sample left-right (L, a*b* and its pad box)."""
    width = item["light"].shape[-1]
    x0, y0, x1, y1 = item["box"].tolist()
    return {
        **item,
        "light": item["light"].flip(-1),
        "ab": item["ab"].flip(-1),
        "box": torch.tensor([width - x1, y0, width - x0, y1]),
    }


def crop(item: dict, x: int, y: int, size: int) -> dict:
    """A ``size`` square of a sample at (x, y), its pad box moved and clipped to the window."""
    x0, y0, x1, y1 = item["box"].tolist()
    box = [
        min(max(x0 - x, 0), size),
        min(max(y0 - y, 0), size),
        min(max(x1 - x, 0), size),
        min(max(y1 - y, 0), size),
    ]
    return {
        **item,
        "light": item["light"][:, y : y + size, x : x + size],
        "ab": item["ab"][:, y : y + size, x : x + size],
        "box": torch.tensor(box),
    }


class Augment:
    """Random left-right flips and, for models without a global embedding (a crop would no
    longer match it), random square crops; seeded, picklable for DataLoader workers."""

    def __init__(self, seed: int, crop_size: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.crop_size = crop_size

    def __call__(self, item: dict) -> dict:
        if self.rng.random() < 0.5:
            item = hflip(item)
        if self.crop_size:
            h, w = item["light"].shape[-2:]
            x = int(self.rng.integers(0, w - self.crop_size + 1))
            y = int(self.rng.integers(0, h - self.crop_size + 1))
            item = crop(item, x, y, self.crop_size)
        return item


def make_loader(
    urls: list[str],
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    workers: int = 0,
    crop_size: int | None = None,
) -> DataLoader:
    """Batches from feature shards; shuffled, flipped (and cropped) when ``train``, seeded."""
    storage.register_webdataset_schemes()
    ds = wds.WebDataset(
        urls, shardshuffle=len(urls) if train else False, seed=seed, empty_check=False
    )
    if train:
        ds = ds.shuffle(1000, initial=200, seed=seed)
    ds = ds.decode().map(to_tensors)
    if train:
        ds = ds.map(Augment(seed, crop_size))
    return DataLoader(
        ds, batch_size=batch_size, num_workers=workers, persistent_workers=False, drop_last=False
    )


def train_mean_ab_of(features_index: str) -> list[float] | None:
    """Mean a*b* of the training split: the mean-ab baseline for datasets without one."""
    if not storage.exists(features_index):
        return None
    index = storage.read_parquet(features_index, columns=["split", "a_mean", "b_mean"])
    train = index[index["split"] == "train"]
    return [float(train["a_mean"].mean()), float(train["b_mean"].mean())] if len(train) else None
