"""Colour hints against none: PSNR of colorized photographs at full resolution with 0, 1, 5, 10
and 20 hints sampled from the truth (issue 28's protocol): points at random pixels, each with
the truth's a*b* averaged over the 5 x 5 patch around it (with the patch's L*, as sRGB).

Each photograph is made gray, colorized as ``koala colorize`` does it (the model's view, the
hints spread over their regions, the guided merge at full resolution) and compared with the
truth (RGB PSNR, and the colourfulness ratio). With a model that takes hints (issue 28's
hint-aware flagship) the hints also go into the network, and each way is scored apart:
``network`` (hints into the model only), ``spread`` (the model without hints, the hints
spread) and ``both`` (what ``koala colorize`` does); ``by_hints`` is the last.
Writes ``hints.png`` (PSNR against hints), ``samples.jpg`` (the first ``--samples``
photographs: truth, no hints, 10 hints with the hinted points ringed) and prints JSON last.

    python bench/hints.py --images ../shared/datasets/bsds500/val --out reports/hints
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import lab2rgb, rgb2lab
from skimage.metrics import peak_signal_noise_ratio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koala.colour import colorize_lightness, colourfulness
from koala.hints import Hint
from koala.scans import read_scan
from models.calibration import takes_hints
from models.config import FLAGSHIP
from tasks.colorize import _predict, ready_colorizer, resolve_device, with_hints
from tasks.config import ColorizeConfig

COUNTS = (0, 1, 5, 10, 20)


def truth_hints(rgb: np.ndarray, n: int, rng: np.random.Generator) -> list[Hint]:
    """``n`` point hints at random pixels: the truth's mean Lab over the 5 x 5 patch, as sRGB."""
    lab = rgb2lab(rgb)
    h, w = lab.shape[:2]
    out = []
    for _ in range(n):
        x, y = int(rng.integers(2, w - 2)), int(rng.integers(2, h - 2))
        mean = lab[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
        srgb = np.clip(lab2rgb(mean[None, None]) * 255 + 0.5, 0, 255).astype(int)[0, 0]
        out.append(Hint((x, y, x + 1, y + 1), tuple(int(v) for v in srgb), "truth", point=True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--model", default=FLAGSHIP)
    ap.add_argument(
        "--registry", help="where --model is registered (a dataset root; default: shipped)"
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=6, help="photographs in samples.jpg")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = ColorizeConfig(
        registry=args.registry or tempfile.mkdtemp(), model=args.model, output=str(args.out)
    )
    model, backbone, _ = ready_colorizer(cfg)
    device = resolve_device(cfg.device)
    files = sorted(args.images.glob("*.jpg"))[: args.limit]
    modes = ("network", "spread", "both") if takes_hints(model) else ("spread",)
    scores = {m: {n: [] for n in COUNTS} for m in modes}
    colour = {m: {n: [] for n in COUNTS} for m in modes}
    gray_psnr, rows = [], []
    for i, path in enumerate(files):
        truth = np.asarray(Image.open(path).convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(truth).convert("L").save(buf, "PNG")
        scan = read_scan(buf.getvalue(), "auto", cfg.limits)
        (plain,) = _predict(model, backbone, [scan], device, cfg.precision)
        gray = np.repeat(np.asarray(scan.view.convert("L"))[..., None], 3, -1)
        gray_psnr.append(peak_signal_noise_ratio(truth, gray, data_range=255))
        rng = np.random.default_rng(args.seed + i)
        for n in COUNTS:
            hints = truth_hints(truth, n, rng)
            for mode in modes:
                rgb = hinted_rgb(model, backbone, scan, plain, hints, mode, device, cfg.precision)
                scores[mode][n].append(peak_signal_noise_ratio(truth, rgb, data_range=255))
                colour[mode][n].append(colourfulness(rgb) / max(colourfulness(truth), 1e-6))
            if i < args.samples and n in (0, 10):
                rows.append(ringed(rgb, hints) if n else [truth, rgb])
        print(f"{i + 1}/{len(files)} images", file=sys.stderr)
    tables = {
        mode: {
            n: {
                "psnr": float(np.mean(scores[mode][n])),
                "colourfulness_ratio": float(np.mean(colour[mode][n])),
            }
            for n in COUNTS
        }
        for mode in modes
    }
    table = tables[modes[-1]]
    plot(tables, float(np.mean(gray_psnr)), args.out / "hints.png")
    montage(rows, args.out / "samples.jpg")
    summary = {
        "images": len(files),
        "model": args.model,
        "gray_psnr": float(np.mean(gray_psnr)),
        "by_hints": table,
        "by_mode": tables,
        "gain_10_over_0_db": table[10]["psnr"] - table[0]["psnr"],
    }
    (args.out / "hints.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


def hinted_rgb(model, backbone, scan, plain, hints, mode, device, precision) -> np.ndarray:
    """The full-resolution colorization of ``scan`` with ``hints`` taken the ``mode`` way;
    ``plain`` is its prediction without hints."""
    pred = plain
    if hints and mode in ("network", "both"):
        (pred,) = _predict(model, backbone, [scan], device, precision, hints=[hints])
    if mode in ("spread", "both"):
        pred = with_hints(pred, scan, hints)
    return colorize_lightness(scan.lightness, pred.ab, pred.box, light_view=pred.light)


def ringed(rgb: np.ndarray, hints: list[Hint]) -> np.ndarray:
    """``rgb`` with a white ring (and a black one) around each hinted point."""
    from PIL import ImageDraw

    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    for h in hints:
        x, y = h.box[:2]
        draw.ellipse((x - 7, y - 7, x + 7, y + 7), outline="white", width=2)
        draw.ellipse((x - 9, y - 9, x + 9, y + 9), outline="black", width=1)
    return np.asarray(img)


def montage(rows: list, path: Path, height: int = 240) -> None:
    """One row per photograph (truth | no hints | 10 hints), each scaled to ``height``."""
    lines = []
    for k in range(0, len(rows), 2):
        cells = [*rows[k], rows[k + 1]]
        scaled = [
            Image.fromarray(c).resize((round(c.shape[1] * height / c.shape[0]), height))
            for c in cells
        ]
        lines.append(np.concatenate([np.asarray(c) for c in scaled], 1))
    if lines:
        width = max(line.shape[1] for line in lines)
        padded = [
            np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255)
            for line in lines
        ]
        Image.fromarray(np.concatenate(padded, 0)).save(path, quality=90)


def plot(tables: dict, gray: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for mode, table in tables.items():
        label = "Koala + hints" if len(tables) == 1 else f"hints: {mode}"
        ax.plot(list(table), [v["psnr"] for v in table.values()], "o-", label=label)
    ax.axhline(gray, color="gray", ls=":", label="gray input")
    ax.set_xlabel("hints per image (points from the truth)")
    ax.set_ylabel("PSNR (dB), full resolution")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
