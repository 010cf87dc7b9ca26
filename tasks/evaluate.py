"""Evaluate models and baselines at full resolution on a split, and write the report.

Each model predicts a*b* on its 200x200 padded view; the part inside the pad box is upsampled
and merged with the image's own full-resolution L, then compared to the original. Baselines:
``gray`` (a*b* = 0) and ``mean_ab`` (the training split's mean a*b*).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import torch
import webdataset as wds
from PIL import Image
from tqdm import tqdm

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


def _thumb(rgb: np.ndarray, size: int = 384) -> bytes:
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
    names = list(BASELINES) + list(models)
    rows, pooled = [], {n: [] for n in [*names, "ground_truth"]}
    grid: list[dict] = []
    pil_guards()  # stored images may exceed Pillow's own pixel limit (--max-pixels)
    for i, (key, jpg, feat) in enumerate(_progress(root, backbone, split, cfg.limit)):
        rgb = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
        lab = rgb_to_lab(rgb)
        box = tuple(feat["json"]["box200"])
        light = torch.from_numpy(feat["l.npy"].astype(np.float32) / 255.0)[None, None]
        emb = torch.from_numpy(feat["emb.npy"].astype(np.float32))[None]
        light_star = light[0, 0].numpy() * 100.0  # the guide of the upsampling
        views = _predict_views(models, light, emb, (mean_a, mean_b))
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
        for name, f in zip(outputs, _pooled(fd_net, outputs), strict=True):
            pooled[name].append(f)
        if i < samples:
            grid.append({"key": key, **{n: _thumb(o) for n, o in outputs.items()}})
    if not rows:
        raise KoalaError(f"the {split} split of {root} is empty")
    metrics = pd.DataFrame(rows)
    summary = summarize(metrics, pooled)
    write_report(
        report,
        metrics,
        summary,
        grid,
        names,
        split,
        intro,
        appendix,
        cards=cards,
        data_index_sha256=index_sha256(root),
    )
    return summary


def _predict_views(
    models: dict, light: torch.Tensor, emb: torch.Tensor, mean_ab: tuple[float, float]
) -> dict[str, np.ndarray]:
    """The ab views at 200 px of the two baselines (gray, the training mean) and every model."""
    shape = light.shape[-2:]
    views = {
        "gray": np.zeros((2, *shape), np.float32),
        "mean_ab": np.stack([np.full(shape, v, np.float32) for v in mean_ab]),
    }
    with torch.inference_mode():
        for name, model in models.items():
            views[name] = predict_ab(model, light, emb)[0].numpy()
    return views


def _pooled(fd_net, outputs: dict[str, np.ndarray]) -> np.ndarray:
    """EfficientNet-Lite0 pooled features of each output, for the Fréchet distance."""
    size = fd_net.info.input_size
    with torch.inference_mode():
        batch = np.stack([resize_and_pad(Image.fromarray(o), size)[0] for o in outputs.values()])
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        return fd_net.pooled_rgb(pixels).numpy()


def _progress(
    root: str, backbone: str, split: str, limit: int | None
) -> Iterator[tuple[str, bytes, dict]]:
    """:func:`split_samples` (the first ``limit``) with a bar in images on a terminal."""
    url = storage.join(root, "index.parquet")
    total = None
    if storage.exists(url):
        total = int((storage.read_parquet(url, columns=["split"])["split"] == split).sum())
        total = min(total, limit or total)
    samples = islice(split_samples(root, backbone, split), limit)
    yield from tqdm(
        samples,
        total=total,
        desc=f"evaluate {split}",
        unit=" image",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )


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
#: metric column: (header, unit, meaning); the direction comes from :func:`direction`
GLOSSARY = {
    "psnr": ("PSNR", "dB", "peak signal-to-noise ratio of the RGB image against the original"),
    "ssim": ("SSIM", "0 to 1", "structural similarity of the RGB image to the original"),
    "ab_mae": ("a*b* error", "CIELAB a*b* units", "mean absolute error of the colour channels"),
    "ab_auc": (
        "a*b* AUC",
        "0 to 1",
        "share of pixels whose a*b* lies within a distance of the original's, averaged over "
        "thresholds 0 to 150 (Zhang et al.)",
    ),
    "ab_acc_10": (
        "a*b* within 10",
        "share, 0 to 1",
        "share of pixels whose a*b* lies within 10 units of the original's",
    ),
    "colourfulness": (
        "Colourfulness",
        "Hasler–Süsstrunk M",
        "how colourful the output is; neither higher nor lower is better in itself (the "
        "original's is the reference: see the ratio)",
    ),
    "colourfulness_ratio": (
        "Colourfulness ratio",
        "× the original's",
        "mean colourfulness of the outputs over that of the originals; 1 matches them",
    ),
    "colourfulness_gap_abs": (
        "Colourfulness gap",
        "Hasler–Süsstrunk M",
        "mean absolute difference between each output's colourfulness and its original's",
    ),
    "saturation_diff": (
        "Saturation difference",
        "HSV saturation, 0 to 1",
        "absolute difference of mean HSV saturation from the original's",
    ),
    "fd_lite0": (
        "FD-lite0",
        "squared feature distance",
        "Fréchet distance between EfficientNet-Lite0 pooled features of the outputs and of "
        "the originals (not Inception FID; not comparable to published FIDs)",
    ),
}
#: how each direction is written: arrow, words
DIRECTIONS = {
    "higher": ("↑", "higher is better"),
    "lower": ("↓", "lower is better"),
    "one": ("→1", "closest to 1 is better"),
    "none": ("", "no better direction"),
}
#: sample columns: label shown under each image
SAMPLE_LABELS = {
    "ground_truth": "ground truth (original colour)",
    "gray": "baseline: gray (a*b* = 0)",
    "mean_ab": "baseline: mean a*b* of the training split",
}
#: shown width of the sample images (pixels)
SAMPLE_PX = 384


def direction(col: str) -> str:
    """Which way ``col`` is better: ``higher``, ``lower``, ``one`` (closest to 1) or ``none``."""
    if col in HIGHER_IS_BETTER:
        return "higher"
    return {"colourfulness_ratio": "one", "colourfulness": "none"}.get(col, "lower")


def best_model(summary: dict, names: list[str], col: str) -> str:
    """The best model on ``col``: highest, lowest, or (colourfulness ratio) closest to 1."""
    vals = {n: summary[n][col] for n in names}
    if col in HIGHER_IS_BETTER:
        return max(vals, key=vals.__getitem__)
    if col == "colourfulness_ratio":
        return min(vals, key=lambda n: abs(vals[n] - 1))
    return min(vals, key=vals.__getitem__)


def index_sha256(root: str) -> str | None:
    """The sha256 of the dataset root's ``index.parquet`` (what model cards record as
    ``data_index_sha256``); None when it has none."""
    url = storage.join(root, "index.parquet")
    return hashlib.sha256(storage.read_bytes(url)).hexdigest() if storage.exists(url) else None


def split_overlap_warning(card: dict, data_index_sha256: str | None, split: str) -> str | None:
    """A warning when the model of ``card`` saw the scored ``split`` of this dataset (whose
    ``index.parquet`` has ``data_index_sha256``): it trained on ``train``, and early-stopped
    and calibrated on ``val``. None for ``test``, another dataset, or when unknown."""
    if not data_index_sha256 or card.get("data_index_sha256") != data_index_sha256:
        return None
    name = f"{card.get('name', 'the model')}@{card.get('version', '?')}"
    if split == "train":
        return (
            f"{name} was trained on this dataset's train split, the split scored here: its "
            "scores measure how well it fits its own training images, and are optimistic."
        )
    if split == "val":
        return (
            f"{name} was trained on this dataset, and its val split (scored here) chose its "
            "best epoch and calibrated its colours: its scores are optimistic."
        )
    return None


def _header(col: str) -> str:
    label, unit, _ = GLOSSARY[col]
    arrow, words = DIRECTIONS[direction(col)]
    return (
        f"<th title='{html.escape(col)}: {words}'><a href='#m-{col}'>{html.escape(label)}</a>"
        f"<br><small>{html.escape(unit)}</small> {arrow}</th>"
    )


def glossary_html(columns: list[str]) -> str:
    """The glossary of the table's ``columns``: name, column, unit, direction, meaning."""
    rows = "".join(
        f"<tr id='m-{c}'><th>{html.escape(GLOSSARY[c][0])}</th><td><code>{html.escape(c)}</code>"
        f"</td><td>{html.escape(GLOSSARY[c][1])}</td><td>{' '.join(DIRECTIONS[direction(c)])}"
        f"</td><td>{html.escape(GLOSSARY[c][2])}</td></tr>"
        for c in columns
    )
    return (
        "<h2 id='glossary'>Glossary</h2><table class='glossary'><tr><th>metric</th><th>column"
        "</th><th>unit</th><th>better</th><th>meaning</th></tr>"
        f"{rows}</table><p>Each value is the mean over the scored images (FD-lite0 and the "
        "ratio: over the whole set); per-image values are in <code>metrics.parquet</code>, "
        "means in <code>summary.json</code>, under the column names.</p>"
    )


def _metrics_table(summary: dict, names: list[str]) -> str:
    best = {c: best_model(summary, names, c) for c in TABLE_COLUMNS if direction(c) != "none"}
    body = ""
    for n in names:
        cells = "".join(
            f"<td class='{'best' if best.get(c) == n else ''}'>{summary[n][c]:.4g}</td>"
            for c in TABLE_COLUMNS
        )
        body += f"<tr><th>{html.escape(n)}</th>{cells}</tr>"
    head = "<th>model</th>" + "".join(_header(c) for c in TABLE_COLUMNS)
    return f"<table class='metrics'><tr>{head}</tr>{body}</table>"


def _samples_html(report: str, grid: list[dict], names: list[str]) -> str:
    """Each sample's images side by side, ground truth first (it stays in view while the row
    scrolls), then the models, then the baselines; the images are written to ``samples/``."""
    models = [n for n in names if n not in BASELINES]
    columns = ["ground_truth", *models, *[n for n in BASELINES if n in names]]
    out = ""
    for row in grid:
        figures = ""
        for n in columns:
            path = f"samples/{row['key']}-{n.replace('@', '_')}.jpg"
            storage.atomic_write_bytes(storage.join(report, path), row[n])
            label = SAMPLE_LABELS.get(n, f"model: {n}")
            figures += (
                f"<figure class='{'truth' if n == 'ground_truth' else ''}'><img "
                f"src='{html.escape(quote(path))}' alt='{html.escape(label)}'>"
                f"<figcaption>{html.escape(label)}</figcaption></figure>"
            )
        out += f"<h3>{html.escape(str(row['key']))}</h3><div class='sample'>{figures}</div>"
    return out or "<p>none</p>"


REPORT_STYLE = f"""body{{font-family:sans-serif;margin:2em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
table.metrics td{{text-align:right;font-variant-numeric:tabular-nums}}
table.metrics th{{vertical-align:bottom}}th a{{color:inherit}}
table.glossary td,table.glossary th{{text-align:left;vertical-align:top}}
td.best{{background:#cfc;font-weight:bold}}
.warning{{border:2px solid #c60;background:#fff3e0;padding:.5em 1em;margin:1em 0}}
.sample{{display:flex;gap:8px;overflow-x:auto;padding-bottom:8px}}
.sample figure{{margin:0;flex:none;background:#fff}}
.sample figure.truth{{position:sticky;left:0;z-index:1;border-right:3px solid #fff}}
.sample img{{width:{SAMPLE_PX}px;display:block}}
figcaption{{font-size:small;color:#444;text-align:center;max-width:{SAMPLE_PX}px}}"""


def write_report(
    report: str,
    metrics: pd.DataFrame,
    summary: dict,
    grid: list[dict],
    names: list[str],
    split: str,
    intro: str = "",
    appendix: str = "",
    cards: list[dict] | None = None,
    data_index_sha256: str | None = None,
) -> None:
    """``metrics.parquet``, ``summary.json`` and ``index.html`` (table, glossary and samples).
    ``cards`` (the models') and ``data_index_sha256`` (of the scored dataset's index, see
    :func:`index_sha256`) give a warning when a model saw the scored split."""
    storage.makedirs(report)
    storage.write_parquet(storage.join(report, "metrics.parquet"), metrics)
    storage.atomic_write_bytes(
        storage.join(report, "summary.json"), json.dumps(summary, indent=2).encode()
    )
    warnings = [split_overlap_warning(c, data_index_sha256, split) for c in cards or []]
    boxes = "".join(
        f"<div class='warning' role='alert'><b>Warning:</b> {html.escape(w)}</div>"
        for w in warnings
        if w
    )
    n_images = summary[names[0]]["images"]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Koala evaluation</title><style>{REPORT_STYLE}</style></head><body>
<h1>Koala evaluation: {html.escape(split)} split, {n_images} images, full resolution</h1>
{boxes}<p>Models predict a*b* at 200x200; a*b* is upsampled and merged with each image's own L.
Best value per column in green; ↑ higher is better, ↓ lower, →1 closest to 1 (see the
<a href="#glossary">glossary</a>). FD-lite0 is a Fréchet distance on EfficientNet-Lite0 pooled
features, not Inception FID.</p>{intro}
{_metrics_table(summary, names)}
{glossary_html(TABLE_COLUMNS)}
<h2>Samples</h2><p>The original beside each model's output and the baselines'.</p>
{_samples_html(report, grid, names)}{appendix}</body></html>"""
    storage.atomic_write_bytes(storage.join(report, "index.html"), page.encode())


def report_path(report: str) -> str:
    return str(Path(report) / "index.html") if storage.is_local(report) else f"{report}/index.html"
