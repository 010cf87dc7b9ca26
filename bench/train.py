"""Training-step benchmark: samples per second of the flagship's shipped training recipe against
the campaign's recipe, on real feature shards, in one process on this machine's cores.

- shipped: ``chroma_unet`` with the ``classic`` decoder (3x3 convolutions at strides 8 and 4,
  128 channels), 160 px, batch 16, contiguous (NCHW) tensors, cross entropy on dense soft
  targets, AdamW unfused: the step the shipped flagship (2026-12-02) was trained with
  (:func:`shipped_step`, its objective as it was then);
- new: the ``lite`` decoder (depthwise-separable at strides 8 and 4), channels-last, 128 px,
  batch 16, cross entropy plus the quarter-grid adversarial term (its discriminator's step
  included);
- new_160: the new recipe at the shipped resolution, to show what the resolution alone gives.

Every recipe trains from the same batches (decoded once, held in memory, so the figure is the
step), with the encoder's stride-16/32 blocks fine-tuned as from the second epoch on, after
``--warmup`` steps. The recipes alternate ``--repeats`` times, so that a drift in a shared
machine's speed hits each; the speed-up is taken per pair. The loader alone (decode, tensors,
area downsampling) is timed too: it runs in the training process between steps, so its share
of a step is the data path's cost. CPU utilisation is the process's CPU time over wall time
and cores during the timed steps.
Finally the new recipe runs fed by the real loader, with decoding in the training process or
in one loader process beside it (``new_recipe_streamed_samples_s``): the data path as a
campaign leg runs it.
Last line: JSON with the median, min and max of shipped_recipe_samples_s,
new_recipe_samples_s, new_recipe_160_samples_s, speedup, loader_samples_s,
new_recipe_streamed_samples_s and utilisation, and the frozen encoder blocks' seconds per
step and share of the new recipe's step (what precomputing their maps could save).

    python bench/train.py --data DATA [--steps 20] [--warmup 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import summary

RECIPES = {
    "shipped": {"decoder": "classic", "resolution": 160, "channels_last": False, "adv": 0.0},
    "new": {"decoder": "lite", "resolution": 128, "channels_last": True, "adv": 0.1},
    "new_160": {"decoder": "lite", "resolution": 160, "channels_last": True, "adv": 0.1},
}


def batches(data: str, count: int, batch_size: int) -> list[dict]:
    """``count`` training batches of ``data``'s train split, decoded once."""
    from models.data import feature_shards, make_loader

    loader = make_loader(
        feature_shards(data, "efficientnet-lite0", "train"), batch_size, train=True
    )
    out = []
    for b in loader:
        out.append(b)
        if len(out) == count:
            return out
    raise SystemExit(f"{data}: fewer than {count} batches of {batch_size} in its train split")


def loader_rate(data: str, count: int, batch_size: int, resolution: int) -> float:
    """Samples/s of the loader alone, with the training view's downsampling."""
    from models.data import feature_shards, make_loader
    from models.training import _training_view

    loader = make_loader(
        feature_shards(data, "efficientnet-lite0", "train"), batch_size, train=True
    )
    t0, n = time.perf_counter(), 0
    for i, b in enumerate(loader):
        _training_view(b, torch.device("cpu"), resolution)
        n += len(b["light"])
        if i + 1 == count:
            break
    return n / (time.perf_counter() - t0)


def shipped_step(model, light, embedding, ab, mask, opts) -> None:
    """The shipped recipe's step as its code ran it: dense soft-encoded targets over every bin
    (distances to all bins, a top-k) and the cross entropy summed over them."""
    from models import ab_bins
    from models.blocks import AB_SCALE

    logits = model.logits(light, embedding)
    size = logits.shape[-2:]
    target_ab = ab_bins.downsample(ab, size) * AB_SCALE
    real = ab_bins.downsample(mask, size)[:, 0]
    target = ab_bins.soft_encode(target_ab, model.centres, 5, 5.0)
    weight = real * model.class_weights[target.argmax(1)]
    ce = -(target * torch.log_softmax(logits.float(), dim=1)).sum(1)
    loss = (ce * weight).sum() / real.sum().clamp_min(1.0)
    opts["model"].zero_grad(set_to_none=True)
    loss.backward()
    opts["model"].step()


def time_recipe(name: str, data: list[dict], warmup: int) -> tuple[float, float]:
    """Samples/s and CPU utilisation of ``name``'s training steps over ``data``."""
    from models.registry import build_model
    from models.training import _training_view

    r = RECIPES[name]
    torch.manual_seed(0)
    model = build_model("chroma_unet", decoder=r["decoder"], adversarial_weight=r["adv"])
    model.set_encoder_trainable(True)
    if name == "shipped":  # AdamW as it was built then: unfused
        trainable = [p for p in model.parameters() if p.requires_grad]
        opts = {"model": torch.optim.AdamW(trainable, 1e-3, weight_decay=1e-4, fused=False)}

        def step(*batch) -> None:
            shipped_step(model, *batch)

    else:
        opts = model.optimizers(1e-3, 1e-4)
        step = model.train_step
    model.train()
    layout = torch.channels_last if r["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=layout)
    views = []
    for b in data:
        light, ab, mask = _training_view(b, torch.device("cpu"), r["resolution"])
        views.append((light.contiguous(memory_format=layout), b["embedding"], ab, mask))
    for light, emb, ab, mask in views[:warmup]:
        step(light, emb, ab, mask, opts)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for light, emb, ab, mask in views[warmup:]:
        step(light, emb, ab, mask, opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    samples = sum(len(v[0]) for v in views[warmup:])
    return samples / wall, cpu / (wall * torch.get_num_threads())


def streamed_rate(data: str, steps: int, warmup: int, batch_size: int, workers: int) -> float:
    """Samples/s of the new recipe fed by the real loader (decode in this process, or in
    ``workers`` loader processes overlapping the steps): the whole data path."""
    from models.data import feature_shards, make_loader
    from models.registry import build_model
    from models.training import _training_view

    r = RECIPES["new"]
    torch.manual_seed(0)
    model = build_model("chroma_unet", decoder=r["decoder"], adversarial_weight=r["adv"])
    opts = model.optimizers(1e-3, 1e-4)
    model = model.train().to(memory_format=torch.channels_last)
    urls = feature_shards(data, "efficientnet-lite0", "train")
    loader = make_loader(urls, batch_size, train=True, workers=workers)
    n, t0 = 0, 0.0
    for i, b in enumerate(loader):
        if i == warmup:
            n, t0 = 0, time.perf_counter()
        light, ab, mask = _training_view(b, torch.device("cpu"), r["resolution"])
        model.train_step(light, b["embedding"], ab, mask, opts)
        n += len(light)
        if i + 1 == warmup + steps:
            break
    return n / (time.perf_counter() - t0)


def frozen_share(data: list[dict], warmup: int) -> float:
    """Seconds per step of the encoder's frozen blocks (strides 2 to 8, no gradient) at the
    new recipe's resolution: what precomputing their maps in the feature shards could save."""
    from models.backbones import lite0_encoder, lite0_features
    from models.training import _training_view

    encoder = lite0_encoder(True).eval().to(memory_format=torch.channels_last)
    views = [_training_view(b, torch.device("cpu"), RECIPES["new"]["resolution"])[0] for b in data]
    with torch.no_grad():
        for light in views[:warmup]:
            lite0_features(encoder, light, stages=3)
        t0 = time.perf_counter()
        for light in views[warmup:]:
            lite0_features(encoder, light, stages=3)
    return (time.perf_counter() - t0) / len(views[warmup:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="dataset root with efficientnet-lite0 features")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per recipe and repeat")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    from models.runtime import hardware, set_torch_threads

    set_torch_threads()
    data = batches(args.data, args.steps + args.warmup, args.batch_size)
    rates: dict[str, list[float]] = {name: [] for name in RECIPES}
    use: dict[str, list[float]] = {name: [] for name in RECIPES}
    for repeat in range(args.repeats):
        for name in RECIPES:
            rate, utilisation = time_recipe(name, data, args.warmup)
            rates[name].append(rate)
            use[name].append(utilisation)
            print(
                f"repeat {repeat + 1} {name}: {rate:.1f} samples/s, CPU {utilisation:.0%}",
                file=sys.stderr,
                flush=True,
            )
    loader = [loader_rate(args.data, args.steps, args.batch_size, 128) for _ in range(args.repeats)]
    streamed: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(args.repeats):
        for workers in streamed:
            rate = streamed_rate(args.data, args.steps, args.warmup, args.batch_size, workers)
            streamed[workers].append(rate)
            print(
                f"new recipe from the loader, {workers} loader workers: {rate:.1f} samples/s",
                file=sys.stderr,
                flush=True,
            )
    speedups = [n / s for n, s in zip(rates["new"], rates["shipped"], strict=True)]
    frozen = [frozen_share(data, args.warmup) for _ in range(args.repeats)]
    step = args.batch_size / statistics.median(rates["new"])
    result = {
        "hardware": hardware(),
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "recipes": RECIPES,
        "shipped_recipe_samples_s": summary(rates["shipped"], 2),
        "new_recipe_samples_s": summary(rates["new"], 2),
        "new_recipe_160_samples_s": summary(rates["new_160"], 2),
        "speedup": summary(speedups, 2),
        "loader_samples_s": summary(loader, 1),
        "new_recipe_streamed_samples_s": {
            f"{w}_loader_workers": summary(v, 2) for w, v in streamed.items()
        },
        "utilisation": {name: summary(u, 2) for name, u in use.items()},
        "frozen_encoder_s_per_step": summary(frozen, 4),
        "frozen_encoder_share_of_new_step": round(statistics.median(frozen) / step, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
