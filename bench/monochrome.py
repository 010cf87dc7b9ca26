"""Monochrome-or-colour calibration: builds a labelled set of scans and measures the decision.

Monochrome items are real historic photographs (piddnad/DDColor ``assets/test_images``) and
BSDS500 train/val photographs turned to gray, each printed in a tone (neutral, sepia, selenium,
cyanotype, yellowed) and aged with a seeded mix of the things real scans carry: uneven toning,
yellowed paper, water stains, foxing, cracks showing the paper, a handwritten ink note, a rubber
stamp, a colour calibration bar at an edge, chroma noise, scanner fringing, JPEG. Colour items are
BSDS500 train/val, the colour photographs of lee-gwang/Image_Colorization_For_Historical_Image,
as they are or faded (autochrome-like, 1970s print, mild), some with cracks and foxing too.

Every source goes whole into one half (``tune`` or ``held``, by a hash of its name); the colour
judge is trained on pictures printed from the ``tune`` half's sources only
(``bench/train_colour_judge.py``), so ``held`` measures it on pictures it never saw in any form.
Held-out sets (BSDS500 test, ImageNet samples, Bringing-Old-Photos
test images, CoverImages) are never read. The set is built once into ``--out`` (reused while its
recipe version matches). Prints a CSV of the misjudged items, then ONE JSON line of figures.

    python bench/monochrome.py [--out /tmp/koala-monochrome] [--mirror /work/.mirror]
        [--bsds ../shared/datasets/bsds500] [--rebuild]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.color import lab2rgb, rgb2lab

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
import scan_printers  # noqa: E402
from scan_printers import add_cracks, draw_mask  # noqa: E402

from koala.images import DEFAULT_LIMITS, colour_evidence  # noqa: E402

RECIPE = "monochrome-set-v3"
SCAN_SIDE = 960  #: long side of every built print (sources are resized to it)
LEE_GWANG = "lee-gwang+Image_Colorization_For_Historical_Image"
#: where real images come from: (label, repository, folder inside it, path filter, every k-th)
MIRROR_SOURCES = (
    ("monochrome", "piddnad+DDColor", "assets/test_images/", "", 1),
    ("colour", LEE_GWANG, "Hint-based Colorization/Demo/img/", "", 1),
    ("colour", LEE_GWANG, "Automatic Colorization/imgs/", ".jpg", 1),
    ("colour", "MachineLearning2020+Homework3-PACS", "PACS/photo/", "", 8),
    ("colour", "thunderInfy+imagenette", "val/", "", 16),
    ("colour", "q878787+imagewoof2-320", "val/", "", 40),
    ("monochrome", "Dawars+colorization_benchmark", "", "", 1),
)  # fmt: skip
#: real historic scans: jantic/DeOldify's test images as of this commit (MIT), all monochrome
#: prints (gray or toned, some on their mounts) but the four ``Faded*`` files (colorized
#: outputs, not scans); the tune half teaches the judge, the held half checks it
REAL_SCANS = ("jantic+DeOldify", "64495c33", "test_images/", "Faded")
#: case types: (label, name); each colour source makes one colour item, every other one a
#: monochrome item too
COLOUR_CASES = ("colour", "colour_surround", "dominant_tint", "faded", "hand_tinted")
MONO_CASES = ("toned", "toned_surround")
TONES = {  # (dark, mid, light) RGB of the print's tone ramp
    "neutral": ((0.06, 0.06, 0.06), (0.5, 0.5, 0.5), (0.95, 0.95, 0.94)),
    "sepia": ((0.17, 0.11, 0.06), (0.54, 0.42, 0.27), (0.96, 0.9, 0.78)),
    "selenium": ((0.16, 0.1, 0.13), (0.5, 0.44, 0.45), (0.94, 0.93, 0.9)),
    "cyanotype": ((0.04, 0.16, 0.35), (0.3, 0.5, 0.7), (0.86, 0.92, 0.96)),
    "yellowed": ((0.1, 0.09, 0.07), (0.55, 0.52, 0.42), (0.97, 0.93, 0.72)),
}
DEFECTS = (
    "uneven",
    "paper",
    "stain",
    "foxing",
    "cracks",
    "ink",
    "stamp",
    "target",
    "noise",
    "fringe",
)
FADES = ("original", "autochrome", "fade70s", "mild")


@dataclass
class Source:
    name: str
    label: str
    load: object  #: () -> PIL image
    licence: str


@dataclass
class Item:
    id: str
    label: str  #: "monochrome" or "colour"
    category: str  #: the case type (COLOUR_CASES, MONO_CASES, "historic")
    split: str
    source: str
    defects: list[str] = field(default_factory=list)


def split_of(name: str) -> str:
    return "tune" if zlib.crc32(name.encode()) % 2 == 0 else "held"


def _git_image(git_dir: Path, path: str):
    def load() -> Image.Image:
        data = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], capture_output=True, check=True
        ).stdout
        return Image.open(io.BytesIO(data)).convert("RGB")

    return load


def mirror_sources(mirror: Path, recipe: tuple = MIRROR_SOURCES) -> tuple[list[Source], list[str]]:
    """Images of the fetched repositories; also the repositories that are missing."""
    found, missing = [], []
    for label, repo, folder, suffix, every in recipe:
        git_dir = mirror / repo / "repo"
        if (git_dir / ".git").is_dir():
            git_dir = git_dir / ".git"
        if not git_dir.exists():
            missing.append(repo.replace("+", "/"))
            continue
        names = subprocess.run(
            ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "HEAD", "--name-only"],
            capture_output=True,
            text=True,
            check=True,
        )
        for path in sorted(names.stdout.splitlines())[::every]:
            low = path.lower()
            if (
                path.startswith(folder)
                and low.endswith((".jpg", ".jpeg", ".png"))
                and low.endswith(suffix or low[-4:])
                and "icon" not in low
            ):
                found.append(
                    Source(
                        f"{repo.split('+')[0]}/{Path(path).stem}",
                        label,
                        _git_image(git_dir, path),
                        repo.replace("+", "/"),
                    )
                )
    return found, missing


def bsds_sources(bsds: Path) -> list[Source]:
    """BSDS500 train and val only (test is held out)."""
    out = []
    for part in ("train", "val"):
        for f in sorted((bsds / part).glob("*.jpg")):
            out.append(
                Source(
                    f"bsds/{part}/{f.stem}",
                    "colour",
                    lambda f=f: Image.open(f).convert("RGB"),
                    "BSDS500",
                )
            )
    return out


def scan_size(img: Image.Image, side: int = SCAN_SIDE) -> np.ndarray:
    """Float RGB in [0, 1], resized so that its long side is ``side``."""
    w, h = img.size
    k = side / max(w, h)
    img = img.resize((round(w * k), round(h * k)), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.float64) / 255.0


def tone_ramp(gray: np.ndarray, tone: str, rng: np.random.Generator) -> np.ndarray:
    """A gray print in a tone: piecewise-linear ramp dark -> mid -> light (jittered)."""
    dark, mid, light = (np.array(c) + rng.normal(0, 0.01, 3) for c in TONES[tone])
    g = gray[..., None]
    low = dark + (mid - dark) * np.clip(g / 0.5, 0, 1)
    return np.where(g < 0.5, low, mid + (light - mid) * np.clip((g - 0.5) / 0.5, 0, 1))


def smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth map in [0, 1]: a linear gradient in a random direction, or radial."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    if rng.random() < 0.5:
        t = rng.uniform(0, 2 * np.pi)
        f = x * np.cos(t) + y * np.sin(t)
    else:
        f = np.hypot(x - rng.uniform(0, w / max(h, w)), y - rng.uniform(0, h / max(h, w)))
    return (f - f.min()) / max(np.ptp(f), 1e-9)


def blob(rng: np.random.Generator, h: int, w: int, area: float) -> tuple[np.ndarray, np.ndarray]:
    """An irregular stain-shaped region (soft mask) and its tide line, ``area`` of the frame."""
    r0 = np.sqrt(area * h * w / np.pi)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    y, x = np.mgrid[0:h, 0:w]
    theta = np.arctan2(y - cy, x - cx)
    r = np.full_like(theta, r0)
    for k in range(2, 7):
        r *= 1 + rng.uniform(0, 0.25 / k * 2) * np.cos(k * theta + rng.uniform(0, 6.3))
    rho = np.hypot(y - cy, x - cx) / r
    inside = np.clip((1.05 - rho) / 0.1, 0, 1)
    tide = np.exp(-(((rho - 0.97) / 0.04) ** 2))
    return inside, tide


def paint(rgb: np.ndarray, mask: np.ndarray, colour, alpha: float = 1.0) -> np.ndarray:
    """Multiply-blend an ink/dye of ``colour`` into ``rgb`` where ``mask`` is set."""
    m = (mask * alpha)[..., None]
    return rgb * (1 - m) + rgb * np.array(colour) * m


def add_stain(rgb, rng):
    h, w = rgb.shape[:2]
    for _ in range(rng.integers(1, 4)):
        inside, tide = blob(rng, h, w, rng.uniform(0.01, 0.06))
        brown = np.array((1.0, 0.85, 0.6)) - rng.uniform(0, 0.1, 3)
        rgb = paint(rgb, inside, brown, rng.uniform(0.25, 0.7))  # faint inside,
        rgb = paint(rgb, tide, (0.75, 0.55, 0.35), rng.uniform(0.4, 0.9))  # dark tide line
    return rgb


def add_foxing(rgb, rng):
    """Foxing: scattered small rust-brown spots."""
    h, w = rgb.shape[:2]
    spots = np.zeros((h, w))
    for _ in range(rng.integers(20, 120)):
        y, x, r = int(rng.uniform(0, h)), int(rng.uniform(0, w)), rng.uniform(1, 7)
        k = int(3 * r) + 1
        y0, y1, x0, x1 = max(0, y - k), min(h, y + k), max(0, x - k), min(w, x + k)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        spot = rng.uniform(0.3, 0.9) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * r * r))
        spots[y0:y1, x0:x1] = np.maximum(spots[y0:y1, x0:x1], spot)
    return paint(rgb, spots, (0.7, 0.45, 0.2))


def add_ink(rgb, rng):
    """A few lines of handwriting in blue or blue-black ink."""
    h, w = rgb.shape[:2]
    x0, y0 = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.85) * h
    size = rng.uniform(10, 22)
    lines = []
    for row in range(rng.integers(1, 4)):
        xs = np.arange(x0, min(w - 5, x0 + rng.uniform(0.25, 0.5) * w), 1.5)
        phase = rng.uniform(0, 6.3, 3)
        ys = (
            y0
            + row * size * 1.8
            + size * 0.4 * (np.sin(xs / 3.0 + phase[0]) + 0.5 * np.sin(xs / 7.1 + phase[1]))
        )
        lines.append(np.stack([xs, ys], 1))
    mask = draw_mask(h, w, lines, int(rng.integers(2, 4)))
    ink = (0.15, 0.2, 0.6) if rng.random() < 0.6 else (0.1, 0.1, 0.25)
    return paint(rgb, mask, ink, rng.uniform(0.7, 1.0))


def add_stamp(rgb, rng):
    """A red or purple rubber stamp: a ring (or box) with lettering, unevenly inked."""
    h, w = rgb.shape[:2]
    r = rng.uniform(0.06, 0.12) * w
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    box = [cx - r, cy - r, cx + r, cy + r]
    width = int(rng.integers(3, 8))
    (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, outline=255, width=width)
    for _ in range(rng.integers(6, 14)):  # letters: short strokes inside
        x, y = rng.uniform(cx - 0.6 * r, cx + 0.5 * r), rng.uniform(cy - 0.4 * r, cy + 0.3 * r)
        draw.line(
            [(x, y), (x + rng.uniform(-8, 8), y + rng.uniform(6, 14))],
            fill=255,
            width=max(2, width // 2),
        )
    mask = np.asarray(canvas, dtype=np.float64) / 255.0
    mask *= rng.uniform(0.4, 1.0, mask.shape) > 0.3  # uneven inking
    ink = (0.85, 0.15, 0.2) if rng.random() < 0.5 else (0.5, 0.2, 0.65)
    return paint(rgb, ndimage.gaussian_filter(mask, 0.7), ink, rng.uniform(0.6, 1.0))


def add_target(rgb, rng):
    """An 8-patch colour bar at one edge, 3-8% of the frame."""
    h, w = rgb.shape[:2]
    patches = np.array(
        [
            (0.8, 0.1, 0.1),
            (0.95, 0.55, 0.1),
            (0.95, 0.9, 0.1),
            (0.1, 0.6, 0.2),
            (0.1, 0.7, 0.8),
            (0.1, 0.2, 0.7),
            (0.75, 0.1, 0.6),
            (0.95, 0.95, 0.95),
        ]
    )
    area = rng.uniform(0.03, 0.08) * h * w
    side = int(rng.integers(4))
    along = h if side in (0, 1) else w
    length = int(rng.uniform(0.5, 1.0) * along)
    thick = max(8, int(area / length))
    bar = np.repeat(patches, int(np.ceil(length / 8)), axis=0)[:length]
    start = int(rng.integers(0, along - length + 1))
    out = rgb.copy()
    if side in (0, 1):  # left or right edge, vertical bar
        x = 0 if side == 0 else w - thick
        out[start : start + length, x : x + thick] = bar[:, None]
    else:
        y = 0 if side == 2 else h - thick
        out[y : y + thick, start : start + length] = bar[None, :]
    return out


def add_noise(rgb, rng):
    """Blotchy chroma noise as a cheap scanner or a film grain makes it."""
    h, w = rgb.shape[:2]
    cb, cr = (
        ndimage.gaussian_filter(rng.normal(0, 1, (h, w)), 1.5) * rng.uniform(0.02, 0.05)
        for _ in range(2)
    )
    out = rgb + np.stack([1.402 * cr, -0.344 * cb - 0.714 * cr, 1.772 * cb], -1)
    return np.clip(out, 0, 1)


def add_fringe(rgb, rng):
    """Colour fringing of a scanner whose red and blue lines are out of register."""
    d = int(rng.integers(1, 3))
    out = rgb.copy()
    out[..., 0] = np.roll(rgb[..., 0], d, axis=0)
    out[..., 2] = np.roll(rgb[..., 2], -d, axis=0)
    return out


def uneven(gray, tone, rng):
    """Toning that is strong in one part of the print and weak (or different) elsewhere."""
    strong = tone_ramp(gray, tone, rng)
    weak = tone_ramp(gray, "neutral" if tone != "neutral" else "sepia", rng)
    f = smooth_field(rng, *gray.shape)[..., None]
    return strong * f + weak * (1 - f)


def yellow_paper(rgb, rng):
    f = smooth_field(rng, *rgb.shape[:2])[..., None] * rng.uniform(0.3, 1.0)
    return rgb * (1 - f) + rgb * np.array((1.0, 0.93, 0.72)) * f


STEPS = {
    "stain": add_stain,
    "foxing": add_foxing,
    "cracks": add_cracks,
    "ink": add_ink,
    "stamp": add_stamp,
    "target": add_target,
    "noise": add_noise,
    "fringe": add_fringe,
    "paper": yellow_paper,
}


def make_monochrome(
    img: Image.Image, tone: str, rng: np.random.Generator, side: int = SCAN_SIDE
) -> tuple:
    """A toned, aged monochrome print of ``img`` and the defects it got."""
    rgb = scan_size(img, side)
    gray = rgb2lab(rgb)[..., 0] / 100.0
    gray = np.clip((gray - 0.5) * rng.uniform(0.7, 1.05) + 0.5 + rng.uniform(-0.05, 0.05), 0, 1)
    defects = [d for d in DEFECTS if rng.random() < 0.4]
    out = uneven(gray, tone, rng) if "uneven" in defects else tone_ramp(gray, tone, rng)
    for name in ("paper", "stain", "foxing", "cracks", "ink", "stamp", "target", "noise", "fringe"):
        if name in defects:
            out = STEPS[name](out, rng)
    return np.clip(out, 0, 1), defects


def make_colour(
    img: Image.Image, fade: str, rng: np.random.Generator, side: int = SCAN_SIDE
) -> tuple:
    """A colour photograph as it is or faded; some with cracks and foxing as well."""
    rgb = scan_size(img, side)
    if fade != "original":
        lab = rgb2lab(rgb)
        k = {"autochrome": (0.25, 0.45), "fade70s": (0.35, 0.6), "mild": (0.6, 0.85)}[fade]
        lab[..., 1:] *= rng.uniform(*k)
        if fade == "fade70s":  # magenta-orange cast, lifted blacks, dulled whites
            lab[..., 0] = 12 + lab[..., 0] * rng.uniform(0.75, 0.85)
            lab[..., 1] += rng.uniform(3, 10)
            lab[..., 2] += rng.uniform(5, 15)
        if fade == "autochrome":  # dim, low contrast, coloured starch-grain speckle, warm
            lab[..., 0] = 10 + lab[..., 0] * rng.uniform(0.7, 0.85)
            grain = ndimage.gaussian_filter(rng.normal(0, 1, (*lab.shape[:2], 2)), (1, 1, 0))
            lab[..., 1:] += grain * 6 + np.array((2.0, 6.0))
        rgb = np.clip(lab2rgb(lab), 0, 1)
    defects = [d for d in ("cracks", "foxing", "noise") if rng.random() < 0.25]
    for name in defects:
        rgb = STEPS[name](rgb, rng)
    return np.clip(rgb, 0, 1), defects


def plan(sources: list[Source]) -> list[tuple[Item, Source]]:
    """Which items are made from which source (deterministic): each colour photograph makes
    one colour item (the case types in turn) and every other one a monochrome print too; each
    historic scan is used as it is and in one tone."""
    out, tones = [], list(TONES)
    colour = [s for s in sources if s.label == "colour"]
    for i, src in enumerate(colour):
        base, split = src.name.replace("/", "_"), split_of(src.name)
        case = COLOUR_CASES[i % len(COLOUR_CASES)]
        out.append((Item(f"c_{base}_{case}", "colour", case, split, src.name), src))
        if i % 2 == 0:
            case = MONO_CASES[(i // 2) % len(MONO_CASES)]
            item = Item(f"m_{base}_{case}", "monochrome", case, split, src.name)
            item.defects = [tones[(i // 4) % len(tones)]]
            out.append((item, src))
    for i, src in enumerate(s for s in sources if s.label == "monochrome"):
        base, split = src.name.replace("/", "_"), split_of(src.name)
        out.append((Item(f"m_{base}_asis", "monochrome", "historic", split, src.name), src))
        item = Item(f"m_{base}_toned", "monochrome", "historic", split, src.name)
        item.defects = [tones[i % len(tones)]]
        out.append((item, src))
    return out


def print_item(
    item: Item, img: Image.Image, rng: np.random.Generator, side: int = SCAN_SIDE
) -> tuple[np.ndarray, list[str]]:
    """The scan of ``item`` made from the photograph ``img`` and what it got."""
    case = item.category
    if case == "historic" and not item.defects:
        return scan_size(img, side), []
    if item.label == "monochrome":
        rgb, got = make_monochrome(img, item.defects[0], rng, side)
        got = [item.defects[0], *got]
        if case == "toned_surround":
            rgb, extra = scan_printers.in_surround(rgb, rng)
            got += extra
        return rgb, got
    if case == "faded":
        fade = FADES[1 + int(rng.integers(3))]
        rgb, got = make_colour(img, fade, rng, side)
        return rgb, [fade, *got]
    if case == "dominant_tint":
        rgb, cast = scan_printers.dominant_tint(scan_size(img, side), rng)
        return rgb, [cast]
    if case == "hand_tinted":
        tone = ("neutral", "sepia", "selenium")[int(rng.integers(3))]
        gray, _ = make_monochrome(img, tone, rng, side)
        return scan_printers.hand_tint(gray, scan_size(img, side), rng), [tone]
    fade = "mild" if rng.random() < 0.3 else "original"
    rgb, got = make_colour(img, fade, rng, side)
    if case == "colour_surround":
        rgb, extra = scan_printers.in_surround(rgb, rng)
        got += extra
    return rgb, [fade, *got]


def is_gray(img: Image.Image) -> bool:
    """A 'colour' source that is really gray (some collections hold a few): not usable."""
    small = np.asarray(img.convert("RGB").reduce(max(1, max(img.size) // 128)), dtype=np.int16)
    return float(np.percentile(np.ptp(small, axis=2), 99)) < 6


def build_item(item: Item, src: Source, folder: Path) -> bool:
    """Print ``item`` into ``folder`` as JPEG (quality 60-95); False for a gray colour source."""
    rng = np.random.default_rng(zlib.crc32(item.id.encode()))
    img = src.load()
    if item.label == "colour" and is_gray(img):
        return False
    rgb, item.defects = print_item(item, img, rng)
    quality = int(rng.integers(60, 96))
    path = folder / f"{item.id}.jpg"
    tmp = path.with_suffix(".part")
    Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(tmp, "JPEG", quality=quality)
    tmp.replace(path)
    return True


def build_set(out: Path, mirror: Path, bsds: Path, rebuild: bool) -> tuple[list[Item], dict]:
    """Build (or reuse) the set in ``out``; returns its items and a description of the sources."""
    manifest = out / "manifest.json"
    if manifest.exists() and not rebuild:
        saved = json.loads(manifest.read_text())
        if saved.get("recipe") == RECIPE:
            return [Item(**d) for d in saved["items"]], saved["sources"]
    found, missing = mirror_sources(mirror)
    sources = found + bsds_sources(bsds)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for item, src in plan(sources):
        if build_item(item, src, out):
            items.append(item)
    used = sorted({s.licence for s in sources})
    desc = {"used": used, "missing": missing, "n_sources": len(sources)}
    tmp = manifest.with_suffix(".part")
    tmp.write_text(
        json.dumps({"recipe": RECIPE, "sources": desc, "items": [i.__dict__ for i in items]})
    )
    tmp.replace(manifest)
    return items, desc


def judge_one(rgb: Image.Image) -> dict:
    """The shipped decision on one picture, its time on this thread, and what the first colour
    judge (the CNN) alone would say of it at the same cut."""
    from koala.judge_runtime import monochrome_probability
    from koala.monochrome import judge_view, measure

    t0 = time.perf_counter()
    ev = colour_evidence(rgb, DEFAULT_LIMITS)
    ms = (time.perf_counter() - t0) * 1000
    cnn = float(monochrome_probability(judge_view(measure(rgb))[None])[0])
    cnn_said = "monochrome" if cnn >= DEFAULT_LIMITS.monochrome_probability else "colour"
    return {
        "score": ev.score,
        "said": "colour" if ev.is_colour else "monochrome",
        "stage": ev.stage,
        "uncertain": ev.uncertain,
        "cnn_alone": cnn_said,
        "ms": ms,
        "detail": ev.detail,
    }


def judge(items: list[Item], folder: Path) -> list[dict]:
    """Run the shipped decision on every item; one row per item."""
    rows = []
    for n, item in enumerate(items, 1):
        rgb = Image.open(folder / f"{item.id}.jpg").convert("RGB")
        rows.append({**item.__dict__, **judge_one(rgb)})
        if n % 200 == 0:
            print(f"{n}/{len(items)} judged", file=sys.stderr, flush=True)
    return rows


def _git_blob(git_dir: Path, commit: str, path: str):
    """A loader of one image of a repository at ``commit`` (None when the blob is missing:
    the snapshot leaves out files of 4 MiB or more)."""

    def load() -> Image.Image | None:
        got = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
                             capture_output=True)  # fmt: skip
        try:
            img = Image.open(io.BytesIO(got.stdout))
            img.load()
        except Exception:
            return None
        return img

    return load


def real_scan_sources(mirror: Path, split: str) -> list[Source]:
    """The real historic scans (:data:`REAL_SCANS`) of one half (``tune``: the judge may learn
    from them; ``held``: the check on real scans), if fetched; their loaders keep the mode."""
    repo, commit, folder, skip = REAL_SCANS
    git_dir = mirror / repo / "repo"
    git_dir = git_dir / ".git" if (git_dir / ".git").is_dir() else git_dir
    if not git_dir.exists():
        return []
    names = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", commit, "--name-only", folder],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [
        Source(f"deoldify/{Path(p).stem}", "monochrome", _git_blob(git_dir, commit, p), repo)
        for p in names
        if skip not in p
        and p.lower().endswith((".jpg", ".jpeg", ".png"))
        and split_of(f"deoldify/{Path(p).stem}") == split
    ]


def real_scans(mirror: Path) -> list[dict]:
    """The decision on the held half of the real historic scans."""
    rows = []
    for src in real_scan_sources(mirror, "held"):
        img = src.load()
        if img is None:
            continue
        row = {"id": src.name, "label": "monochrome", "category": "real_scan"}
        if img.mode in ("L", "LA", "I;16", "1"):
            row.update(said="monochrome", stage="gray mode", uncertain=False, score=0.0)
        else:
            row.update(judge_one(img.convert("RGB")))
        rows.append(row)
    return rows


def precision_recall(rows: list[dict], said=None) -> dict:
    """Monochrome detection (positive class = monochrome)."""
    said = said or (lambda r: r["said"])
    tp = sum(r["label"] == "monochrome" and said(r) == "monochrome" for r in rows)
    fp = sum(r["label"] == "colour" and said(r) == "monochrome" for r in rows)
    fn = sum(r["label"] == "monochrome" and said(r) == "colour" for r in rows)
    return {
        "n": len(rows),
        "precision": round(tp / max(tp + fp, 1), 4),
        "recall": round(tp / max(tp + fn, 1), 4),
    }


def tuned_threshold(rows: list[dict]) -> float:
    """The score threshold that best separates the TUNE half (max of min(precision, recall)),
    taken midway between the neighbouring scores."""
    scores = sorted({r["score"] for r in rows})
    cuts = [(a + b) / 2 for a, b in itertools.pairwise(scores)] or [0.0]

    def quality(cut: float) -> float:
        pr = precision_recall(rows, lambda r: "colour" if r["score"] >= cut else "monochrome")
        return min(pr["precision"], pr["recall"])

    return max(cuts, key=quality)


def per_case(rows: list[dict]) -> dict:
    """Per case type: items, share judged right, share uncertain, and for the case's label the
    precision and recall of "monochrome" within (the case's items against all the other
    label's items, so that a precision is defined for colour cases too)."""
    out: dict = {}
    for case in sorted({r["category"] for r in rows}):
        sel = [r for r in rows if r["category"] == case]
        label = sel[0]["label"]
        others = [r for r in rows if r["label"] != label]
        out[case] = {
            "label": label,
            "n": len(sel),
            "right": round(sum(r["said"] == label for r in sel) / len(sel), 4),
            "uncertain": round(sum(bool(r.get("uncertain")) for r in sel) / len(sel), 4),
            **{k: v for k, v in precision_recall(sel + others).items() if k != "n"},
        }
    return out


def stage_shares(rows: list[dict]) -> dict:
    """Which step of the cascade settled how many items, and how often it was right."""
    out = {}
    for stage in sorted({r["stage"] for r in rows}):
        sel = [r for r in rows if r["stage"] == stage]
        right = sum(r["said"] == r["label"] for r in sel)
        ms = [r["ms"] for r in sel if "ms" in r]
        out[stage] = {
            "share": round(len(sel) / len(rows), 4),
            "right": round(right / len(sel), 4),
            "ms_median": round(float(np.median(ms)), 2) if ms else None,
        }
    return out


def judge_card() -> dict:
    """Each shipped colour judge's recipe (safetensors metadata) and its weights' sha256."""
    from safetensors import safe_open

    from koala.colour_judge import JUDGES

    cards = {}
    for name, (weights, _) in zip(("first", "second"), JUDGES, strict=True):
        with safe_open(str(weights), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("koala", "{}"))
        cards[name] = {**meta, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()[:16]}
    return cards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/koala-monochrome"))
    ap.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    ap.add_argument("--bsds", type=Path, default=REPO.parent / "shared/datasets/bsds500")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--rows", type=Path, help="also write every row (and real scan) as JSON")
    args = ap.parse_args()
    items, sources = build_set(args.out, args.mirror, args.bsds, args.rebuild)
    rows = judge(items, args.out)
    wrong = [r for r in rows if r["said"] != r["label"]]
    writer = csv.writer(sys.stdout)
    writer.writerow(["id", "label", "case", "split", "defects", "score", "stage", "detail"])
    for r in wrong:
        writer.writerow(
            [
                r["id"],
                r["label"],
                r["category"],
                r["split"],
                "+".join(r["defects"]),
                f"{r['score']:.4f}",
                r["stage"],
                r["detail"],
            ]
        )
    tune = [r for r in rows if r["split"] == "tune"]
    held = [r for r in rows if r["split"] == "held"]
    ms = np.array([r["ms"] for r in rows])
    real = real_scans(args.mirror)
    if args.rows:
        args.rows.write_text(json.dumps({"rows": rows, "real": real}))
    limits = {
        k: v for k, v in DEFAULT_LIMITS.__dict__.items() if k not in ("min_side", "max_pixels")
    }
    result = {
        "recipe": RECIPE,
        "counts": {lab: sum(r["label"] == lab for r in rows) for lab in ("monochrome", "colour")},
        "tune": precision_recall(tune),
        "held": precision_recall(held),
        "all": precision_recall(rows),
        "per_case": per_case(rows),
        "stages": stage_shares(rows),
        "cnn_alone": precision_recall(rows, lambda r: r["cnn_alone"]),
        "cascade_vs_cnn_alone_disagree": sum(r["said"] != r["cnn_alone"] for r in rows),
        "uncertain": {
            "share": round(sum(r["uncertain"] for r in rows) / len(rows), 4),
            "wrong_caught": f"{sum(r['uncertain'] for r in wrong)}/{len(wrong)}",
        },
        "real_scans": {
            "n": len(real),
            "called_monochrome": sum(r["said"] == "monochrome" for r in real),
            "uncertain": sum(bool(r.get("uncertain")) for r in real),
            "called_colour": sorted(r["id"] for r in real if r["said"] == "colour"),
        },
        "thresholds": limits,
        "tune_optimal_score_cut": round(tuned_threshold(tune), 5),
        "judge": judge_card(),
        "ms_per_image": {
            "median": round(float(np.median(ms)), 2),
            "p95": round(float(np.percentile(ms, 95)), 2),
        },
        "sources": sources,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
