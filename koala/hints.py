"""Colour hints: the colours an archivist knows, pinned to points or boxes of a scan.

A sidecar per scan, ``<name>.hints.json`` (``name`` is the scan's file name without its
extension), beside the scan or under a hints folder (local or ``s3://``) at the scan's path
relative to the collection; or one CSV per collection. The JSON interchange form::

    {"hints": [{"x": 120, "y": 80, "colour": "#3a5f2b"},
               {"box": [10, 10, 60, 40], "colour": "navy"}]}

``x``, ``y`` and ``box`` (left, top, right, bottom; right and bottom exclusive) are in the
scan's pixels; ``colour`` is sRGB hex (``#rgb`` or ``#rrggbb``) or a CSS colour name. Other
fields are kept as they are and ignored. The CSV has the columns ``image`` (the scan's path
relative to the collection), ``colour``, and either ``x``, ``y`` or ``left``, ``top``,
``right``, ``bottom`` on each row.

Every problem is a :class:`HintError` of one line naming the file and the hint.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from dataclasses import dataclass

import numpy as np
from PIL import ImageColor

from koala.choices import SIDECAR_SUFFIX
from koala.colour import rgb_to_lab
from koala.errors import KoalaError

CSV_POINT = ("x", "y")
CSV_BOX = ("left", "top", "right", "bottom")


class HintError(KoalaError):
    """A hints file that cannot be used: malformed, an unknown colour, a hint off the scan."""


@dataclass(frozen=True)
class Hint:
    """One known colour: at a point (``box`` of one pixel) or over a box of the scan."""

    box: tuple[int, int, int, int]  #: left, top, right, bottom (exclusive), scan pixels
    rgb: tuple[int, int, int]  #: sRGB 0-255
    colour: str  #: as the file wrote it
    point: bool = False

    @property
    def ab(self) -> tuple[float, float]:
        """The colour's CIE a*b* (D65)."""
        lab = rgb_to_lab(np.array([[self.rgb]], dtype=np.uint8))[0, 0]
        return float(lab[1]), float(lab[2])

    def to_dict(self) -> dict:
        """The interchange form of this hint."""
        if self.point:
            return {"x": self.box[0], "y": self.box[1], "colour": self.colour}
        return {"box": list(self.box), "colour": self.colour}


def parse_colour(value: object, where: str) -> tuple[int, int, int]:
    """sRGB of ``#rgb``, ``#rrggbb`` or a CSS colour name (any case)."""
    if not isinstance(value, str) or not value.strip():
        raise HintError(f"{where}: colour must be a hex string or a colour name, not {value!r}")
    text = value.strip().lower()
    if text.startswith("#") and len(text) not in (4, 7):
        raise HintError(f"{where}: colour {value!r} is not #rgb or #rrggbb")
    if not text.startswith("#") and text not in ImageColor.colormap:
        raise HintError(f"{where}: unknown colour name {value!r}")
    try:
        r, g, b = ImageColor.getrgb(text)[:3]
    except ValueError:
        raise HintError(f"{where}: colour {value!r} is not a valid hex colour") from None
    return int(r), int(g), int(b)


def _integer(value: object, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise HintError(f"{where}: {what} must be a whole number of pixels, not {value!r}")
    return int(value)


def make_hint(item: object, where: str) -> Hint:
    """One hint of the interchange form (a point or a box, and a colour)."""
    if not isinstance(item, dict):
        raise HintError(f"{where}: a hint must be an object with a colour and x, y or box")
    rgb = parse_colour(item.get("colour", item.get("color")), where)
    colour = str(item.get("colour", item.get("color"))).strip()
    if "box" in item:
        box = item["box"]
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise HintError(f"{where}: box must be [left, top, right, bottom], not {box!r}")
        left, top, right, bottom = (_integer(v, "box", where) for v in box)
        if right <= left or bottom <= top:
            raise HintError(f"{where}: box {list(box)} is empty (right <= left or bottom <= top)")
        return Hint((left, top, right, bottom), rgb, colour)
    if "x" in item and "y" in item:
        x, y = _integer(item["x"], "x", where), _integer(item["y"], "y", where)
        return Hint((x, y, x + 1, y + 1), rgb, colour, point=True)
    raise HintError(f"{where}: a hint needs x and y, or box")


def parse_sidecar(data: bytes, name: str) -> list[Hint]:
    """The hints of one ``.hints.json`` file called ``name`` (for the error messages)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HintError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hints"), list):
        raise HintError(f'{name}: expected an object with a "hints" list')
    return [make_hint(item, f"{name}: hint {i + 1}") for i, item in enumerate(doc["hints"])]


def parse_csv(data: bytes, name: str) -> dict[str, list[Hint]]:
    """A collection's hints CSV: the hints of each scan, by its path relative to the collection."""
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HintError(f"{name}: not a readable CSV ({exc})") from None
    out: dict[str, list[Hint]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{name}: line {line}"
        image = (row.get("image") or "").strip()
        if not image:
            raise HintError(f"{where}: no image named (column 'image')")
        item: dict = {"colour": row.get("colour", row.get("color"))}
        if all((row.get(k) or "").strip() for k in CSV_BOX):
            item["box"] = [_number(row[k], k, where) for k in CSV_BOX]
        elif all((row.get(k) or "").strip() for k in CSV_POINT):
            item.update({k: _number(row[k], k, where) for k in CSV_POINT})
        out.setdefault(posixpath.normpath(image), []).append(make_hint(item, where))
    return out


def _number(text: str, what: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise HintError(f"{where}: {what} must be a number, not {text!r}") from None


def check_on_scan(hints: list[Hint], width: int, height: int, name: str) -> None:
    """Every hint lies on the ``width`` x ``height`` scan."""
    for i, h in enumerate(hints):
        left, top, right, bottom = h.box
        if left < 0 or top < 0 or right > width or bottom > height:
            what = f"point ({left}, {top})" if h.point else f"box {list(h.box)}"
            raise HintError(f"{name}: hint {i + 1}: {what} is outside the {width}x{height} image")


def digest(hints: list[Hint]) -> str:
    """sha256 of the hints as they act (geometry and colour, in any order): the index's record
    of them, so that an edited hints file redoes its scan."""
    canon = sorted([list(h.box), list(h.rgb), h.point] for h in hints)
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()


def sidecar_name(relative: str) -> str:
    """The sidecar of a scan at ``relative`` (its path in the collection): same folder, same
    name without the extension, ``.hints.json``."""
    stem, _ = posixpath.splitext(relative)
    return stem + SIDECAR_SUFFIX


def to_json(hints: list[Hint]) -> bytes:
    """The interchange form of ``hints`` (what the review page writes)."""
    return json.dumps({"hints": [h.to_dict() for h in hints]}, indent=1).encode()
