"""Reading archival scans for colorization: any mode and bit depth, to full-resolution CIE L*.

8- and 16-bit grayscale, bilevel, RGB, RGBA/LA, palette and CMYK inputs; TIFF (first page of a
multi-page file, noted), JPEG, PNG, WebP; EXIF orientation applied. Gray scans keep their full
precision: L* comes from a lookup table over every 8- or 16-bit level. Colour-mode scans are
tested with the same monochrome test as ``build-dataset``: sepia-toned or yellowed ones are
colorized from their luminance; ones with real colour are skipped unless ``treat_as`` says
``monochrome``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.color import rgb2lab

from koala.choices import TREAT_AS  # noqa: F401
from koala.colour import gray_lightness_table, rgb_to_lab
from koala.images import (
    DEFAULT_LIMITS,
    ColourEvidence,
    ImageLimits,
    OpenedImage,
    colour_evidence,
    open_image,
    to_rgb,
)
from koala.outputs import SourceMetadata, read_metadata

GRAY_8 = frozenset({"1", "L", "LA", "La"})
GRAY_16 = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
#: rows converted at a time, so that no full-size float temporaries are made
STRIP_ROWS = 256


#: the colour evidence of a gray-mode file: it has no colour channels, so no colour at all
GRAY_FILE = ColourEvidence(0.0, False, "grayscale file: no colour channels", stage="gray file")


class HasColour(Exception):
    """The scan already carries real colour (``skipped_color`` unless treated as monochrome)."""

    def __init__(self, evidence: ColourEvidence, image: Image.Image, mode: str) -> None:
        super().__init__(evidence.detail)
        self.evidence = evidence
        #: the 8-bit RGB view that was judged (for a thumbnail when the judge was unsure)
        self.image = image
        self.width, self.height, self.mode = image.width, image.height, mode


@dataclass
class Scan:
    """A decoded scan: its full-resolution L* and an 8-bit view source for the models."""

    lightness: np.ndarray  #: float32 (H, W), L* in [0, 100]
    view: Image.Image  #: 8-bit "L" or "RGB" image the models' views are made from
    format: str
    input_mode: str
    bit_depth: int
    note: str = ""
    #: the colour decision (for gray-mode files :data:`GRAY_FILE`)
    colour: ColourEvidence | None = GRAY_FILE
    #: the input's catalogue metadata (EXIF, IPTC, XMP, ICC, resolution) for its output
    metadata: SourceMetadata | None = None

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


def judge_colour(rgb: Image.Image, treat_as: str, limits: ImageLimits, mode: str) -> ColourEvidence:
    """The colour evidence of an 8-bit RGB view; raise :class:`HasColour` when it is a colour
    photograph and ``treat_as`` is ``auto``, or ``treat_as`` is ``colour``."""
    evidence = colour_evidence(rgb, limits)
    if treat_as == "colour" or (treat_as == "auto" and evidence.is_colour):
        raise HasColour(evidence, rgb, mode)
    return evidence


def _rawmode(data: bytes) -> str:
    """Pillow's raw mode of the first tile (e.g. ``RGB;16B``), from the header alone."""
    try:
        tiles = Image.open(io.BytesIO(data)).tile
    except Exception:
        return ""
    args = tiles[0].args if tiles else ""
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H, W, C) turned upright as EXIF ``orientation`` says (as exif_transpose)."""
    return {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation, lambda a: a)(arr)


def read_rgb16(data: bytes, fmt: str, orientation: int = 1) -> np.ndarray | None:
    """The upright (H, W, 3 or 4) uint16 samples of a 16-bit RGB(A) TIFF (tifffile, first page)
    or PNG (OpenCV); None for any other image (Pillow reads those at full precision)."""
    if fmt not in ("TIFF", "PNG") or ";16" not in _rawmode(data):
        return None
    if fmt == "TIFF":
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            arr = page.asarray()
            if page.axes.startswith("S"):  # planar: one plane per sample
                arr = np.moveaxis(arr, 0, -1)
    else:
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None or arr.ndim != 3:
            return None
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return None
    return _orient(arr, orientation)


def _rgb16_lightness(rgb16: np.ndarray) -> tuple[np.ndarray, Image.Image]:
    """L* from the 16-bit samples (alpha over white) and the 8-bit RGB view, a strip at a
    time, so that no full-size float temporaries are made."""
    h, w = rgb16.shape[:2]
    lightness = np.empty((h, w), dtype=np.float32)
    view = np.empty((h, w, 3), dtype=np.uint8)
    for y in range(0, h, STRIP_ROWS):
        strip = rgb16[y : y + STRIP_ROWS].astype(np.float32) / np.float32(65535.0)
        rgb = strip[..., :3]
        if strip.shape[2] == 4:
            alpha = strip[..., 3:]
            rgb = rgb * alpha + (np.float32(1.0) - alpha)
        lightness[y : y + STRIP_ROWS] = rgb2lab(rgb)[..., 0]
        view[y : y + STRIP_ROWS] = (rgb * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)
    return lightness, Image.fromarray(view)


def read_scan(data: bytes, treat_as: str = "auto", limits: ImageLimits = DEFAULT_LIMITS) -> Scan:
    """Decode ``data`` into a :class:`Scan`; raise :class:`Rejected` for unusable input and
    :class:`HasColour` for a colour photograph (see :func:`judge_colour`)."""
    opened = open_image(data, limits)
    img, mode = opened.image, opened.mode
    note = f"multi-page {opened.format} ({opened.frames} pages): first page colorized"
    note = note if opened.frames > 1 else ""
    if img.mode in GRAY_8:
        gray = (to_rgb(img) if img.mode in ("LA", "La") else img).convert("L")  # alpha over white
        lightness = gray_lightness_table(256)[np.asarray(gray)]
        scan = Scan(lightness, gray, opened.format, mode, 1 if mode == "1" else 8, note)
    elif img.mode in GRAY_16:
        levels = _gray16(img)
        lightness = gray_lightness_table(65536)[levels]
        view = Image.fromarray((levels >> 8).astype(np.uint8))
        scan = Scan(lightness, view, opened.format, mode, 16, note)
    else:
        scan = _colour_scan(data, opened, treat_as, limits, note)
    scan.metadata = read_metadata(data)
    if scan.metadata.error:
        scan.note = "; ".join(n for n in (scan.note, scan.metadata.error) if n)
    return scan


def _colour_scan(
    data: bytes, opened: OpenedImage, treat_as: str, limits: ImageLimits, note: str
) -> Scan:
    """A colour-mode scan: 16-bit RGB(A) TIFF and PNG at full precision, others via 8-bit RGB;
    judged by :func:`judge_colour` on its 8-bit view."""
    mode = opened.mode
    try:
        rgb16 = read_rgb16(data, opened.format, opened.orientation)
    except Exception as exc:  # a codec tifffile or OpenCV lacks: Pillow's 8-bit reading
        rgb16, note = None, "; ".join(n for n in (note, f"read as 8-bit ({exc})") if n)
    if rgb16 is not None and rgb16.shape[:2] == (opened.image.height, opened.image.width):
        opened.image = None  # type: ignore[assignment]  # the 8-bit decode is not needed
        lightness, view = _rgb16_lightness(rgb16)
        del rgb16
        evidence = judge_colour(view, treat_as, limits, mode)  # else sepia, toned, yellowed
        return Scan(lightness, view, opened.format, f"{mode};16", 16, note, evidence)
    rgb = to_rgb(opened.image)  # palette, CMYK, alpha over white, ...
    opened.image = None  # type: ignore[assignment]
    evidence = judge_colour(rgb, treat_as, limits, mode)  # else sepia, toned, yellowed
    return Scan(_rgb_lightness(np.asarray(rgb)), rgb, opened.format, mode, 8, note, evidence)
