"""The review of a colorize output: its results, each one's colour hints, and saving them
where the next ``koala colorize`` run reads them (``OUT/hints/<name>.hints.json``).

The pages themselves (an offline HTML page and a small local server) are ``cli/review.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from koala import storage
from koala.errors import KoalaError
from koala.hints import Hint, check_on_scan, parse_sidecar, sidecar_name, to_json
from koala.images import pil_guards
from koala.scans import read_rgb16
from tasks.archive_index import read_index
from tasks.colorize_hints import hints_folder

#: the long side of the picture the review page shows (clicks map back to the scan's pixels)
SHOWN_SIDE = 1600


@dataclass(frozen=True)
class Result:
    """One colorized result of an output, as the review page needs it."""

    key: str
    name: str  #: the input's path in the collection without extension
    input_uri: str
    output_uri: str
    width: int
    height: int
    hints: int


def results(output: str) -> list[Result]:
    """The output's colorized results, newest per input (in collection order)."""
    if not storage.exists(storage.join(output, "index")):
        raise KoalaError(f"{output!r} holds no colorize index: run `koala colorize` first")
    index = read_index(output)
    ok = index[(index["status"] == "ok") & index["input_name"].notna()]
    ok = ok.sort_values("colorized_at").drop_duplicates("input_uri", keep="last")
    return [
        Result(
            r.key,
            r.input_name,
            r.input_uri,
            r.output_uri,
            int(r.width),
            int(r.height),
            0 if pd.isna(r.hints) else int(r.hints),
        )
        for r in ok.sort_values("ordinal").itertuples()
    ]


def hints_file(output: str, result: Result) -> str:
    """Where the review page saves a result's hints."""
    return storage.join(hints_folder(output), sidecar_name(result.name))


def current_hints(output: str, result: Result) -> list[Hint]:
    """The hints the next run would use for ``result``'s input: the review page's own file,
    else a sidecar beside the scan."""
    for uri in (hints_file(output, result), beside(result)):
        if uri and storage.exists(uri):
            return parse_sidecar(storage.read_bytes(uri), uri)
    return []


def beside(result: Result) -> str | None:
    """The sidecar beside a scan in a folder or prefix (None for URLs and archive members)."""
    if "://" in result.input_uri and not result.input_uri.startswith(("s3://", "file://")):
        return None
    if "::" in result.input_uri:
        return None
    return sidecar_name(result.input_uri)


def save_hints(output: str, result: Result, data: bytes) -> str:
    """Check the hints JSON ``data`` against ``result``'s scan and write it (atomically) where
    the next run reads it; an empty list removes the file. Returns where it went."""
    target = hints_file(output, result)
    hints = parse_sidecar(data, target)
    check_on_scan(hints, result.width, result.height, target)
    if not hints:
        storage.remove(target) if storage.exists(target) else None
        return target
    storage.atomic_write_bytes(target, to_json(hints))
    return target


def shown_jpeg(result: Result, side: int | None = None) -> bytes:
    """The result as a JPEG a browser shows (any format, 16-bit RGB too; long side at most
    ``side``, default :data:`SHOWN_SIDE`)."""
    side = min(side or SHOWN_SIDE, SHOWN_SIDE)
    pil_guards()
    data = storage.read_bytes(result.output_uri)
    with Image.open(io.BytesIO(data)) as img:
        deep = read_rgb16(data, img.format or "")
        if deep is not None:  # Pillow would clip 16-bit RGB: its top 8 bits
            shown = Image.fromarray((deep[..., :3] >> 8).astype(np.uint8))
        else:
            img.draft("RGB", (side, side))
            shown = img.convert("RGB")
    shown.thumbnail((side, side))
    buf = io.BytesIO()
    shown.save(buf, "JPEG", quality=88)
    return buf.getvalue()
