"""Printers for the monochrome calibration set's newer case types (recipe monochrome-set-v3).

- :func:`in_surround`: a print as archives scan it: paper margin (white, cream, yellowed), a
  mount (card, sometimes coloured), rounded corners, torn or cracked edges, the scanner bed
  (white, black or gray) around it, the print a little skewed, and sometimes a colour target or
  a ruler beside it or a handwritten note on the margin.
- :func:`hand_tint`: a monochrome print with transparent colour washes on a few regions (the
  regions and their hues taken from the colour photograph it was made from): a hand-tinted
  print, whose colour follows the picture (a colour picture: Koala leaves it alone).
- :func:`dominant_tint`: a colour photograph under one dominant cast (haze, sand, sunset, snow,
  glass and sky, green shade) with its other hues weakened but present.

It also holds the crack printer (:func:`add_cracks`) and :func:`draw_mask`, which
``bench/monochrome.py``'s aged prints use too. All take and return float RGB arrays in [0, 1]
and draw from the given ``rng`` only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage.color import lab2rgb, rgb2lab

PAPERS = ((0.97, 0.97, 0.95), (0.95, 0.91, 0.8), (0.93, 0.88, 0.72), (0.99, 0.99, 0.98))
MOUNTS = (
    (0.82, 0.78, 0.68),
    (0.3, 0.29, 0.27),
    (0.62, 0.58, 0.5),
    (0.25, 0.3, 0.2),
    (0.4, 0.18, 0.18),
)
BEDS = ((0.98, 0.98, 0.97), (0.04, 0.04, 0.05), (0.85, 0.86, 0.86))
CASTS = {  # a*b* of the cast
    "haze": (-2.0, -12.0),
    "sand": (5.0, 22.0),
    "sunset": (18.0, 32.0),
    "snow": (-3.0, -8.0),
    "glass_sky": (-10.0, -18.0),
    "green_shade": (-12.0, 14.0),
}
TARGET = np.array(
    [(0.8, 0.1, 0.1), (0.95, 0.55, 0.1), (0.95, 0.9, 0.1), (0.1, 0.6, 0.2), (0.1, 0.7, 0.8),
     (0.1, 0.2, 0.7), (0.75, 0.1, 0.6), (0.95, 0.95, 0.95), (0.5, 0.5, 0.5), (0.1, 0.1, 0.1)]
)  # fmt: skip


def draw_mask(h: int, w: int, lines: list, width: int) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for pts in lines:
        draw.line([tuple(p) for p in pts], fill=255, width=width, joint="curve")
    return np.asarray(canvas, dtype=np.float64) / 255.0


def add_cracks(rgb, rng):
    """Cracks and scratches through the emulsion, showing white or cream paper."""
    h, w = rgb.shape[:2]
    lines = []
    for _ in range(rng.integers(3, 14)):
        p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        step, pts = rng.uniform(0, 2 * np.pi), [p.copy()]
        for _ in range(rng.integers(5, 40)):
            step += rng.normal(0, 0.5)
            p += rng.uniform(4, 15) * np.array([np.cos(step), np.sin(step)])
            pts.append(p.copy())
        lines.append(pts)
    mask = draw_mask(h, w, lines, int(rng.integers(1, 5)))
    paper = np.array((0.97, 0.95, 0.88)) if rng.random() < 0.6 else np.array((0.99, 0.99, 0.98))
    return rgb * (1 - mask[..., None]) + paper * mask[..., None]


def _pad(rgb: np.ndarray, widths: tuple[int, int, int, int], colour) -> np.ndarray:
    """``rgb`` with borders (top, bottom, left, right) of ``colour`` (lightly mottled)."""
    t, b, left, r = widths
    h, w = rgb.shape[:2]
    out = np.empty((h + t + b, w + left + r, 3))
    out[:] = colour
    out[t : t + h, left : left + w] = rgb
    return out


def _mottle(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator, amount: float) -> None:
    """Low-frequency unevenness and grain on ``mask`` (in place)."""
    h, w = rgb.shape[:2]
    coarse = rng.normal(0, 1, (max(2, h // 32), max(2, w // 32))).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    field = field * 2.5 * amount
    grain = rng.normal(0, amount * 0.5, (h, w))
    rgb[mask] += (field + grain)[mask][:, None]


def _torn_edge(h: int, w: int, rng: np.random.Generator, depth: int) -> np.ndarray:
    """Mask of paper kept along a torn edge (one random side): a rough random walk."""
    side = int(rng.integers(4))
    n = w if side < 2 else h
    walk = np.cumsum(rng.normal(0, 1.2, n))
    walk = ndimage.gaussian_filter1d(walk - walk.min(), 2)
    walk = depth * (0.3 + walk / max(walk.max(), 1e-9))
    keep = np.ones((h, w), dtype=bool)
    idx = np.arange(h if side < 2 else w)[:, None]
    if side == 0:  # top
        keep &= idx >= walk[None, :]
    elif side == 1:  # bottom
        keep &= (h - 1 - idx) >= walk[None, :]
    elif side == 2:  # left
        keep &= np.arange(w)[None, :] >= walk[:, None]
    else:
        keep &= (w - 1 - np.arange(w))[None, :] >= walk[:, None]
    return keep


def _rounded(h: int, w: int, radius: int) -> np.ndarray:
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).rounded_rectangle([0, 0, w - 1, h - 1], radius=radius, fill=255)
    return np.asarray(canvas) > 127


def _beside(bed: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """A colour target or a ruler on the bed below or right of the print (in place)."""
    t, b, left, r = box  # the print's extent on the bed
    h, w = bed.shape[:2]
    below = rng.random() < 0.5
    span = (r - left) if below else (b - t)
    room = (h - b) if below else (w - r)
    if room < 12:
        return
    thick = int(room * rng.uniform(0.4, 0.7))
    length = int(span * rng.uniform(0.5, 0.9))
    if rng.random() < 0.6:  # colour target
        strip = np.repeat(TARGET, int(np.ceil(length / len(TARGET))), axis=0)[:length]
    else:  # a ruler: pale card with black ticks
        strip = np.tile(np.array((0.93, 0.9, 0.75)), (length, 1))
        strip[:: max(3, length // 40)] = 0.1
    y0 = b + (room - thick) // 2 if below else t + (span - length) // 2
    x0 = left + (span - length) // 2 if below else r + (room - thick) // 2
    if below:
        bed[y0 : y0 + thick, x0 : x0 + length] = strip[None, :]
    else:
        bed[y0 : y0 + length, x0 : x0 + thick] = strip[:, None]


def _note(rgb: np.ndarray, band: tuple[int, int], rng: np.random.Generator) -> None:
    """A line of blue or black handwriting in the bottom margin rows ``band`` (in place)."""
    y0, y1 = band
    h, w = rgb.shape[:2]
    if y1 - y0 < 8:
        return
    xs = np.arange(w * 0.15, w * rng.uniform(0.45, 0.85), 1.5)
    yc, amp = (y0 + y1) / 2, (y1 - y0) * 0.2
    ys = yc + amp * np.sin(xs / 3.0 + rng.uniform(0, 6)) * np.sin(xs / 11.0)
    canvas = Image.new("L", (w, h), 0)
    ImageDraw.Draw(canvas).line(list(zip(xs, ys, strict=True)), fill=255, width=2)
    mask = np.asarray(canvas, dtype=np.float64)[..., None] / 255.0
    ink = np.array((0.15, 0.2, 0.6) if rng.random() < 0.6 else (0.1, 0.1, 0.12))
    rgb[:] = rgb * (1 - mask) + rgb * ink * mask


def in_surround(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """The print ``rgb`` scanned with its surround; returns the scan and what it got."""
    h, w = rgb.shape[:2]
    got: list[str] = []
    side = max(h, w)
    m = [int(side * rng.uniform(0.02, 0.1)) for _ in range(4)]
    m[1] = max(m[1], int(side * rng.uniform(0.04, 0.14)))  # room for a caption
    out = _pad(rgb, tuple(m), PAPERS[int(rng.integers(len(PAPERS)))])
    paper = np.ones(out.shape[:2], dtype=bool)
    paper[m[0] : m[0] + h, m[2] : m[2] + w] = False
    _mottle(out, paper, rng, 0.004)
    got.append("margin")
    if rng.random() < 0.35:
        _note(out, (m[0] + h + 2, out.shape[0] - 2), rng)
        got.append("note")
    if rng.random() < 0.3:
        k = int(side * rng.uniform(0.04, 0.1))
        out = _pad(out, (k, k, k, k), MOUNTS[int(rng.integers(len(MOUNTS)))])
        got.append("mount")
    ph, pw = out.shape[:2]
    keep = np.ones((ph, pw), dtype=bool)
    if rng.random() < 0.4:
        keep &= _rounded(ph, pw, int(side * rng.uniform(0.02, 0.07)))
        got.append("rounded")
    if rng.random() < 0.35:
        keep &= _torn_edge(ph, pw, rng, int(side * rng.uniform(0.01, 0.05)))
        fibre = keep & ~ndimage.binary_erosion(keep, iterations=2)
        out[fibre] = out[fibre] * 0.2 + 0.8 * np.array((0.98, 0.97, 0.93))
        got.append("torn")
    if rng.random() < 0.3:
        band = np.ones((ph, pw), dtype=bool)
        band[int(ph * 0.15) : int(ph * 0.85), int(pw * 0.15) : int(pw * 0.85)] = False
        cracked = add_cracks(out, rng)
        out = np.where(band[..., None], cracked, out)
        got.append("cracked")
    bed_colour = BEDS[int(rng.integers(len(BEDS)))]
    bm = [int(side * rng.uniform(0.0, 0.06)) for _ in range(4)]
    beside = rng.random() < 0.3
    if beside:
        bm[1 if rng.random() < 0.5 else 3] = int(side * rng.uniform(0.1, 0.16))
    bed = np.empty((ph + bm[0] + bm[1], pw + bm[2] + bm[3], 3))
    bed[:] = bed_colour
    region = bed[bm[0] : bm[0] + ph, bm[2] : bm[2] + pw]
    region[keep] = out[keep]
    if beside:
        _beside(bed, (bm[0], bm[0] + ph, bm[2], bm[2] + pw), rng)
        got.append("target_or_ruler")
    angle = rng.uniform(-2.0, 2.0)
    img = Image.fromarray((np.clip(bed, 0, 1) * 255 + 0.5).astype(np.uint8))
    fill = tuple(int(c * 255) for c in bed_colour)
    img = img.rotate(angle, Image.Resampling.BICUBIC, expand=False, fillcolor=fill)
    scan = np.asarray(img, dtype=np.float64) / 255.0
    scan = scan + rng.normal(0, 0.004, scan.shape)  # sensor noise on the bed too
    return np.clip(scan, 0, 1), [*got, ("white", "black", "gray")[BEDS.index(bed_colour)] + "_bed"]


def _regions(original: np.ndarray, rng: np.random.Generator, n: int) -> list[tuple]:
    """Up to ``n`` (soft mask, a*b*) regions of the photograph's most colourful k-means
    clusters of a*b* (on a 64 px copy), masks at full size."""
    h, w = original.shape[:2]
    small = np.asarray(
        Image.fromarray((original * 255).astype(np.uint8)).resize((64, max(1, 64 * h // w)))
    )
    lab = rgb2lab(small / 255.0).reshape(-1, 3)
    centres = lab[rng.choice(len(lab), 6, replace=False), 1:]
    for _ in range(8):  # a few Lloyd steps
        near = np.argmin(((lab[:, None, 1:] - centres[None]) ** 2).sum(-1), 1)
        centres = np.array(
            [lab[near == k, 1:].mean(0) if (near == k).any() else centres[k] for k in range(6)]
        )
    order = np.argsort(-np.hypot(centres[:, 0], centres[:, 1]))[:n]
    out = []
    for k in order:
        mask = (near == k).reshape(small.shape[:2]).astype(np.float64)
        mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize((w, h)))
        out.append((ndimage.gaussian_filter(mask / 255.0, 3), centres[k]))
    return out


def hand_tint(print_rgb: np.ndarray, original: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Transparent colour washes on 2-4 regions of the monochrome ``print_rgb``."""
    lab = rgb2lab(print_rgb)
    for mask, ab in _regions(original, rng, int(rng.integers(2, 5))):
        strength = rng.uniform(0.5, 1.0)
        ab = ab / max(np.hypot(*ab), 1e-6) * max(np.hypot(*ab) * strength, 15.0)
        lab[..., 1:] = lab[..., 1:] * (1 - mask[..., None]) + ab * mask[..., None]
    return np.clip(lab2rgb(lab), 0, 1)


def dominant_tint(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The photograph under one dominant cast, its own hues weakened (x0.35-0.7)."""
    name = list(CASTS)[int(rng.integers(len(CASTS)))]
    lab = rgb2lab(rgb)
    lab[..., 1:] = lab[..., 1:] * rng.uniform(0.35, 0.7) + np.array(CASTS[name]) * rng.uniform(
        0.6, 1.0
    )
    return np.clip(lab2rgb(lab), 0, 1), name
