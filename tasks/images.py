"""Decode and validate one image: full decode, EXIF orientation, RGB, size limits, monochrome test.

Used by ``build-dataset`` (and later ``colorize-archive``) so that both judge images the same way.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from scipy import ndimage
from skimage.color import rgb2lab

# We check the pixel count ourselves (``max_pixels``) before decoding, with a clear reason;
# PIL's own global bomb guard would raise a warning or error with a less useful message.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"})
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable training image is (defaults calibrated in docs/architecture.md)."""

    min_side: int = 64
    max_pixels: int = 89_478_485
    #: a*b* distance (Lab units) from the lightness-conditional tint that makes a pixel coloured.
    chroma_threshold: float = 6.0
    #: an image is colour when at least this fraction of its mid-tone pixels is coloured.
    min_colour_fraction: float = 0.0007


DEFAULT_LIMITS = ImageLimits()


class Rejected(Exception):
    """An input that is not a usable image; ``reason`` is a short code, the message says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class DecodedImage:
    """A fully decoded image, oriented and in RGB, with facts about the original."""

    rgb: Image.Image
    format: str
    mode: str
    width: int
    height: int
    #: True when the original bytes are a plain RGB JPEG that decodes to ``rgb`` unchanged.
    clean_jpeg: bool
    frames: int = 1


@dataclass
class OpenedImage:
    """A fully decoded, EXIF-oriented image in its own mode (first page of a multi-page file)."""

    image: Image.Image
    format: str
    mode: str
    width: int
    height: int
    orientation: int
    frames: int


def open_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> OpenedImage:
    """Fully decode ``data`` without changing its mode; raise :class:`Rejected` when it is not
    a usable image (empty, unknown, unsupported, corrupt, truncated, too large or too small)."""
    if not data:
        raise Rejected("empty", "zero-byte file")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected("not_an_image", "not a recognised image format") from None
    except Exception as exc:
        raise Rejected("corrupt", f"cannot read header ({exc})") from None
    fmt = img.format or "unknown"
    if fmt not in SUPPORTED_FORMATS:
        raise Rejected("unsupported_format", f"{fmt} is not one of {sorted(SUPPORTED_FORMATS)}")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise Rejected(
            "too_large",
            f"{width}x{height} exceeds the limit of {limits.max_pixels:,} pixels",
        )
    mode = img.mode
    frames = getattr(img, "n_frames", 1)
    try:
        img.load()
    except OSError as exc:
        code = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise Rejected(code, str(exc)) from None
    except Exception as exc:
        raise Rejected("corrupt", f"decoding failed ({type(exc).__name__}: {exc})") from None
    orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    try:
        oriented = ImageOps.exif_transpose(img) if orientation not in (None, 1) else img
    except Exception as exc:
        raise Rejected("corrupt", f"bad EXIF orientation ({exc})") from None
    w, h = oriented.size
    if min(w, h) < limits.min_side:
        raise Rejected("too_small", f"{w}x{h} is under {limits.min_side} px on a side")
    return OpenedImage(oriented, fmt, mode, width, height, orientation or 1, frames)


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Fully decode ``data``; raise :class:`Rejected` when it is not a usable image.

    Orientation from EXIF is applied, transparency is composited over white and every mode
    (palette, CMYK, 16-bit, ...) is converted to 8-bit RGB.
    """
    opened = open_image(data, limits)
    clean = (
        opened.format == "JPEG"
        and opened.mode == "RGB"
        and opened.orientation == 1
        and opened.frames == 1
    )
    return DecodedImage(
        to_rgb(opened.image),
        opened.format,
        opened.mode,
        opened.width,
        opened.height,
        clean,
        opened.frames,
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; alpha is composited over white (the project's pad colour)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def pixel_sha256(rgb: Image.Image) -> str:
    """Hash of the decoded pixels and their shape: equal for the same picture in any container."""
    h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def colour_fraction(
    rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS, size: int = 256
) -> float:
    """Fraction of mid-tone pixels whose colour cannot be explained by lightness alone.

    A monochrome picture, sepia-toned, cyanotype or yellowed scans included, has a*b* that are
    (nearly) a function of L: one tint per lightness. On a thumbnail we take the median a*b* in
    40 lightness bins, interpolate it at each pixel's L and mark the pixels more than
    ``chroma_threshold`` away. A 3x3 opening removes thin JPEG chroma fringes along edges, so a
    small but solid coloured detail (an orange beak) still counts. Near-black and near-white
    pixels (L < 5 or L > 90), where gamut clipping bends the tint, are left out.
    """
    thumb = rgb.copy()
    thumb.thumbnail((size, size), Image.Resampling.BOX)
    lab = rgb2lab(np.asarray(thumb))
    shape = lab.shape[:2]
    lab = lab.reshape(-1, 3)
    light = lab[:, 0]
    bins = np.clip((light / 2.5).astype(np.int64), 0, 39)
    order = np.argsort(bins, kind="stable")
    ends = np.cumsum(np.bincount(bins, minlength=40))
    starts = ends - np.bincount(bins, minlength=40)
    by_bin = lab[order]
    medians = np.array(
        [np.median(by_bin[a:b], axis=0) for a, b in zip(starts, ends, strict=True) if b > a]
    )
    centre, tint_a, tint_b = medians[:, 0], medians[:, 1], medians[:, 2]
    residual = np.hypot(
        lab[:, 1] - np.interp(light, centre, tint_a),
        lab[:, 2] - np.interp(light, centre, tint_b),
    )
    midtones = ((light >= 5) & (light <= 90)).reshape(shape)
    coloured = (residual > limits.chroma_threshold).reshape(shape) & midtones
    coloured = ndimage.binary_opening(coloured, structure=np.ones((3, 3), dtype=bool))
    return float(coloured.sum() / max(int(midtones.sum()), 1))


@dataclass(frozen=True)
class ColourEvidence:
    """The monochrome-or-colour decision about one picture and the evidence behind it."""

    #: how much colour the picture carries (higher is more colour; sortable in the index)
    score: float
    is_colour: bool
    #: one line an archivist can read, e.g. "0.03% of pixels carry colour beyond one tint"
    detail: str


def colour_evidence(rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS) -> ColourEvidence:
    """Decide whether ``rgb`` is a colour photograph or a monochrome one (toned, stained or
    annotated monochrome included), with the evidence."""
    fraction = colour_fraction(rgb, limits)
    return ColourEvidence(
        fraction,
        fraction >= limits.min_colour_fraction,
        f"{fraction:.2%} of pixels carry colour beyond a single tint",
    )


def check_colour(rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS) -> float:
    """Return the colour score, or raise :class:`Rejected` when the image is monochrome."""
    evidence = colour_evidence(rgb, limits)
    if not evidence.is_colour:
        raise Rejected("monochrome", evidence.detail)
    return evidence.score


def encode_jpeg(decoded: DecodedImage, original: bytes, quality: int = 95) -> bytes:
    """The bytes to store: the original when it is a clean JPEG, else a JPEG at ``quality``.

    Re-encoding keeps full chroma resolution (4:4:4): a*b* are what the models learn.
    """
    if decoded.clean_jpeg:
        return original
    buf = io.BytesIO()
    decoded.rgb.save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()
