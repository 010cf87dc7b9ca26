"""Recipe for the shipped colour judges (``koala/colour_judge.safetensors``, and with
``--seed0 30000000 --out koala/colour_judge_second.safetensors`` the second judge: the same
recipe on other pictures).

Training pictures are made on the fly by ``bench/monochrome.py``'s printers (recipe v3), from
the TUNE half of its sources only (never a held-out collection), plus colour photographs in no
half of the set (BernieChen96/ImageClassification ``JPEGImages/``, every 10th image of
thunderInfy/imagenette ``train/``): half colour (as they are, in a surround, under one dominant
cast, faded, hand-tinted), half monochrome (toned and aged with stains, foxing, cracks, ink,
stamps, colour bars, noise, fringing; or the same in a surround: margins, mounts, rounded, torn
and cracked edges, scanner bed, a target or ruler beside), printed at 480 px and saved as JPEG.
Each goes through the cascade's own measures (``koala.monochrome.measure``) into the judge's
96x96 view. Seeds start at 10,000,000 (``--seed0``) so no training picture is one of the
calibration set's.
Prints progress, then one JSON line.

    python bench/train_colour_judge.py [--pictures 8000] [--epochs 12] [--out PATH] [--pool NPZ]
        [--workers 2] [--mirror /work/.mirror] [--bsds ../shared/datasets/bsds500]
        [--seed0 N] [--real-seed0 N]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import monochrome as printers  # noqa: E402
import scan_printers  # noqa: E402

from koala.colour_judge import JUDGE_WEIGHTS, ColourJudge, export_onnx, save_judge  # noqa: E402
from koala.monochrome import judge_view, measure  # noqa: E402

RECIPE = "colour-judge-v2"
PRINT_SIDE = 480  #: training prints are made at this long side (the judge sees a 96 px view)
SEED0 = 10_000_000  #: training seeds start here, far from the calibration set's
_SOURCES: list = []
_REAL: list = []
_CACHE: dict = {}
REAL_SEED = 1_000_000  #: seeds of the real-scan pictures start here (after REAL_SEED0)
REAL_SEED0 = SEED0  #: the base of the real-scan pictures' seeds (``--real-seed0``)


#: colour photographs that are in no half of the calibration set (people, vehicles, streets)
EXTRA_SOURCES = (
    ("colour", "BernieChen96+ImageClassification", "JPEGImages/", ".jpg", 1),
    ("colour", "thunderInfy+imagenette", "train/", "", 10),
)
MONO_SHARE = 0.05  #: how often a real monochrome scan (DDColor) is the source


def training_sources(mirror: Path, bsds: Path) -> list:
    """The TUNE half of the calibration set's sources, plus the extra colour photographs."""
    found, _ = printers.mirror_sources(mirror)
    extra, missing = printers.mirror_sources(mirror, EXTRA_SOURCES)
    if missing:
        raise SystemExit(f"fetch {missing} first (the `fetch` tool brings it to {mirror})")
    tune = [s for s in found + printers.bsds_sources(bsds) if printers.split_of(s.name) == "tune"]
    return tune + extra


def _init(mirror: Path, bsds: Path) -> None:
    _SOURCES[:] = training_sources(mirror, bsds)
    _REAL[:] = printers.real_scan_sources(mirror, "tune")


def _real_scan(rng: np.random.Generator) -> np.ndarray:
    """One of the tune half's real historic scans (cached at :data:`PRINT_SIDE`), cropped."""
    while True:
        src = _REAL[int(rng.integers(len(_REAL)))]
        if src.name not in _CACHE:
            img = src.load()
            _CACHE[src.name] = (
                None if img is None else printers.scan_size(img.convert("RGB"), PRINT_SIDE)
            )
        if _CACHE[src.name] is not None:
            break
    rgb = _CACHE[src.name]
    h, w = rgb.shape[:2]
    ch, cw = int(h * rng.uniform(0.7, 1.0)), int(w * rng.uniform(0.7, 1.0))
    y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    return rgb[y : y + ch, x : x + cw]


def make_real_picture(seed: int) -> tuple[np.ndarray, int]:
    """A training picture made from a real historic scan (label 1 = mono): as it is, or under
    a global or gradual colour cast (scanner white balance, paper discolouration), or toned
    again from its L*; a quarter of them in a surround."""
    rng = np.random.default_rng(REAL_SEED0 + REAL_SEED + seed)
    rgb = _real_scan(rng)
    kind = rng.random()
    if kind < 0.2:
        tone = str(rng.choice(list(printers.TONES)))
        rgb = printers.tone_ramp(printers.rgb2lab(rgb)[..., 0] / 100.0, tone, rng)
    elif kind < 0.6:
        lab = printers.rgb2lab(rgb)
        cast = rng.normal(0, 2.5, 2) + printers.smooth_field(rng, *rgb.shape[:2])[
            ..., None
        ] * rng.normal(0, 4, 2)
        lab[..., 1:] += cast
        rgb = np.clip(printers.lab2rgb(lab), 0, 1)
    if rng.random() < 0.25:
        rgb, _ = scan_printers.in_surround(rgb, rng)
    return _view(rgb, rng), 1


def _view(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The judge's view of ``rgb`` after a JPEG round trip (quality 60-95)."""
    buf = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buf, "JPEG", quality=int(rng.integers(60, 96))
    )
    return judge_view(measure(Image.open(buf).convert("RGB"))).astype(np.float16)


def make_picture(seed: int) -> tuple[np.ndarray, int]:
    """One training picture as the judge sees it (5, side, side) and its label (1 = mono):
    half colour (the calibration set's colour case types in turn), half monochrome (toned,
    toned in a surround, or a real historic scan as it is or toned), printed at
    :data:`PRINT_SIDE` and saved as JPEG first."""
    rng = np.random.default_rng(SEED0 + seed)
    mono = [s for s in _SOURCES if s.label == "monochrome"]
    colour = [s for s in _SOURCES if s.label == "colour"]
    historic = rng.random() < MONO_SHARE
    src = (mono if historic else colour)[rng.integers(len(mono if historic else colour))]
    tone = str(rng.choice(list(printers.TONES)))
    if historic:
        item = printers.Item("", "monochrome", "historic", "", src.name, [tone] * (seed % 2))
        label = 1
    elif rng.random() < 0.5:
        case = str(rng.choice(printers.MONO_CASES))
        item, label = printers.Item("", "monochrome", case, "", src.name, [tone]), 1
    else:
        item = printers.Item("", "colour", str(rng.choice(printers.COLOUR_CASES)), "", src.name)
        label = 0
    img = src.load()
    if label == 0 and printers.is_gray(img):
        item, label = printers.Item("", "monochrome", "toned", "", src.name, [tone]), 1
    rgb, _ = printers.print_item(item, img, rng, PRINT_SIDE)
    return _view(rgb, rng), label


def make_pictures(
    n: int, mirror: Path, bsds: Path, workers: int = 2, maker=make_picture
) -> tuple[torch.Tensor, torch.Tensor]:
    views, labels = [], []
    with Pool(workers, initializer=_init, initargs=(mirror, bsds)) as pool:
        for i, (v, y) in enumerate(pool.imap(maker, range(n), chunksize=8)):
            views.append(v)
            labels.append(y)
            if (i + 1) % 500 == 0:
                print(f"{i + 1}/{n} pictures", file=sys.stderr, flush=True)
    return torch.from_numpy(np.stack(views)), torch.tensor(labels, dtype=torch.float32)


def train(views: torch.Tensor, labels: torch.Tensor, epochs: int, batch: int = 64) -> ColourJudge:
    """AdamW with a one-cycle schedule; flips and quarter turns as augmentation; the classes
    weighted equally (the real-scan pictures are all monochrome)."""
    torch.manual_seed(0)
    balance = (labels == 0).sum() / (labels == 1).sum()  # weight of a monochrome picture
    gen = torch.Generator().manual_seed(0)
    model = ColourJudge().train()
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-3)
    steps = epochs * (len(views) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        order, total, t0 = torch.randperm(len(views), generator=gen), 0.0, time.time()
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            x = views[idx].float()
            if torch.rand(1, generator=gen).item() < 0.5:
                x = x.flip(3)
            x = torch.rot90(x, int(torch.randint(4, (1,), generator=gen)), (2, 3))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(x), labels[idx], pos_weight=balance
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(
            f"epoch {epoch + 1}/{epochs} loss {total / (len(order) // batch):.4f} "
            f"({time.time() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    return model.eval()


def _pool(path: Path | None, n: int, args, maker) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pictures made by ``maker``, kept in (or reused from) the .npz at ``path``."""
    if path and path.exists():
        saved = np.load(path)
        return torch.from_numpy(saved["views"]), torch.from_numpy(saved["labels"])
    views, labels = make_pictures(n, args.mirror, args.bsds, args.workers, maker)
    if path:
        np.savez(path, views=views.numpy(), labels=labels.numpy())
    return views, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pictures", type=int, default=8000)
    ap.add_argument("--real-pictures", type=int, default=2500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=JUDGE_WEIGHTS)
    ap.add_argument("--pool", type=Path, help="keep (or reuse) the made pictures in this .npz")
    ap.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--bsds", type=Path, default=REPO.parent / "shared/datasets/bsds500")
    ap.add_argument(
        "--seed0", type=int, default=SEED0, help="first seed (another gives other pictures)"
    )
    ap.add_argument("--real-seed0", type=int, help="first seed of the real-scan pictures' base")
    args = ap.parse_args()
    # the picture makers read these (forked workers inherit them)
    globals()["SEED0"] = args.seed0
    globals()["REAL_SEED0"] = args.seed0 if args.real_seed0 is None else args.real_seed0
    torch.set_num_threads(2)
    made = [
        _pool(pool, n, args, maker)
        for pool, n, maker in (
            (args.pool, args.pictures, make_picture),
            (
                args.pool and args.pool.with_name(args.pool.stem + "-real.npz"),
                args.real_pictures,
                make_real_picture,
            ),
        )
        if n
    ]
    views, labels = (torch.cat([m[k] for m in made]) for k in (0, 1))
    model = train(views, labels, args.epochs)
    extra = ", ".join(repo.replace("+", "/") for _, repo, *_ in EXTRA_SOURCES)
    meta = {
        "recipe": RECIPE,
        "pictures": args.pictures,
        "real_scan_pictures": args.real_pictures,
        "epochs": args.epochs,
        "seed0": args.seed0,
        "real_seed0": REAL_SEED0,
        "sources": f"tune half of bench/monochrome.py's sources and real scans + {extra}",
        "set_recipe": printers.RECIPE,
    }
    save_judge(model, args.out, meta)
    graph = export_onnx(args.out, args.out.with_suffix(".onnx"))  # what inference runs
    print(json.dumps({**meta, "weights": str(args.out), "graph": str(graph)}))


if __name__ == "__main__":
    main()
