"""Outputs keep the input's catalogue: EXIF, IPTC, XMP, resolution and ICC profile survive
colorization, the machine-colorized label is added beside them, 16-bit RGB masters stay 16-bit,
and ``--format auto`` keeps each input's format. Inputs are written with real tools (Pillow,
tifffile, OpenCV, Exiv2) and outputs are read back with them."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import cv2
import numpy as np
import pyexiv2
import pytest
import tifffile
from PIL import Image, ImageCms
from skimage.color import rgb2lab

from koala.outputs import (
    DIGITAL_SOURCE_TYPE,
    FORMAT_CHOICES,
    encode_output,
    output_dtype,
    read_label,
    read_metadata,
    resolve_format,
)
from koala.scans import read_scan
from tasks.colorize import ColorizeConfig, Prediction, _write_output
from tests.fixtures import colour_photo

LABEL = "Colorized by Koala unet@v9"
SHA = "ab" * 32
RGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
EXIF = {
    "Exif.Image.Artist": "Ann Archivist",
    "Exif.Image.Copyright": "(c) Harbour Museum, CC BY 4.0",
    "Exif.Image.ImageDescription": "Harbour at dawn, 1921",
    "Exif.Image.Software": "ScanStation 3.1",
    "Exif.Photo.DateTimeOriginal": "1921:05:04 06:30:00",
}
IPTC = {
    "Iptc.Application2.Caption": "Harbour at dawn, 1921",
    "Iptc.Application2.Byline": ["Ann Archivist"],
    "Iptc.Application2.Keywords": ["harbour", "boats"],
}
XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/"
 xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
 xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
 xmlns:archive="https://archive.example.org/ns/1.0/"
 dc:identifier="INV-1921-0042" photoshop:Credit="Harbour Museum" tiff:ImageWidth="9999"
 xmpMM:InstanceID="xmp.iid:scan-1" archive:box="Box 17">
<dc:creator><rdf:Seq><rdf:li>Ann Archivist</rdf:li></rdf:Seq></dc:creator>
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Harbour at dawn, 1921</rdf:li>
<rdf:li xml:lang="de">Hafen im Morgengrauen, 1921</rdf:li></rdf:Alt></dc:description>
<xmpMM:History><rdf:Seq><rdf:li stEvt:action="created" stEvt:softwareAgent="ScanStation 3.1"/>
</rdf:Seq></xmpMM:History></rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""


def _gray_rgb(size: tuple[int, int] = (160, 120)) -> Image.Image:
    return colour_photo(3, size).convert("L").convert("RGB")


def _catalogued(fmt: str, exif: dict | None = None, xmp: str = XMP, iptc: dict = IPTC) -> bytes:
    """A monochrome scan in ``fmt`` at 600 dpi in the container's own field (JFIF density,
    PNG pHYs, TIFF tags) with an RGB ICC profile, then EXIF, IPTC and XMP written by Exiv2."""
    buf = io.BytesIO()
    _gray_rgb().save(buf, fmt, dpi=(600, 600), icc_profile=RGB_ICC)
    img = pyexiv2.ImageData(buf.getvalue())
    try:
        img.modify_exif(EXIF if exif is None else exif)
        img.modify_iptc(iptc)
        img.modify_raw_xmp(xmp)
        return img.get_bytes()
    finally:
        img.close()


def _meta(data: bytes) -> tuple[dict, dict, dict, bytes]:
    img = pyexiv2.ImageData(data)
    try:
        return img.read_exif(), img.read_iptc(), img.read_xmp(), img.read_icc()
    finally:
        img.close()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_catalogue_survives_colorization(fmt: str) -> None:
    data = _catalogued(fmt)
    scan = read_scan(data)
    out_fmt = resolve_format("auto", scan)
    assert out_fmt == {"JPEG": "jpg", "PNG": "png", "TIFF": "tiff"}[fmt]
    rgb = np.asarray(colour_photo(5, (160, 120)))
    out = encode_output(
        rgb, out_fmt, "unet", "v9", SHA, source=scan.metadata, source_uri="s3://a/b"
    )
    exif, iptc, xmp, icc = _meta(out)
    for key, value in EXIF.items():
        assert exif.get(key) == value, (fmt, key)  # the caption and Software are not overwritten
    for key, value in IPTC.items():
        assert iptc.get(key) == value, (fmt, key)
    assert xmp["Xmp.dc.identifier"] == "INV-1921-0042"
    assert xmp["Xmp.dc.creator"] == ["Ann Archivist"]
    assert xmp["Xmp.photoshop.Credit"] == "Harbour Museum"
    assert xmp["Xmp.archive.box"] == "Box 17"  # a namespace Koala does not know
    assert xmp["Xmp.dc.description"] == {
        'lang="x-default"': "Harbour at dawn, 1921",
        'lang="de"': "Hafen im Morgengrauen, 1921",
    }
    assert "Xmp.tiff.ImageWidth" not in xmp  # described the old pixels
    assert icc == RGB_ICC
    assert (exif["Exif.Image.XResolution"], exif["Exif.Image.ResolutionUnit"]) == ("600/1", "2")
    with Image.open(io.BytesIO(out)) as img:
        assert [round(v) for v in img.info["dpi"]] == [600, 600]
        assert img.info["icc_profile"] == RGB_ICC
        assert np.array_equal(np.asarray(img.convert("RGB")).shape, rgb.shape)
    # the label lives beside the caption, with the digital source type and provenance
    assert read_label(out) == LABEL
    assert xmp["Xmp.koala.label"] == LABEL and LABEL in exif["Exif.Photo.UserComment"]
    assert xmp["Xmp.iptcExt.DigitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert (xmp["Xmp.koala.model"], xmp["Xmp.koala.modelVersion"]) == ("unet", "v9")
    assert (xmp["Xmp.koala.sourceSha256"], xmp["Xmp.koala.sourceUri"]) == (SHA, "s3://a/b")
    assert xmp["Xmp.xmpMM.History[1]/stEvt:softwareAgent"] == "ScanStation 3.1"
    assert xmp["Xmp.xmpMM.History[2]/stEvt:parameters"] == LABEL
    assert xmp["Xmp.xmpMM.DerivedFrom/stRef:instanceID"] == "xmp.iid:scan-1"
    assert xmp["Xmp.xmpMM.InstanceID"] != "xmp.iid:scan-1"


def test_uncaptioned_input_gets_the_label_as_caption_and_upright_tags() -> None:
    exif = {"Exif.Image.Artist": "Ann Archivist", "Exif.Image.Orientation": "6"}
    bare_xmp = XMP.replace("<dc:description>", "<!--").replace("</dc:description>", "-->")
    data = _catalogued("JPEG", exif, bare_xmp, {"Iptc.Application2.Byline": ["Ann Archivist"]})
    assert not read_metadata(data).caption
    scan = read_scan(data)
    assert (scan.width, scan.height) == (120, 160)  # turned upright
    out = encode_output(np.asarray(scan.view.convert("RGB")), "jpg", "unet", "v9", SHA, data)
    got, iptc, xmp, _ = _meta(out)
    assert iptc == {"Iptc.Application2.Byline": ["Ann Archivist"]}
    assert got["Exif.Image.Artist"] == "Ann Archivist"
    assert got["Exif.Image.Orientation"] == "1"  # the pixels are upright already
    assert got["Exif.Image.ImageDescription"] == LABEL
    assert xmp["Xmp.dc.description"] == {'lang="x-default"': LABEL}
    assert got["Exif.Image.Software"].startswith("Koala ")
    assert xmp["Xmp.xmp.CreatorTool"].startswith("Koala ")
    assert read_label(out) == LABEL
    with Image.open(io.BytesIO(out)) as img:
        assert img.size == (120, 160)


def test_a_profile_for_other_than_rgb_is_recorded_not_attached() -> None:
    lab_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    buf = io.BytesIO()
    _gray_rgb().convert("L").save(buf, "PNG", icc_profile=lab_icc)
    scan = read_scan(buf.getvalue())
    assert scan.metadata.icc == lab_icc
    out = encode_output(np.asarray(colour_photo(1)), "png", "unet", "v9", SHA, scan.metadata)
    _, _, xmp, icc = _meta(out)
    assert icc == b"" and "icc_profile" not in Image.open(io.BytesIO(out)).info
    assert xmp["Xmp.koala.sourceIccProfile"]
    assert read_label(out) == LABEL


def _rgb16_levels() -> np.ndarray:
    """A warm-toned 16-bit print whose levels differ by single 16-bit steps."""
    ramp = np.linspace(2000, 62000, 200, dtype=np.float64)[None, :]
    base = ramp + np.arange(150)[:, None] * 3.0
    return np.stack([base + 300, base + 120, base], axis=-1).round().astype(np.uint16)


def _lightness16(rgb16: np.ndarray) -> np.ndarray:
    return rgb2lab(rgb16.astype(np.float64) / 65535.0)[..., 0]


def test_16_bit_rgb_tiff_and_png_are_read_at_full_precision() -> None:
    levels = _rgb16_levels()
    tif = io.BytesIO()
    tifffile.imwrite(tif, levels, photometric="rgb", compression="zlib")
    ok, png = cv2.imencode(".png", levels[..., ::-1])
    assert ok
    truth = _lightness16(levels)
    for data in (tif.getvalue(), png.tobytes()):
        scan = read_scan(data)
        assert scan.bit_depth == 16 and scan.input_mode == "RGB;16"
        assert scan.view.mode == "RGB" and scan.colour is not None  # judged on an 8-bit view
        assert np.abs(scan.lightness - truth).max() < 0.01
    eight_bit = rgb2lab((levels >> 8).astype(np.uint8))[..., 0]
    assert np.abs(eight_bit - truth).max() > 0.1  # what reading them as 8-bit would lose


def test_16_bit_tiff_master_stays_a_16_bit_tiff(tmp_path: Path) -> None:
    levels = _rgb16_levels()
    tif = io.BytesIO()
    tifffile.imwrite(tif, levels, photometric="rgb", resolution=(600, 600), resolutionunit="INCH")
    data = tif.getvalue()
    scan = read_scan(data)
    cfg = ColorizeConfig(registry="unused", model="unet", output=str(tmp_path), format="auto")
    row = {
        "input_uri": "file:///scans/master.tif",
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "_name": "scans/master",
        "ordinal": 99,
        "key": "k",
    }
    ab = np.zeros((2, 200, 200), dtype=np.float32)  # neutral colour: the output's L* is the scan's
    prediction = Prediction(ab, (0, 0, 200, 200), np.full((200, 200), 50.0, np.float32), None)
    _write_output(row, scan, prediction, cfg, {"name": "unet", "version": "v9"})
    assert row["status"] == "ok" and row["output_uri"].endswith("scans/master.tif")
    out = Path(row["output_uri"]).read_bytes()
    with tifffile.TiffFile(io.BytesIO(out)) as t:
        page = t.pages[0]
        assert page.dtype == np.uint16 and page.shape == levels.shape
        written = page.asarray()
        assert page.tags["XResolution"].value == (600, 1)
    assert np.abs(_lightness16(written) - _lightness16(levels)).max() < 0.02
    assert read_label(out) == LABEL
    assert _meta(out)[2]["Xmp.koala.sourceUri"] == "file:///scans/master.tif"
    # an explicit JPEG of the same master is 8-bit, as asked
    assert resolve_format("jpg", scan) == "jpg" and output_dtype("jpg", 16) is np.uint8


def test_16_bit_png_output_keeps_depth_resolution_and_catalogue() -> None:
    levels = _rgb16_levels()
    _, png = cv2.imencode(".png", levels[..., ::-1])
    src = pyexiv2.ImageData(png.tobytes())
    src.modify_exif({"Exif.Image.Artist": "Ann Archivist", "Exif.Image.XResolution": "600/1"})
    src.modify_exif({"Exif.Image.YResolution": "600/1", "Exif.Image.ResolutionUnit": "2"})
    data = src.get_bytes()
    src.close()
    scan = read_scan(data)
    fmt = resolve_format("auto", scan)
    assert fmt == "png" and output_dtype(fmt, scan.bit_depth) is np.uint16
    out = encode_output(levels, fmt, "unet", "v9", SHA, scan.metadata)
    back = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert back.dtype == np.uint16 and np.array_equal(back, levels)
    with Image.open(io.BytesIO(out)) as img:
        assert [round(v) for v in img.info["dpi"]] == [600, 600]  # the pHYs chunk
    assert _meta(out)[0]["Exif.Image.Artist"] == "Ann Archivist"
    assert read_label(out) == LABEL


def test_auto_format_choice() -> None:
    class Scan:
        def __init__(self, fmt: str) -> None:
            self.format = fmt

    auto = {f: resolve_format("auto", Scan(f)) for f in ("TIFF", "PNG", "JPEG", "WEBP", "BMP")}
    assert auto == {"TIFF": "tiff", "PNG": "png", "JPEG": "jpg", "WEBP": "png", "BMP": "png"}
    assert resolve_format("tiff", Scan("JPEG")) == "tiff" and "auto" in FORMAT_CHOICES
    with pytest.raises(ValueError, match="unknown output format 'gif'"):
        resolve_format("gif", Scan("PNG"))
