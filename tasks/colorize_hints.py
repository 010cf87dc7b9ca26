"""The colour hints of a colorize run's inputs, found, read and checked before any work.

Where they come from (:mod:`koala.hints` has the formats):
* ``--hints`` a CSV file: the collection's hints, one row per hint, by the scan's path;
* ``--hints`` a folder or ``s3://`` prefix: ``<name>.hints.json`` sidecars at the scans' paths
  relative to the collection;
* otherwise sidecars beside the scans, in a folder or prefix source, and those the review page
  (``koala review``) wrote under ``OUT/hints/`` (which win).
A hint off its scan is refused here for inputs whose header can be read cheaply (files and
object stores); an HTTP input's is checked when it is read (a failed row).
"""

from __future__ import annotations

import logging
import posixpath

from PIL import Image

from koala import storage
from koala.choices import SIDECAR_SUFFIX
from koala.errors import KoalaError
from koala.hints import (
    Hint,
    check_on_scan,
    parse_csv,
    parse_sidecar,
)
from koala.sources import InputRef
from koala.uris import FETCHABLE_SCHEMES, scheme, split_member_uri

log = logging.getLogger(__name__)
_SWAPS_SIDES = {5, 6, 7, 8}  #: EXIF orientations that turn the picture a quarter


def sidecars_under(root: str) -> dict[str, str]:
    """``<path>.hints.json`` files below ``root``: the scan's path (no extension) -> file."""
    fs, path = storage.get_fs(root)
    if not fs.isdir(path):
        return {}
    base = path.rstrip("/")
    found = {}
    for f in fs.find(base):
        if f.endswith(SIDECAR_SUFFIX):
            rel = f[len(base) :].lstrip("/")[: -len(SIDECAR_SUFFIX)]
            found[rel] = f if storage.is_local(root) else fs.unstrip_protocol(f)
    return found


def hints_folder(output: str) -> str:
    """Where the review page (``koala review``) writes hints: ``OUT/hints/``, inside the
    output, so that the archive's own folders are never written to."""
    return storage.join(output, "hints")


def read_hint_files(
    refs: list[InputRef],
    names: dict[str, str],
    source: str | None,
    location: str | None,
    output: str | None = None,
) -> dict[str, tuple[list[Hint], str]]:
    """key -> (hints, the file they came from) for each input that has hints; ``names`` gives
    each input's path in the collection without its extension (key -> name). ``location`` (a
    CSV, a folder or a prefix) is the only place looked at when given; otherwise sidecars
    beside the scans, and those the review page wrote under ``output`` (which win)."""
    parsed: dict[str, tuple[list[Hint], str]] = {}
    if location and location.lower().endswith(".csv"):
        if not storage.exists(location):
            raise KoalaError(f"--hints {location!r}: no such file")
        table = parse_csv(storage.read_bytes(location), location)
        parsed = {posixpath.splitext(k)[0]: (v, location) for k, v in table.items()}
        files = dict.fromkeys(parsed, location)
    elif location:
        if not storage.exists(location):
            raise KoalaError(f"--hints {location!r}: no such folder or prefix")
        files = sidecars_under(location)
    else:
        files = sidecars_under(source) if source and _is_tree(source) else {}
        files |= sidecars_under(hints_folder(output)) if output else {}
    matched = {r.key: n for r in refs if (n := names[r.key]) in files}
    if unused := len(files) - len(set(matched.values())):
        log.warning("%d hints file(s) or CSV image(s) match no input of this run", unused)
    found = {}
    for ref in refs:
        if (name := matched.get(ref.key)) is None:
            continue
        found[ref.key] = parsed.get(name) or _parsed(files[name])
        if (size := scan_size(ref.uri)) is not None:
            check_on_scan(found[ref.key][0], *size, found[ref.key][1])
    return found


def _parsed(uri: str) -> tuple[list[Hint], str]:
    """One sidecar's hints (only the files that match an input are read)."""
    return parse_sidecar(storage.read_bytes(uri), uri), uri


def _is_tree(source: str) -> bool:
    if scheme(source) in FETCHABLE_SCHEMES or split_member_uri(source):
        return False
    fs, path = storage.get_fs(source)
    return fs.isdir(path)


def scan_size(uri: str) -> tuple[int, int] | None:
    """An input's upright width and height from its header (EXIF orientation applied), or
    None where that needs a download or the header is unreadable (checked when read)."""
    if scheme(uri) in FETCHABLE_SCHEMES or split_member_uri(uri):
        return None
    try:
        fs, path = storage.get_fs(uri)
        with fs.open(path, "rb") as f, Image.open(f) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112, 1) in _SWAPS_SIDES
    except Exception:
        return None
    return (h, w) if turned else (w, h)
