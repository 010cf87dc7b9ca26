"""Decode and validate one image: full decode, EXIF orientation, RGB, size limits, monochrome test.

Used by ``build-dataset`` (and later ``colorize-archive``) so that both judge images the same way.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from koala.choices import DEFAULT_LIMITS, IMAGE_EXTENSIONS, ImageLimits  # noqa: F401
from koala.errors import Rejected
from koala.monochrome import ColourEvidence, colour_evidence  # noqa: F401

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


def image_signature(head: bytes) -> str | None:
    """The supported format (Pillow's name) whose signature ``head`` (a file's first bytes)
    carries, by Pillow's own format checks; None when it carries none."""
    Image.init()
    for fmt in sorted(SUPPORTED_FORMATS):
        accept = Image.OPEN.get(fmt, (None, None))[1]
        if accept is not None and accept(head[:64]):
            return fmt
    return None


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
