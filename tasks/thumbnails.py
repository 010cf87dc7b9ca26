"""The contact sheet's thumbnails, ``DST/contact/<key>-before.jpg`` and
``<key>-after[-saturationS].jpg``: where they go, how they are made, and which exist (one
listing, not one request per input)."""

from __future__ import annotations

import io
import posixpath

import numpy as np
import pandas as pd
from PIL import Image

from koala import storage
from tasks.colorize_plan import saturation_tag

#: longest side of a thumbnail (px)
THUMB = 320


def make_thumb(img: Image.Image | np.ndarray) -> bytes:
    """A contact-sheet JPEG; big images are reduced first, without a full-size copy."""
    if isinstance(img, np.ndarray):
        step = max(1, max(img.shape[:2]) // (2 * THUMB))
        small = img[::step, ::step]
        img = Image.fromarray(small if small.dtype == np.uint8 else (small >> 8).astype(np.uint8))
    else:
        img = img.reduce(max(1, max(img.size) // (2 * THUMB)))
    img.thumbnail((THUMB, THUMB), Image.Resampling.BOX, reducing_gap=2.0)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def thumb_uris(output: str, key: str, saturation: float = 1.0) -> tuple[str, str]:
    """(before, after) thumbnail URIs of an input, for the contact sheet; the after one of a
    saturation other than 1 has it in its name."""
    base = storage.join(output, "contact", key)
    return f"{base}-before.jpg", f"{base}-after{saturation_tag(saturation)}.jpg"


def thumb_names(keys: pd.Series, saturations: pd.Series | None) -> tuple[pd.Series, pd.Series]:
    """The (before, after) thumbnail file names of many inputs at once (as :func:`thumb_uris`
    names them; no saturation: 1)."""
    if saturations is None:
        tags = pd.Series("", index=keys.index)
    else:
        tags = saturations.fillna(1.0).astype(float).map(saturation_tag)
    return keys + "-before.jpg", keys + "-after" + tags + ".jpg"


def existing_thumbs(output: str) -> frozenset[str]:
    """The file names of the thumbnails under ``output`` (one listing of its folder)."""
    return frozenset(
        posixpath.basename(u) for u in storage.list_files(storage.join(output, "contact"), "*.jpg")
    )
