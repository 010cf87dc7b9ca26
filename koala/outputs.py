"""Writing colorized images: the input's own catalogue metadata kept, a machine-colorized label
added beside it, in the input's format and bit depth by default.

What is kept (:func:`read_metadata`, :func:`encode_output`, with pyexiv2 / Exiv2): EXIF (Artist,
Copyright, DateTimeOriginal, ImageDescription, GPS, ...), IPTC (caption, by-line, keywords, ...),
the whole XMP packet (dc:identifier, dc:creator, dc:rights, photoshop:*, custom namespaces), the
JPEG comment, the resolution (EXIF X/YResolution and unit, and the container's own: JFIF density,
PNG pHYs, TIFF tags) and an RGB ICC profile. What is dropped or rewritten is only what would be
wrong for the new pixels: image structure (sizes, bits per sample, compression, photometric
interpretation, strips and tiles), thumbnails and preview IFDs, Orientation (set to 1: the
pixels are already upright), and a colour space that no longer holds.

What is added, never overwriting an input field: XMP ``Iptc4xmpExt:DigitalSourceType`` (IPTC
"composite with trained algorithmic media"), an ``xmpMM:History`` event naming Koala, the
``koala:`` namespace (model, modelVersion, saturation, label, sourceSha256, sourceUri, and
hints, hintCount, hintsSha256 where colour hints were given),
``xmp:CreatorTool`` and EXIF Software only where the input has none, and the words
``Colorized by Koala <model>@<version>``: as the caption (EXIF ImageDescription,
dc:description) only when the input has no caption; otherwise the caption is kept verbatim
and the words go to ``koala:label`` and, when free, EXIF UserComment (where EXIF readers that
show comments will show them).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import struct
import threading
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pyexiv2
from PIL import Image, ImageCms, PngImagePlugin

from koala.choices import FORMAT_CHOICES, FORMATS
from koala.version import __version__

#: the output format ``auto`` gives each input format (others, e.g. WebP and BMP, become PNG)
AUTO_FORMATS = {"TIFF": "tiff", "PNG": "png", "JPEG": "jpg", "MPO": "jpg"}
#: output formats that keep 16-bit samples
SIXTEEN_BIT_FORMATS = frozenset({"png", "tiff"})
#: IPTC NewsCodes digital source type: "edited using Generative AI / trained algorithm"
DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
KOALA_NS = "https://github.com/koala-colorize/ns/1.0/"
#: Exiv2's XMP toolkit is not safe across threads: one metadata job at a time per process
_EXIV2 = threading.RLock()
log = logging.getLogger(__name__)

#: EXIF tags that describe the old pixels or are carried by other means (XMP, IPTC, ICC)
_EXIF_DROP = frozenset(
    "Exif.Image." + t
    for t in (
        "NewSubfileType",
        "SubfileType",
        "ImageWidth",
        "ImageLength",
        "BitsPerSample",
        "Compression",
        "PhotometricInterpretation",
        "FillOrder",
        "StripOffsets",
        "SamplesPerPixel",
        "RowsPerStrip",
        "StripByteCounts",
        "PlanarConfiguration",
        "Predictor",
        "ColorMap",
        "TileWidth",
        "TileLength",
        "TileOffsets",
        "TileByteCounts",
        "SubIFDs",
        "ExtraSamples",
        "SampleFormat",
        "SMinSampleValue",
        "SMaxSampleValue",
        "MinSampleValue",
        "MaxSampleValue",
        "JPEGTables",
        "JPEGInterchangeFormat",
        "JPEGInterchangeFormatLength",
        "YCbCrCoefficients",
        "YCbCrSubSampling",
        "YCbCrPositioning",
        "ReferenceBlackWhite",
        "GrayResponseUnit",
        "GrayResponseCurve",
        "TransferFunction",
        "PageNumber",
        "XMLPacket",
        "IPTCNAA",
        "ImageResources",
        "InterColorProfile",
        "ExifTag",
        "GPSTag",
    )
) | {
    "Exif.Photo.PixelXDimension",
    "Exif.Photo.PixelYDimension",
    "Exif.Photo.CompressedBitsPerPixel",
    "Exif.Photo.InteroperabilityTag",
}
#: EXIF groups of other images in the file (thumbnail, previews, sub-IFDs, MPF pages)
_EXIF_DROP_GROUPS = ("Thumbnail", "SubImage", "SubThumb", "Image2", "Image3", "MpfInfo")
#: XMP properties that describe the old pixels
_XMP_DROP = tuple(
    "Xmp." + t
    for t in (
        "tiff.ImageWidth",
        "tiff.ImageLength",
        "tiff.BitsPerSample",
        "tiff.Compression",
        "tiff.PhotometricInterpretation",
        "tiff.SamplesPerPixel",
        "tiff.PlanarConfiguration",
        "tiff.YCbCrSubSampling",
        "tiff.YCbCrPositioning",
        "exif.PixelXDimension",
        "exif.PixelYDimension",
        "xmp.Thumbnails",
        "photoshop.ColorMode",
    )
)
_MIME = {"jpg": "image/jpeg", "png": "image/png", "tiff": "image/tiff"}
_RESOLUTION_UNITS = {2: "INCH", 3: "CENTIMETER"}


@functools.cache
def _koala_ns() -> None:
    """Tell Exiv2 the ``koala`` XMP prefix, once per process, before its first use."""
    pyexiv2.registerNs(KOALA_NS, "koala")


def _exiv2_image(data: bytes) -> pyexiv2.ImageData:
    """An Exiv2 image over ``data`` with the ``koala`` namespace known (hold ``_EXIV2``)."""
    _koala_ns()
    return pyexiv2.ImageData(data)


def label(model: str, version: str) -> str:
    """The words every output carries."""
    return f"Colorized by Koala {model}@{version}"


def resolve_format(requested: str, scan: Any) -> str:
    """The concrete output format for ``scan`` (anything with a Pillow ``format`` name):
    ``requested`` itself, or under ``auto`` the input's own format (TIFF, PNG, JPEG), PNG for
    the rest (WebP, BMP)."""
    if requested == "auto":
        return AUTO_FORMATS.get(scan.format, "png")
    if requested not in FORMATS:
        raise ValueError(f"unknown output format {requested!r}; choose from {FORMAT_CHOICES}")
    return requested


def output_dtype(fmt: str, bit_depth: int) -> type:
    """uint16 for a 16-bit scan written as PNG or TIFF, else uint8 (an explicit JPEG is 8-bit)."""
    return np.uint16 if bit_depth == 16 and fmt in SIXTEEN_BIT_FORMATS else np.uint8


@dataclass
class SourceMetadata:
    """What an input says about itself, ready to be written into its colorized output."""

    exif: dict[str, Any] = field(default_factory=dict)
    iptc: dict[str, Any] = field(default_factory=dict)
    #: the raw XMP packet (custom namespaces included)
    xmp: str = ""
    icc: bytes = b""
    comment: str = ""
    #: (x, y, unit) of the upright image, unit 2 = inch, 3 = centimetre
    resolution: tuple[Fraction, Fraction, int] | None = None
    #: the input has a caption (EXIF ImageDescription, IPTC Caption or dc:description)
    caption: bool = False
    exif_encoding: str = "utf-8"
    iptc_encoding: str = "utf-8"
    #: why the metadata could not be read, if it could not ("" when it was)
    error: str = ""


def _read(read, *args) -> tuple[dict, str]:
    """A pyexiv2 read in UTF-8, or Latin-1 for old files (written back in the same encoding)."""
    try:
        return read(*args, encoding="utf-8"), "utf-8"
    except UnicodeDecodeError:
        return read(*args, encoding="latin-1"), "latin-1"


def _ratio(text: str | None) -> Fraction | None:
    try:
        value = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _resolution(exif: dict, data: bytes) -> tuple[Fraction, Fraction, int] | None:
    """The input's resolution: EXIF/TIFF tags first, else JFIF density or PNG pHYs (via
    Pillow), swapped when EXIF orientation turns the image by 90 degrees."""
    x, y = _ratio(exif.get("Exif.Image.XResolution")), _ratio(exif.get("Exif.Image.YResolution"))
    unit = int(exif.get("Exif.Image.ResolutionUnit") or 2)
    if x is None or y is None:
        try:
            dpi = Image.open(io.BytesIO(data)).info.get("dpi")
        except Exception:
            dpi = None
        if not dpi or min(dpi) <= 0:
            return None
        # pHYs holds pixels per metre: 600 dpi comes back as 599.9988
        x, y = (Fraction(round(v)) if abs(v - round(v)) < 0.01 else Fraction(v) for v in dpi)
        x, y, unit = x.limit_denominator(1000), y.limit_denominator(1000), 2
    if unit not in _RESOLUTION_UNITS:
        return None
    turned = str(exif.get("Exif.Image.Orientation", "1")).strip() in ("5", "6", "7", "8")
    return (y, x, unit) if turned else (x, y, unit)


def read_metadata(data: bytes) -> SourceMetadata:
    """The catalogue metadata of an encoded input; never raises (an unreadable block gives an
    empty :class:`SourceMetadata` whose ``error`` says why)."""
    with _EXIV2:
        return _read_metadata(data)


def _read_metadata(data: bytes) -> SourceMetadata:
    try:
        img = _exiv2_image(data)
    except Exception as exc:
        return SourceMetadata(error=f"metadata not readable ({exc})")
    try:
        exif, exif_enc = _read(img.read_exif)
        iptc, iptc_enc = _read(img.read_iptc)
        xmp = img.read_xmp()
        raw_xmp = img.read_raw_xmp() if xmp else ""
        icc = img.read_icc()
        try:
            comment = img.read_comment().strip("\x00")
        except Exception:
            comment = ""
    except Exception as exc:
        return SourceMetadata(error=f"metadata not readable ({exc})")
    finally:
        img.close()
    caption = bool(
        str(exif.get("Exif.Image.ImageDescription", "")).strip()
        or any(str(c).strip() for c in _as_list(iptc.get("Iptc.Application2.Caption")))
        or any(str(v).strip() for v in _as_dict(xmp.get("Xmp.dc.description")).values())
    )
    kept = {
        k: v
        for k, v in exif.items()
        if k not in _EXIF_DROP and k.split(".")[1] not in _EXIF_DROP_GROUPS
    }
    return SourceMetadata(
        exif=kept,
        iptc=iptc,
        xmp=raw_xmp,
        icc=icc,
        comment=comment,
        resolution=_resolution(exif, data),
        caption=caption,
        exif_encoding=exif_enc,
        iptc_encoding=iptc_enc,
    )


def _as_list(value: Any) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {} if value is None else {"": value}


def rgb_icc(icc: bytes) -> bool:
    """True when ``icc`` is a valid ICC profile for RGB data (gray, CMYK, Lab ones are not)."""
    if not icc:
        return False
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip() == "RGB"
    except Exception:
        return False


def icc_description(icc: bytes) -> str:
    """The profile's own description, e.g. ``Dot Gain 20%`` (empty when unreadable)."""
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except Exception:
        return ""


@dataclass(frozen=True)
class Provenance:
    """Who made an output from what."""

    model: str
    version: str
    source_sha256: str
    source_uri: str | None = None
    #: the colour strength asked for (1: as the model predicts)
    saturation: float = 1.0
    #: the archivist's colour hints (their interchange JSON) and its digest, when given
    hints: str | None = None
    hints_sha256: str | None = None


def _png_with_phys(png: bytes, x: float, y: float) -> bytes:
    """A PNG with a pHYs chunk (pixels per metre) right after IHDR, framed by Pillow."""
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length and type, IHDR data, CRC
    chunk = io.BytesIO()
    ppm = struct.pack(">IIB", round(x / 0.0254), round(y / 0.0254), 1)
    PngImagePlugin.putchunk(chunk, b"pHYs", ppm)
    return png[:ihdr_end] + chunk.getvalue() + png[ihdr_end:]


def _encode_pixels(
    rgb: np.ndarray, fmt: str, resolution: tuple[Fraction, Fraction, int] | None, quality: int
) -> bytes:
    """The pixels alone in ``fmt``, with the container's own resolution fields."""
    dpi = None
    if resolution is not None:
        per_inch = Fraction(254, 100) if resolution[2] == 3 else 1
        dpi = (float(resolution[0] * per_inch), float(resolution[1] * per_inch))
    buf = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        res = {}
        if resolution is not None:
            res = {
                "resolution": (float(resolution[0]), float(resolution[1])),
                "resolutionunit": _RESOLUTION_UNITS[resolution[2]],
            }
        tifffile.imwrite(
            buf,
            rgb,
            photometric="rgb",
            compression="zlib",
            compressionargs={"level": 1},
            software=False,
            metadata=None,
            **res,
        )
        return buf.getvalue()
    if fmt == "png" and rgb.dtype == np.uint16:
        import cv2

        ok, png = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise ValueError("PNG encoding failed")
        return _png_with_phys(png.tobytes(), *dpi) if dpi else png.tobytes()
    if rgb.dtype != np.uint8:
        raise ValueError(f"{fmt} output is 8-bit; write 16-bit results as png or tiff")
    extra = {"dpi": dpi} if dpi else {}
    if fmt == "jpg":
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=0, **extra)
    elif fmt == "png":
        Image.fromarray(rgb).save(buf, "PNG", compress_level=6, **extra)
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose from {sorted(FORMATS)}")
    return buf.getvalue()


def _exif_changes(meta: SourceMetadata, prov: Provenance, icc_kept: bool) -> dict:
    """The input's EXIF with Orientation 1, the resolution, and the label where it fits."""
    words = label(prov.model, prov.version)
    exif = dict(meta.exif)
    if "Exif.Image.Orientation" in exif:  # the pixels are upright now
        exif["Exif.Image.Orientation"] = "1"
    if meta.resolution is not None:
        x, y, unit = meta.resolution
        exif["Exif.Image.XResolution"] = f"{x.numerator}/{x.denominator}"
        exif["Exif.Image.YResolution"] = f"{y.numerator}/{y.denominator}"
        exif["Exif.Image.ResolutionUnit"] = str(unit)
    if not icc_kept and str(exif.get("Exif.Photo.ColorSpace", "1")) != "1":
        exif["Exif.Photo.ColorSpace"] = "1"  # the pixels are sRGB and carry no other profile
    if not str(exif.get("Exif.Image.Software", "")).strip():
        exif["Exif.Image.Software"] = f"Koala {__version__}"
    if not meta.caption:
        exif["Exif.Image.ImageDescription"] = words
    elif not str(exif.get("Exif.Photo.UserComment", "")).replace("charset=", "").strip(" \x00"):
        exif["Exif.Photo.UserComment"] = f"charset=Unicode {words}"
    return exif


def _xmp_changes(
    existing: dict, meta: SourceMetadata, prov: Provenance, fmt: str, icc_kept: bool
) -> dict:
    """Additions to the input's XMP: the label, digital source type, koala:*, a history event;
    deletions of what describes the old pixels."""
    words = label(prov.model, prov.version)
    changes: dict[str, Any] = {k: None for k in _XMP_DROP if k in existing}
    changes.update(
        {
            "Xmp.Iptc4xmpExt.DigitalSourceType": DIGITAL_SOURCE_TYPE,
            "Xmp.koala.label": words,
            "Xmp.koala.model": prov.model,
            "Xmp.koala.modelVersion": prov.version,
            "Xmp.koala.sourceSha256": prov.source_sha256,
            "Xmp.koala.saturation": f"{prov.saturation:g}",
        }
    )
    if prov.source_uri:
        changes["Xmp.koala.sourceUri"] = prov.source_uri
    if prov.hints:
        changes["Xmp.koala.hints"] = prov.hints
        changes["Xmp.koala.hintCount"] = str(len(json.loads(prov.hints)["hints"]))
        changes["Xmp.koala.hintsSha256"] = prov.hints_sha256 or ""
    if meta.icc and not icc_kept:
        # a gray or CMYK profile cannot describe RGB pixels: recorded, not attached
        changes["Xmp.koala.sourceIccProfile"] = icc_description(meta.icc) or "unnamed profile"
        changes.update({k: None for k in ("Xmp.photoshop.ICCProfile",) if k in existing})
        if str(existing.get("Xmp.exif.ColorSpace", "1")) != "1":
            changes["Xmp.exif.ColorSpace"] = "1"
    if "Xmp.tiff.Orientation" in existing:
        changes["Xmp.tiff.Orientation"] = "1"
    if "Xmp.dc.format" in existing:
        changes["Xmp.dc.format"] = _MIME[fmt]
    if not str(existing.get("Xmp.xmp.CreatorTool", "")).strip():
        changes["Xmp.xmp.CreatorTool"] = f"Koala {__version__}"
    if not meta.caption:
        changes["Xmp.dc.description"] = {'lang="x-default"': words}
    if "Xmp.xmpMM.InstanceID" in existing:  # a new file: a new instance, derived from the old
        seed = f"{prov.source_sha256}/{prov.model}@{prov.version}/{fmt}/{prov.saturation:g}"
        seed += f"/{prov.hints_sha256}" if prov.hints_sha256 else ""
        changes["Xmp.xmpMM.DerivedFrom/stRef:instanceID"] = existing["Xmp.xmpMM.InstanceID"]
        changes["Xmp.xmpMM.InstanceID"] = f"xmp.iid:{uuid.uuid5(uuid.NAMESPACE_URL, seed)}"
    n = 1 + sum(1 for k in existing if k.startswith("Xmp.xmpMM.History[") and "/" not in k)
    if n == 1:
        changes["Xmp.xmpMM.History"] = 'type="Seq"'
    event = f"Xmp.xmpMM.History[{n}]/stEvt:"
    changes[event + "action"] = "edited"
    changes[event + "softwareAgent"] = f"Koala {__version__}"
    changes[event + "parameters"] = words
    changes[event + "changed"] = "/"
    return changes


def encode_output(
    rgb: np.ndarray,
    fmt: str,
    model: str,
    version: str,
    source_sha256: str,
    source: bytes | SourceMetadata | None = None,
    source_uri: str | None = None,
    quality: int = 92,
    saturation: float = 1.0,
    hints: str | None = None,
    hints_sha256: str | None = None,
) -> bytes:
    """Encode an (H, W, 3) uint8 or uint16 (PNG, TIFF) sRGB array as ``fmt``, with the metadata
    of ``source`` (the input's bytes or its :func:`read_metadata`) and the Koala label (with
    the colour ``hints`` it honoured, their count and digest, in its XMP provenance)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        meta = read_metadata(bytes(source))
    else:
        meta = source or SourceMetadata()
    prov = Provenance(model, version, source_sha256, source_uri, saturation, hints, hints_sha256)
    # The pixels are sRGB computed from L* of the input's decoded values: neutral tones keep the
    # input's code values, so the input's RGB profile renders them as the original did.
    icc_kept = rgb_icc(meta.icc)
    pixels = _encode_pixels(rgb, fmt, meta.resolution, quality)
    with _EXIV2:
        img = _exiv2_image(pixels)
        del pixels
        try:
            _modify(img.modify_exif, _exif_changes(meta, prov, icc_kept), meta.exif_encoding)
            if meta.iptc:
                _modify(img.modify_iptc, meta.iptc, meta.iptc_encoding)
            if meta.xmp:
                try:
                    img.modify_raw_xmp(meta.xmp)
                except Exception as exc:  # a packet Exiv2 cannot parse: the label still goes in
                    log.warning("input XMP not copied: %s", exc)
            _modify(img.modify_xmp, _xmp_changes(img.read_xmp(), meta, prov, fmt, icc_kept))
            if icc_kept:
                img.modify_icc(meta.icc)
            if meta.comment and fmt == "jpg":
                img.modify_comment(meta.comment)
            return img.get_bytes()
        finally:
            img.close()


def _modify(method, changes: dict, encoding: str = "utf-8") -> None:
    """Write ``changes`` with a pyexiv2 ``modify_*`` method; when Exiv2 refuses the lot, write
    them one by one and leave out (and log) only those it refuses."""
    try:
        method(changes, encoding=encoding)
    except Exception:
        for key, value in changes.items():
            try:
                method({key: value}, encoding=encoding)
            except Exception as exc:
                log.warning("metadata %s not copied: %s", key, exc)


def read_label(data: bytes) -> str | None:
    """The Koala label of an encoded output (XMP koala:label, else EXIF ImageDescription or
    the PNG Description text of older outputs); None if absent."""
    with _EXIV2:
        img = _exiv2_image(data)
        try:
            found = img.read_xmp().get("Xmp.koala.label")
            if not found:
                found = img.read_exif().get("Exif.Image.ImageDescription")
        finally:
            img.close()
    if not found:
        found = Image.open(io.BytesIO(data)).info.get("Description")
    return found or None


def read_provenance(data: bytes) -> dict[str, str]:
    """The Koala provenance of an encoded output: ``sourceUri``, ``sourceSha256``, ``model``,
    ``modelVersion`` and ``saturation`` from its XMP (empty for a file Koala did not write)."""
    try:
        with _EXIV2:
            img = _exiv2_image(data)
            try:
                xmp = img.read_xmp()
            finally:
                img.close()
    except Exception:
        return {}
    prefix = "Xmp.koala."
    return {k[len(prefix) :]: str(v) for k, v in xmp.items() if k.startswith(prefix)}
