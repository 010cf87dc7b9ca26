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

from koala.choices import DEFAULT_LIMITS, IMAGE_EXTENSIONS, ImageLimits  # noqa: F401
from koala.errors import Rejected

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP"})
_ORIENTATION_TAG = 0x0112


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


def pil_guards() -> None:
    """Pillow's process-wide settings for untrusted bytes; idempotent, called before decoding.

    We check the pixel count ourselves (``max_pixels``) before decoding, with a clear reason;
    PIL's own global bomb guard would raise a warning or error with a less useful message.
    A truncated file is an error, never a silently grey-filled image."""
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False


def open_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> OpenedImage:
    """Fully decode ``data`` without changing its mode; raise :class:`Rejected` when it is not
    a usable image (empty, unknown, unsupported, corrupt, truncated, too large or too small)."""
    pil_guards()
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


def tint_residual(lab: np.ndarray) -> np.ndarray:
    """a*b* of each pixel minus the tint of its lightness (H, W, 2).

    The tint is the median a*b* of the pixels in each of 40 lightness bins, interpolated at each
    pixel's L: in a monochrome print (sepia, selenium, cyanotype, yellowed) colour is a function
    of lightness, so the residual is what the picture's tone does not explain.
    """
    flat = lab.reshape(-1, 3)
    light = flat[:, 0]
    bins = np.clip(light / 2.5, 0, 39).astype(np.uint8)  # uint8: a radix sort, 9x faster
    order = np.argsort(bins, kind="stable")
    ends = np.cumsum(np.bincount(bins, minlength=40))
    starts = ends - np.bincount(bins, minlength=40)
    by_bin = flat[order]
    medians = np.array(
        [np.median(by_bin[a:b], axis=0) for a, b in zip(starts, ends, strict=True) if b > a]
    )
    centre = medians[:, 0]
    res = np.stack([flat[:, k] - np.interp(light, centre, medians[:, k]) for k in (1, 2)], axis=-1)
    return res.reshape(*lab.shape[:2], 2)


def judge_view(rgb: Image.Image, side: int = 192) -> np.ndarray:
    """The colour judge's view of a picture: (5, side, side) float32 of L, a*, b* and the a*b*
    beyond the tint of each lightness (:func:`tint_residual`), scaled to about unit range.

    The picture is box-filtered to twice ``side`` then resized to a square ``side`` (the judge
    looks at where colour is and how it follows the picture, not at the aspect ratio).
    """
    thumb = rgb.copy()
    thumb.thumbnail((2 * side, 2 * side), Image.Resampling.BOX)
    thumb = thumb.resize((side, side), Image.Resampling.BILINEAR)
    lab = rgb2lab(np.asarray(thumb))
    res = tint_residual(lab)
    view = np.concatenate([lab[..., :1] / 50.0 - 1.0, lab[..., 1:] / 40.0, res / 20.0], axis=-1)
    return np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32)


def _off_tint(rgb: Image.Image, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """L* and the distance of a*b* from the tint of its lightness, on a ``size`` thumbnail."""
    thumb = rgb.copy()
    thumb.thumbnail((size, size), Image.Resampling.BOX)
    lab = rgb2lab(np.asarray(thumb))
    residual = tint_residual(lab)
    return lab[..., 0], np.hypot(residual[..., 0], residual[..., 1])


def _spread(distance: np.ndarray) -> float:
    return float(np.percentile(distance, 99))


def _fraction(light: np.ndarray, distance: np.ndarray, limits: ImageLimits) -> float:
    midtones = (light >= 5) & (light <= 90)
    coloured = (distance > limits.chroma_threshold) & midtones
    coloured = ndimage.binary_opening(coloured, structure=np.ones((3, 3), dtype=bool))
    return float(coloured.sum() / max(int(midtones.sum()), 1))


def tint_spread(rgb: Image.Image, size: int = 256) -> float:
    """How far (Lab a*b* units) the 99th-percentile pixel of a thumbnail departs from the tint
    of its lightness (:func:`tint_residual`): about 0 for gray and toned prints."""
    return _spread(_off_tint(rgb, size)[1])


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
    return _fraction(*_off_tint(rgb, size), limits)


@dataclass(frozen=True)
class ColourEvidence:
    """The monochrome-or-colour decision about one picture and the evidence behind it."""

    #: how much colour the picture carries (higher is more colour; sortable in the index)
    score: float
    is_colour: bool
    #: one line an archivist can read, e.g. "0.03% of pixels carry colour beyond one tint"
    detail: str


def colour_evidence(rgb: Image.Image, limits: ImageLimits = DEFAULT_LIMITS) -> ColourEvidence:
    """Decide whether ``rgb`` is a colour photograph or a monochrome one (toned, stained, foxed,
    cracked, stamped or annotated monochrome included), with the evidence.

    A picture smaller than the judge's view is judged by the single-tint rule alone. A picture
    whose colour is one tint per lightness (:func:`tint_spread`) is monochrome at once.
    Otherwise the colour judge (``koala/colour_judge.py``) looks at where the colour is and
    whether it follows the picture; ``score`` is its probability that this is a colour
    photograph. The detail also gives the share of pixels whose colour departs from one tint.
    """
    light, distance = _off_tint(rgb)  # one thumbnail for both measures
    fraction = _fraction(light, distance, limits)
    if max(rgb.size) < limits.judge_min_side:
        return ColourEvidence(
            fraction,
            fraction >= limits.min_colour_fraction,
            f"small picture, single-tint rule: {fraction:.2%} of pixels depart from one tint",
        )
    spread = _spread(distance)
    if spread < limits.one_tint_spread:
        return ColourEvidence(0.0, False, f"one tint: 99% of pixels within {spread:.1f} of it")
    import torch  # not at import: the CLI checks inputs before anything heavy loads

    from koala.colour_judge import monochrome_probability

    mono = float(monochrome_probability(torch.from_numpy(judge_view(rgb))[None])[0])
    return ColourEvidence(
        round(1.0 - mono, 4),
        mono < limits.monochrome_probability,
        f"colour judge: {1.0 - mono:.0%} a colour photograph"
        f" ({fraction:.2%} of pixels depart from one tint)",
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
