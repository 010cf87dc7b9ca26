"""Reading archival scans for colorization: any mode and bit depth, to full-resolution CIE L*.

8- and 16-bit grayscale, bilevel, RGB, RGBA/LA, palette and CMYK inputs; TIFF (first page of a
multi-page file, noted), JPEG, PNG, WebP; EXIF orientation applied. Gray scans keep their full
precision: L* comes from a lookup table over every 8- or 16-bit level. Colour-mode scans are
tested with the same monochrome test as ``build-dataset``: sepia-toned or yellowed ones are
colorized from their luminance; ones with real colour are skipped unless ``recolor``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tasks.colour import gray_lightness_table, rgb_to_lab
from tasks.images import DEFAULT_LIMITS, ImageLimits, colour_fraction, open_image, to_rgb

GRAY_8 = frozenset({"1", "L", "LA", "La"})
GRAY_16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
#: rows converted at a time, so that no full-size float temporaries are made
STRIP_ROWS = 256


class HasColour(Exception):
    """The scan already carries real colour (``skipped_color`` unless recolorizing)."""

    def __init__(self, fraction: float, width: int, height: int, mode: str):
        super().__init__(f"{fraction:.2%} of pixels carry colour beyond a single tint")
        self.fraction = fraction
        self.width, self.height, self.mode = width, height, mode


@dataclass
class Scan:
    """A decoded scan: its full-resolution L* and an 8-bit view source for the models."""

    lightness: np.ndarray  #: float32 (H, W), L* in [0, 100]
    view: Image.Image  #: 8-bit "L" or "RGB" image the models' views are made from
    format: str
    input_mode: str
    bit_depth: int
    note: str = ""

    @property
    def width(self) -> int:
        return int(self.lightness.shape[1])

    @property
    def height(self) -> int:
        return int(self.lightness.shape[0])


def _gray16(img: Image.Image) -> np.ndarray:
    """uint16 levels of a 16-bit (or 32-bit integer / float) gray image."""
    arr = np.asarray(img)
    if img.mode == "F":
        top = 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 65535.0
        return np.clip(arr / top * 65535.0 + 0.5, 0, 65535).astype(np.uint16)
    return np.clip(arr, 0, 65535).astype(np.uint16)


def _rgb_lightness(rgb: np.ndarray) -> np.ndarray:
    """L* of an (H, W, 3) uint8 RGB array, converted a strip at a time."""
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    for y in range(0, rgb.shape[0], STRIP_ROWS):
        out[y : y + STRIP_ROWS] = rgb_to_lab(rgb[y : y + STRIP_ROWS])[..., 0]
    return out


def read_scan(data: bytes, recolor: bool = False, limits: ImageLimits = DEFAULT_LIMITS) -> Scan:
    """Decode ``data`` into a :class:`Scan`; raise :class:`Rejected` for unusable input and
    :class:`HasColour` for a colour photograph when ``recolor`` is off."""
    opened = open_image(data, limits)
    img, mode = opened.image, opened.mode
    note = f"multi-page {opened.format} ({opened.frames} pages): first page colorized"
    note = note if opened.frames > 1 else ""
    if img.mode in GRAY_8:
        gray = (to_rgb(img) if img.mode in ("LA", "La") else img).convert("L")  # alpha over white
        lightness = gray_lightness_table(256)[np.asarray(gray)]
        return Scan(lightness, gray, opened.format, mode, 1 if mode == "1" else 8, note)
    if img.mode in GRAY_16:
        levels = _gray16(img)
        lightness = gray_lightness_table(65536)[levels]
        view = Image.fromarray((levels >> 8).astype(np.uint8))
        return Scan(lightness, view, opened.format, mode, 16, note)
    rgb = to_rgb(img)  # palette, CMYK, alpha over white, ...
    del img
    fraction = colour_fraction(rgb, limits)
    if fraction >= limits.min_colour_fraction and not recolor:  # else sepia, toned, yellowed
        raise HasColour(fraction, rgb.width, rgb.height, mode)
    return Scan(_rgb_lightness(np.asarray(rgb)), rgb, opened.format, mode, 8, note)
