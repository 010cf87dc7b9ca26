"""Test inputs made on the fly: colour photos, monochrome variants and broken files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps
from skimage import data

_SOURCES = ("astronaut", "coffee", "chelsea", "rocket")


def colour_photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A distinct natural colour photo: a seeded crop of one of scikit-image's samples."""
    rng = np.random.default_rng(seed)
    src = getattr(data, _SOURCES[seed % len(_SOURCES)])()
    h, w = src.shape[:2]
    ch, cw = int(h * 0.6), int(w * 0.6)
    y, x = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
    return Image.fromarray(src[y : y + ch, x : x + cw]).resize(size, Image.Resampling.BILINEAR)


def gray(img: Image.Image) -> Image.Image:
    return img.convert("L")


def sepia(img: Image.Image) -> Image.Image:
    """A sepia-toned print, as photo editors and old prints make it."""
    return ImageOps.colorize(img.convert("L"), "#2b1d0e", "#f5e6c8", "#8a6a45")


def yellowed(img: Image.Image) -> Image.Image:
    """A gray print on aged, yellowed paper."""
    g = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    rgb = np.stack([g * 1.0, g * 0.95, g * 0.78], -1) + 0.04
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def truncated_jpeg(seed: int = 99) -> bytes:
    full = encode(colour_photo(seed))
    return full[: len(full) // 2]


def corrupt_jpeg(seed: int = 98) -> bytes:
    full = bytearray(encode(colour_photo(seed)))
    full[200:400] = bytes(200)  # header intact, entropy data destroyed
    return bytes(full[:600]) + b"\x00" * 50


def rgb_array(jpeg_or_png: bytes) -> np.ndarray:
    """Decoded, EXIF-oriented RGB pixels of encoded bytes."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg_or_png)))
    return np.asarray(img.convert("RGB"))
