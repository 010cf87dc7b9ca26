"""Writing colorized images, labelled as machine-colorized in their own metadata.

Every output says ``Colorized by Koala <model>@<version>`` in EXIF ImageDescription and Software
(JPEG, TIFF), in PNG text chunks, and in an XMP packet (all three formats) that also carries the
IPTC digital source type for media edited by a trained algorithm, so archive software can tell a
colorized image from an original.
"""

from __future__ import annotations

import io
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, PngImagePlugin

import koala

FORMATS = {"jpg": ".jpg", "png": ".png", "tiff": ".tif"}
#: IPTC NewsCodes digital source type: "edited using Generative AI / trained algorithm"
DIGITAL_SOURCE_TYPE = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
_EXIF_DESCRIPTION, _EXIF_SOFTWARE = 0x010E, 0x0131
_TIFF_XMP = 700


def label(model: str, version: str) -> str:
    """The words every output carries."""
    return f"Colorized by Koala {model}@{version}"


def xmp_packet(model: str, version: str, source_sha256: str) -> bytes:
    """An XMP packet: dc:description, xmp:CreatorTool, IPTC DigitalSourceType and the input's
    sha256, so the original can be found again."""
    text = escape(label(model, version))
    return f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:koala="https://github.com/koala-colorize/ns/1.0/"
    xmp:CreatorTool="Koala {koala.__version__}"
    Iptc4xmpExt:DigitalSourceType="{DIGITAL_SOURCE_TYPE}"
    koala:model="{escape(model)}"
    koala:modelVersion="{escape(version)}"
    koala:sourceSha256="{source_sha256}">
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{text}</rdf:li></rdf:Alt></dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>""".encode()


def encode_output(
    rgb: np.ndarray, fmt: str, model: str, version: str, source_sha256: str, quality: int = 92
) -> bytes:
    """Encode an (H, W, 3) uint8 or uint16 (TIFF only) sRGB array as ``fmt`` with the label."""
    words = label(model, version)
    xmp = xmp_packet(model, version, source_sha256)
    software = f"Koala {koala.__version__}"
    buf = io.BytesIO()
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(
            buf,
            rgb,
            photometric="rgb",
            compression="zlib",
            compressionargs={"level": 1},
            description=words,
            software=software,
            metadata=None,
            extratags=[(_TIFF_XMP, "B", len(xmp), xmp, True)],
        )
        return buf.getvalue()
    if rgb.dtype != np.uint8:
        raise ValueError(f"{fmt} output is 8-bit; write 16-bit results as tiff")
    img = Image.fromarray(rgb)
    if fmt == "jpg":
        exif = Image.Exif()
        exif[_EXIF_DESCRIPTION] = words
        exif[_EXIF_SOFTWARE] = software
        img.save(buf, "JPEG", quality=quality, subsampling=0, exif=exif, xmp=xmp)
    elif fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Description", words)
        info.add_text("Software", software)
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        img.save(buf, "PNG", pnginfo=info, compress_level=6)
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose from {sorted(FORMATS)}")
    return buf.getvalue()


def read_label(data: bytes) -> str | None:
    """The Koala label of an encoded output, from EXIF, PNG text or TIFF tags (None if absent)."""
    img = Image.open(io.BytesIO(data))
    if img.format == "PNG":
        return img.text.get("Description")
    return img.getexif().get(_EXIF_DESCRIPTION)
