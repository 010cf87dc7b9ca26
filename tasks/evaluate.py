"""Evaluate models and baselines at full resolution on a split, and write the report.

Each model predicts a*b* on its 200x200 padded view; the part inside the pad box is upsampled
and merged with the image's own full-resolution L, then compared to the original. Baselines:
``gray`` (a*b* = 0) and ``mean_ab`` (the training split's mean a*b*).
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import webdataset as wds
from PIL import Image

from koala import storage
from koala.colour import lab_to_rgb, merge_full_resolution, resize_and_pad, rgb_to_lab
from koala.errors import KoalaError
from koala.images import pil_guards
from koala.metrics import HIGHER_IS_BETTER, frechet_distance, image_metrics
from models.backbones import load_backbone
from models.calibration import predict_ab
from models.config import EFFICIENTNET_LITE0
from models.data import feature_shards
from models.registry import load_model
from tasks.config import EvaluateConfig

BASELINES = ("gray", "mean_ab")


def split_samples(root: str, backbone: str, split: str) -> Iterator[tuple[str, bytes, dict]]:
    """(key, original JPEG bytes, feature sample) for every image of ``split``, in shard order."""
    storage.register_webdataset_schemes()
    for feat_url in feature_shards(root, backbone, split):
        shard = feat_url.rsplit("/", 1)[-1]
        data_url = storage.join(root, "shards", shard)
        feats = wds.WebDataset(feat_url, shardshuffle=False).decode()
        originals = wds.WebDataset(data_url, shardshuffle=False)
        for f, o in zip(feats, originals, strict=True):
            if f["__key__"] != o["__key__"]:
                raise KoalaError(f"{feat_url} is out of step with {data_url}: rerun preprocess")
            yield f["__key__"], o["jpg"], f


def train_mean_ab(root: str, backbone: str, cards: list[dict]) -> tuple[float, float]:
    """The mean a*b* of the dataset's training split, or, for a dataset without one (a new
    collection evaluated with a shipped model), of the first model's training data."""
    url = storage.join(root, "features", backbone, "index.parquet")
    if not storage.exists(url):
        raise KoalaError(f"no features index at {url} (run koala preprocess first)")
    index = storage.read_parquet(url)
    train = index[index["split"] == "train"]
    if len(train):
        return float(train["a_mean"].mean()), float(train["b_mean"].mean())
    for card in cards:
        if card.get("train_mean_ab"):
            return tuple(card["train_mean_ab"])
    raise KoalaError(
        f"no training split under {root} and no model card with its training "
        "mean a*b*: cannot form the mean-ab baseline"
    )


def _thumb(rgb: np.ndarray, size: int = 256) -> bytes:
    img = Image.fromarray(rgb)
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def evaluate_models(
    root: str,
    specs: list[str],
    report: str,
    backbone: str,
    cfg: EvaluateConfig,
    intro: str = "",
    appendix: str = "",
) -> dict:
    """Score ``specs`` (``name[@version]``) and the baselines on ``cfg.split``; write the report
    (``intro`` and ``appendix``: extra HTML before the table and after the samples)."""
    split, samples = cfg.split, cfg.samples
    models, cards = {}, []
    for spec in specs:
        model, card = load_model(root, spec)
        models[f"{card['name']}@{card['version']}"] = model
        cards.append(card)
    mean_a, mean_b = train_mean_ab(root, backbone, cards)
    fd_net = load_backbone(EFFICIENTNET_LITE0)
    fd_size = fd_net.info.input_size
    names = list(BASELINES) + list(models)
    rows, pooled = [], {n: [] for n in [*names, "ground_truth"]}
    grid: list[dict] = []
    pil_guards()  # stored images may exceed Pillow's own pixel limit (--max-pixels)
    for i, (key, jpg, feat) in enumerate(islice(split_samples(root, backbone, split), cfg.limit)):
        rgb = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
        lab = rgb_to_lab(rgb)
        box = tuple(feat["json"]["box200"])
        light = torch.from_numpy(feat["l.npy"].astype(np.float32) / 255.0)[None, None]
        emb = torch.from_numpy(feat["emb.npy"].astype(np.float32))[None]
        light_star = light[0, 0].numpy() * 100.0  # the guide of the upsampling
        views = {
            "gray": np.zeros((2, *light.shape[-2:]), np.float32),
            "mean_ab": np.stack(
                [
                    np.full(light.shape[-2:], mean_a, np.float32),
                    np.full(light.shape[-2:], mean_b, np.float32),
                ]
            ),
        }
        with torch.inference_mode():
            for name, model in models.items():
                views[name] = predict_ab(model, light, emb)[0].numpy()
        outputs = {}
        for name in names:
            merged = merge_full_resolution(lab, views[name], box, light_view=light_star)
            outputs[name] = lab_to_rgb(merged)
            rows.append(
                {
                    "key": key,
                    "model": name,
                    "split": split,
                    **image_metrics(outputs[name], rgb, merged[..., 1:], lab[..., 1:]),
                }
            )
        outputs["ground_truth"] = rgb
        with torch.inference_mode():
            batch = np.stack(
                [resize_and_pad(Image.fromarray(o), fd_size)[0] for o in outputs.values()]
            )
            feats = fd_net.pooled_rgb(torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0)
        for name, f in zip(outputs, feats.numpy(), strict=True):
            pooled[name].append(f)
        if i < samples:
            grid.append({"key": key, **{n: _thumb(o) for n, o in outputs.items()}})
    if not rows:
        raise KoalaError(f"the {split} split of {root} is empty")
    metrics = pd.DataFrame(rows)
    summary = summarize(metrics, pooled)
    write_report(report, metrics, summary, grid, names, split, intro, appendix)
    return summary


def summarize(metrics: pd.DataFrame, pooled: dict[str, list[np.ndarray]]) -> dict:
    """Per model: mean of each metric, the mean absolute colourfulness gap, and FD-lite0."""
    truth = np.stack(pooled["ground_truth"])
    out = {}
    for name, group in metrics.groupby("model", sort=False):
        means = group.drop(columns=["key", "model", "split"]).mean().to_dict()
        means["colourfulness_gap_abs"] = float(group["colourfulness_gap"].abs().mean())
        means["colourfulness_ratio"] = float(
            group["colourfulness"].mean() / max(group["colourfulness_true"].mean(), 1e-9)
        )
        means["fd_lite0"] = frechet_distance(np.stack(pooled[name]), truth)
        means["images"] = len(group)
        out[name] = {k: float(v) if k != "images" else v for k, v in means.items()}
    return out


TABLE_COLUMNS = [
    "psnr",
    "ssim",
    "ab_mae",
    "ab_auc",
    "ab_acc_10",
    "colourfulness",
    "colourfulness_ratio",
    "colourfulness_gap_abs",
    "saturation_diff",
    "fd_lite0",
]


def best_model(summary: dict, names: list[str], col: str) -> str:
    """The best model on ``col``: highest, lowest, or (colourfulness ratio) closest to 1."""
    vals = {n: summary[n][col] for n in names}
    if col in HIGHER_IS_BETTER:
        return max(vals, key=vals.__getitem__)
    if col == "colourfulness_ratio":
        return min(vals, key=lambda n: abs(vals[n] - 1))
    return min(vals, key=vals.__getitem__)


def write_report(
    report: str,
    metrics: pd.DataFrame,
    summary: dict,
    grid: list[dict],
    names: list[str],
    split: str,
    intro: str = "",
    appendix: str = "",
) -> None:
    """``metrics.parquet``, ``summary.json`` and ``index.html`` (table and sample grid)."""
    storage.makedirs(report)
    storage.write_parquet(storage.join(report, "metrics.parquet"), metrics)
    storage.atomic_write_bytes(
        storage.join(report, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    best = {col: best_model(summary, names, col) for col in TABLE_COLUMNS if col != "colourfulness"}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *TABLE_COLUMNS])
    body = ""
    for n in names:
        cells = "".join(
            f"<td class='{'best' if best.get(c) == n else ''}'>{summary[n][c]:.4g}</td>"
            for c in TABLE_COLUMNS
        )
        body += f"<tr><th>{html.escape(n)}</th>{cells}</tr>"
    columns = ["gray", *[n for n in names if n not in BASELINES], "mean_ab", "ground_truth"]
    tiles = ""
    for row in grid:
        cells = []
        for n in columns:
            path = f"samples/{row['key']}-{n.replace('@', '_')}.jpg"
            storage.atomic_write_bytes(storage.join(report, path), row[n])
            cells.append(f"<td><img src='{path}' alt='{html.escape(n)}'></td>")
        tiles += "<tr>" + "".join(cells) + "</tr>"
    grid_head = "".join(f"<th>{html.escape(n)}</th>" for n in columns)
    n_images = summary[names[0]]["images"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Koala evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td.best{{background:#cfc;font-weight:bold}}
img{{max-width:220px;display:block}}</style></head><body>
<h1>Koala evaluation: {html.escape(split)} split, {n_images} images, full resolution</h1>
<p>Models predict a*b* at 200x200; a*b* is upsampled and merged with each image's own L.
Best value per column in green (colourfulness ratio: closest to 1). FD-lite0 is a Fréchet
distance on EfficientNet-Lite0 pooled features, not Inception FID.</p>{intro}
<table><tr>{head}</tr>{body}</table>
<h2>Samples</h2><table><tr>{grid_head}</tr>{tiles}</table>{appendix}</body></html>"""
    storage.atomic_write_bytes(storage.join(report, "index.html"), page.encode())


def report_path(report: str) -> str:
    return str(Path(report) / "index.html") if storage.is_local(report) else f"{report}/index.html"
