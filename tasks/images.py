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
    #: a*b* distance (Lab units) from the picture's own tint model that makes a pixel coloured.
    chroma_threshold: float = 7.0
    #: an image is colour when its colour score (see :class:`ColourEvidence`) reaches this.
    min_colour_score: float = 0.01
    #: weight of the area in the main hue of the coloured pixels (a stain, a tint) against the
    #: area in other hues, in the score: one hue alone is weak evidence of a colour photograph.
    one_hue_weight: float = 0.3
    #: coloured regions lying wholly within this share of each side of the frame are ignored
    #: (calibration targets, stamps and labels on the margin, the scanner bed).
    border_band: float = 0.12
    #: coloured regions smaller than this share of the frame are ignored (foxing, specks).
    min_region: float = 0.0005


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


def _thumbnail(rgb: Image.Image, size: int) -> np.ndarray:
    """uint8 RGB of ``rgb`` shrunk to at most ``size`` px on its long side (box filter)."""
    k = max(rgb.size) / size
    if k >= 2:
        rgb = rgb.reduce(int(k))  # fast integer box reduction first
    if max(rgb.size) > size:
        k = max(rgb.size) / size
        dims = (max(1, round(rgb.width / k)), max(1, round(rgb.height / k)))
        rgb = rgb.resize(dims, Image.Resampling.BOX)
    return np.asarray(rgb)


def _tint_residual(lab: np.ndarray) -> np.ndarray:
    """a*b* minus the picture's own tint model, (H, W, 2).

    The model is what a monochrome print, however toned and aged, can be: a tint per lightness
    (medians in 40 L* bins, interpolated) plus a smooth field over the frame whose strength may
    grow with lightness (quadratic in x, y; linear in L*), so that uneven toning and paper
    yellowing towards an edge are explained. The field is fitted by least squares, refitted on
    the 60% best-explained pixels, so coloured objects do not pull it.
    """
    h, w = lab.shape[:2]
    light = lab[..., 0].ravel()
    ab = lab[..., 1:].reshape(-1, 2)
    bins = np.clip((light / 2.5).astype(np.int64), 0, 39)
    counts = np.bincount(bins, minlength=40)
    ends = np.cumsum(counts)
    by_bin = ab[np.argsort(bins, kind="stable")]
    have = counts > 0
    medians = np.array([np.median(by_bin[e - c : e], axis=0) for c, e in zip(
        counts[have], ends[have], strict=True)])
    centres = (np.nonzero(have)[0] + 0.5) * 2.5
    resid = ab - np.stack([np.interp(light, centres, medians[:, i]) for i in (0, 1)], -1)
    yy, xx = np.mgrid[0:h, 0:w]
    y, x, lum = yy.ravel() / h - 0.5, xx.ravel() / w - 0.5, light / 100.0 - 0.5
    design = np.stack([np.ones_like(y), y, x, y * y, x * x, x * y, lum, lum * y, lum * x], -1)
    sample = np.arange(0, len(y), 3)
    use = sample
    for _ in range(2):
        coef = np.linalg.lstsq(design[use], resid[use], rcond=None)[0]
        miss = np.hypot(*(resid[sample] - design[sample] @ coef).T)
        use = sample[miss <= np.quantile(miss, 0.6)]
    return (resid - design @ coef).reshape(h, w, 2)


def _content_regions(coloured: np.ndarray, limits: ImageLimits) -> np.ndarray:
    """The coloured pixels that form content-like regions: thick (survive a 5x5 erosion), not
    tiny (``min_region``) and reaching inside the ``border_band``."""
    h, w = coloured.shape
    labels, n = ndimage.label(coloured, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return coloured
    index = np.arange(1, n + 1)
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    by, bx = int(limits.border_band * h), int(limits.border_band * w)
    inner = np.zeros_like(coloured)
    inner[by : h - by, bx : w - bx] = True
    core = ndimage.binary_erosion(coloured, structure=np.ones((5, 5), dtype=bool))
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = (
        (area >= limits.min_region * h * w)
        & (ndimage.sum_labels(inner, labels, index) > 0)
        & (ndimage.sum_labels(core, labels, index) > 0)
    )
    return keep[labels]


def colour_fraction(
    rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS, size: int = 256
) -> float:
    """Share of mid-tone pixels whose colour the picture's own tint model cannot explain
    (after a 3x3 opening that drops thin lines); the raw measure behind :func:`colour_evidence`."""
    lab = rgb2lab(_thumbnail(rgb, size))
    midtones = (lab[..., 0] >= 8) & (lab[..., 0] <= 92)
    coloured = (np.hypot(*np.moveaxis(_tint_residual(lab), -1, 0)) > limits.chroma_threshold)
    coloured = ndimage.binary_opening(coloured & midtones, structure=np.ones((3, 3), dtype=bool))
    return float(coloured.sum() / max(int(midtones.sum()), 1))


@dataclass(frozen=True)
class ColourEvidence:
    """The monochrome-or-colour decision about one picture and the evidence behind it.

    ``score`` is the share of the picture's mid-tones covered by colour tied to its content
    (thick regions reaching into the frame), the area in the main hue counted at
    ``one_hue_weight``: 0 for a clean monochrome print, a few % for a faded colour photograph,
    tens of % for a vivid one. Sortable; the image is colour when it reaches
    ``min_colour_score``.
    """

    score: float
    is_colour: bool
    #: one line an archivist can read
    detail: str
    #: share of mid-tone pixels in content-like coloured regions (any hue)
    coloured_area: float = 0.0
    #: share of mid-tone pixels in such regions whose hue is 50+ degrees off the main hue
    other_hue_area: float = 0.0
    #: circular spread of hue among those pixels (0: one hue, 1: all around the circle)
    hue_spread: float = 0.0


def _hue_split(resid: np.ndarray) -> tuple[int, float]:
    """(pixels off the main hue by 50+ degrees, chroma-weighted circular hue spread)."""
    if len(resid) == 0:
        return 0, 0.0
    vec = resid[:, 0] + 1j * resid[:, 1]
    total = vec.sum()
    spread = 1.0 - abs(total) / max(float(np.abs(vec).sum()), 1e-9)
    off = np.abs(np.angle(vec * np.conj(total))) > np.deg2rad(50)
    return int(off.sum()), float(spread)


def colour_evidence(
    rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS, size: int = 256
) -> ColourEvidence:
    """Decide whether ``rgb`` is a colour photograph or a monochrome one (toned, stained,
    cracked, annotated, stamped or scanned beside a colour target included), with the evidence.

    On a ``size`` px thumbnail: pixels off the picture's own tint model by more than
    ``chroma_threshold`` (:func:`_tint_residual`), without thin lines (3x3 opening: cracks,
    ink, fringes), kept when they form content-like regions (:func:`_content_regions`); then
    the area in the main hue and in other hues makes the score.
    """
    lab = rgb2lab(_thumbnail(rgb, size))
    midtones = (lab[..., 0] >= 8) & (lab[..., 0] <= 92)
    resid = _tint_residual(lab)
    coloured = (np.hypot(resid[..., 0], resid[..., 1]) > limits.chroma_threshold) & midtones
    coloured = ndimage.binary_opening(coloured, structure=np.ones((3, 3), dtype=bool))
    regions = _content_regions(coloured, limits)
    base = max(int(midtones.sum()), 1)
    other, spread = _hue_split(resid[regions])
    area, other_area = int(regions.sum()) / base, other / base
    score = other_area + limits.one_hue_weight * (area - other_area)
    is_colour = score >= limits.min_colour_score
    verdict = "colour photograph" if is_colour else "monochrome"
    detail = (
        f"{verdict}: colour score {score:.4f} (needs {limits.min_colour_score}); colour tied to "
        f"content on {area:.2%} of the picture, {other_area:.2%} off its main hue"
    )
    return ColourEvidence(score, is_colour, detail, area, other_area, spread)


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
