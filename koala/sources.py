"""Turn the user's ``--source`` arguments into an ordered list of inputs, before any work.

A source is one of:

* a local folder or an fsspec prefix (``s3://bucket/prefix/``): every file below it, recursively;
* a URL list: ``.txt`` (one URI a line) or ``.csv``/``.parquet`` with a ``url`` column and an
  optional ``caption`` column; entries are ``http(s)://`` URLs or fsspec URIs;
* an archive: ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip``, local, on S3 or over HTTP(S);
* a preset: ``imagenet:PATH[?per_class=N&classes=FILE]`` (an ILSVRC ``train`` folder of
  per-class folders or per-class tars) or ``flickr8k:PATH`` / ``flickr30k:PATH`` (a folder or
  archive holding ``Images/`` and a captions file).

Every input gets a stable key derived from its URI, so reruns and resumed runs agree.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import posixpath
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qs

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from koala import storage
from koala.choices import IMAGE_EXTENSIONS, SIDECAR_SUFFIX
from koala.errors import one_line
from koala.uris import FETCHABLE_SCHEMES, SourceError, archive_fs, scheme, split_member_uri

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
LIST_SUFFIXES = (".txt", ".csv", ".parquet")
PRESETS = ("imagenet", "flickr8k", "flickr30k")
#: a file that every Koala run writes at the root of its output folder; listing a folder never
#: descends into a directory that holds it, so Koala's own outputs are never read as input
OUTPUT_MARKER = ".koala-output"


@dataclass(frozen=True, slots=True)
class InputRef:
    """One input to ingest: where to read it and what we know about it beforehand."""

    key: str
    ordinal: int
    uri: str
    source: str
    caption: str | None = None
    captions: tuple[str, ...] = ()
    label: str | None = None
    #: what the listing says about the input's version (size and mtime, or an ETag); an input
    #: whose stamp changed since its index row is read again (None: unknown, e.g. URL lists)
    stamp: str | None = None

    def to_dict(self) -> dict:
        """Plain-data form (lists, not tuples) for JSON and Parquet."""
        d = asdict(self)
        d["captions"] = list(self.captions)
        return d


def check_scheme(uri: str, what: str) -> None:
    """Raise :class:`SourceError` unless fsspec can open ``uri``'s scheme here."""
    s = scheme(uri)
    if s in FETCHABLE_SCHEMES or s == "file":
        return
    try:
        fsspec.get_filesystem_class(s)
    except (ValueError, ImportError) as exc:
        raise SourceError(
            f"{what} {uri!r}: unsupported URL scheme {s!r} ({one_line(exc)})"
        ) from None


def has_image_suffix(path: str) -> bool:
    """Whether ``path`` (for an archive member URI, the member) has an image extension."""
    parts = split_member_uri(path)
    name = parts[1] if parts else path
    return posixpath.splitext(name.lower())[1] in IMAGE_EXTENSIONS


def _is_hidden(path: str) -> bool:
    """A dot-file or a file in a dot-folder (``.`` and ``..`` are path steps, not hidden)."""
    return any(p.startswith(".") and p not in (".", "..") for p in path.split("/") if p)


def _entries(uri: str, source: str, **extra) -> dict:
    return {"uri": uri, "source": source, **extra}


def _fs_of(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of ``url``; a local path is taken as it is (a name holding
    ``::`` is a file name, not a chained URL)."""
    if storage.is_local(url):
        return LocalFileSystem(), os.path.abspath(storage.local_path(url))
    return storage.get_fs(url)


def _stamp(info: dict) -> str | None:
    """``size:version`` of a listed file (the ETag on object stores, else the mtime)."""
    if "date_time" in info:  # a zip member: its timestamp and CRC
        version = "-".join(str(v) for v in info["date_time"]) + f":{info.get('CRC', 0):08x}"
    else:
        keys = ("ETag", "etag", "mtime", "LastModified")
        version = next((info[k] for k in keys if info.get(k) is not None), None)
    if info.get("size") is None and version is None:
        return None
    return f"{info.get('size')}:{str(version).strip(chr(34))}"


def _under(path: str, folders: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in folders)


def _list_tree(url: str, source: str) -> list[dict]:
    """All non-hidden files below a local folder or an fsspec prefix, skipping every folder that
    holds a Koala output (:data:`OUTPUT_MARKER`)."""
    fs, root = _fs_of(url)
    found = fs.find(root, detail=True)
    root_clean = root.rstrip("/")
    outputs = [posixpath.dirname(f) for f in found if posixpath.basename(f) == OUTPUT_MARKER]
    if root_clean in outputs:
        raise SourceError(
            f"source {source!r}: {url} is the output of an earlier Koala run "
            f"(it holds {OUTPUT_MARKER}); give that run's input instead"
        )
    out = []
    for f in sorted(found):
        rel = f[len(root_clean) :].lstrip("/") if f.startswith(root_clean) else f
        if _is_hidden(rel) or _under(f, outputs) or f.endswith(SIDECAR_SUFFIX):
            continue  # a colour hints sidecar (koala.hints) belongs to its scan: not an input
        uri = f if storage.is_local(url) else fs.unstrip_protocol(f)
        out.append(_entries(uri, source, stamp=_stamp(found[f])))
    if not any(has_image_suffix(e["uri"]) for e in out):
        raise SourceError(f"source {source!r}: no images found under {url}")
    return out


def _list_archive(url: str, source: str, subdir: str = "") -> list[dict]:
    """Members of a tar or zip archive (below ``subdir``), as chained fsspec URIs."""
    fs, protocol = archive_fs(url)
    found = fs.find(subdir, detail=True)
    members = sorted(m for m in found if not _is_hidden(m))
    out = [_entries(f"{protocol}://{m}::{url}", source, stamp=_stamp(found[m])) for m in members]
    if not any(has_image_suffix(e["uri"]) for e in out):
        raise SourceError(f"source {source!r}: no images found in archive {url}")
    return out


def _read_url_list(url: str, source: str) -> list[dict]:
    """Entries of a ``.txt``, ``.csv`` or ``.parquet`` URL list."""
    lower = url.lower()
    if lower.endswith(".txt"):
        text = _read_bytes(url).decode("utf-8-sig")
        rows = [{"url": line.strip()} for line in text.splitlines()]
        rows = [r for r in rows if r["url"] and not r["url"].startswith("#")]
    else:
        if lower.endswith(".csv"):
            frame = pd.read_csv(io.BytesIO(_read_bytes(url)), dtype=str)
        else:
            frame = pd.read_parquet(io.BytesIO(_read_bytes(url)))
        if "url" not in frame.columns:
            raise SourceError(
                f"URL list {url!r} has no 'url' column (columns: {list(frame.columns)})"
            )
        keep = [c for c in ("url", "caption") if c in frame.columns]
        rows = frame[keep].to_dict("records")
    out = []
    for row in rows:
        u = row["url"]
        if u is None or (isinstance(u, float) and pd.isna(u)):
            continue  # an empty cell (null), like a blank line in a .txt list
        u = (u.decode("utf-8", "replace") if isinstance(u, bytes) else str(u)).strip()
        if not u:
            continue
        cap = row.get("caption")
        cap = None if cap is None or (isinstance(cap, float) and pd.isna(cap)) else str(cap)
        out.append(_entries(u, source, caption=cap, captions=(cap,) if cap else ()))
    if not out:
        raise SourceError(f"source {source!r}: no images found in URL list {url}")
    return out


def _imagenet(path: str, source: str, per_class: int | None, classes: str | None) -> list[dict]:
    """ILSVRC train layout: ``PATH/<wnid>/*.JPEG`` folders or ``PATH/<wnid>.tar`` per-class tars."""
    fs, root = _fs_of(path)
    if not fs.isdir(root):
        raise SourceError(f"source {source!r}: {path} is not an ImageNet train folder")
    wanted = None
    if classes:
        lines = _read_bytes(classes).decode().split("\n")
        wanted = [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]
    entries = {posixpath.basename(p.rstrip("/")): p for p in fs.ls(root, detail=False)}
    wnids = (
        wanted
        if wanted is not None
        else sorted(
            n[: -len(".tar")] if n.endswith(".tar") else n
            for n in entries
            if n.startswith("n") and (n.endswith(".tar") or fs.isdir(entries[n]))
        )
    )
    out: list[dict] = []
    for wnid in wnids:
        base = storage.join(path, wnid)
        if f"{wnid}.tar" in entries:
            members = _list_archive(storage.join(path, f"{wnid}.tar"), source)
        elif wnid in entries:
            members = _list_tree(base, source)
        else:
            raise SourceError(f"source {source!r}: class {wnid} not found under {path}")
        images = [m for m in members if has_image_suffix(m["uri"])]
        for m in images[:per_class] if per_class else images:
            out.append({**m, "label": wnid})
    if not out:
        raise SourceError(f"source {source!r}: no images found under {path}")
    return out


def _parse_captions(text: str) -> dict[str, list[str]]:
    """Captions from Flickr's formats: ``image,caption`` CSV, ``image| n| caption``, or
    ``image.jpg#n<TAB>caption`` (Flickr8k.token.txt)."""
    caps: dict[str, list[str]] = {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and "\t" in lines[0]:
        for ln in lines:
            name, _, cap = ln.partition("\t")
            caps.setdefault(name.split("#")[0].strip(), []).append(cap.strip())
        return caps
    delimiter = "|" if "|" in lines[0] else ","
    reader = csv.reader(lines[1:], delimiter=delimiter)
    for row in reader:
        if len(row) >= 2:
            caps.setdefault(row[0].strip(), []).append(row[-1].strip())
    return caps


CAPTION_FILES = ("captions.txt", "results.csv", "Flickr8k.token.txt", "results_20130124.token")


def _flickr(path: str, source: str) -> list[dict]:
    """Flickr8k/30k: a folder or archive with ``Images/`` (any case) and a captions file."""
    is_archive = path.lower().endswith(ARCHIVE_SUFFIXES)
    if is_archive:
        fs, protocol = archive_fs(path)
        root = ""
        uri_of = lambda p: f"{protocol}://{p}::{path}"  # noqa: E731
    else:
        fs, root = _fs_of(path)
        uri_of = (lambda p: p) if storage.is_local(path) else fs.unstrip_protocol
    found = fs.find(root, detail=True)
    files = sorted(found)
    image_files = [f for f in files if has_image_suffix(f) and not _is_hidden(f)]
    cap_files = [f for f in files if posixpath.basename(f) in CAPTION_FILES]
    if not image_files:
        raise SourceError(f"source {source!r}: no images found under {path}")
    if not cap_files:
        raise SourceError(
            f"source {source!r}: no captions file ({', '.join(CAPTION_FILES)}) under {path}"
        )
    with fs.open(cap_files[0], "rb") as f:
        caps = _parse_captions(f.read().decode("utf-8-sig"))
    out = []
    for f in image_files:
        c = caps.get(posixpath.basename(f), [])
        cap = c[0] if c else None
        stamp = _stamp(found[f])
        out.append(_entries(uri_of(f), source, caption=cap, captions=tuple(c), stamp=stamp))
    return out


def _download_remote_archive(url: str, staging: str) -> str:
    """Copy an HTTP(S) archive into the staging area once, so members can be read at random."""
    from koala.fetch import download_to  # local import: fetch depends on httpx

    name = hashlib.sha256(url.encode()).hexdigest()[:16] + "-" + posixpath.basename(url)
    target = storage.join(staging, "downloads", name)
    if not storage.exists(target):
        try:
            download_to(url, target)
        except Exception as exc:
            raise SourceError(
                f"source {url!r}: cannot download the archive ({one_line(exc)})"
            ) from None
    return target


def expand_source(spec: str, staging: str) -> list[dict]:
    """Entries (uri, source, caption...) of one ``--source`` argument, in a stable order."""
    spec = spec.strip()
    head, sep, rest = spec.partition(":")
    if sep and head.lower() in PRESETS and not rest.startswith("//"):
        path, _, query = rest.partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        _require(path, spec)
        if head.lower() == "imagenet":
            per_class = int(params["per_class"]) if "per_class" in params else None
            return _imagenet(path, spec, per_class, params.get("classes"))
        return _flickr(path, spec)
    check_scheme(spec, "source")
    lower = spec.lower().rstrip("/")
    if lower.endswith(ARCHIVE_SUFFIXES):
        if scheme(spec) in FETCHABLE_SCHEMES:
            return _list_archive(_download_remote_archive(spec, staging), spec)
        _require(spec, spec)
        return _list_archive(spec, spec)
    if lower.endswith(LIST_SUFFIXES):
        _require(spec, spec)
        return _read_url_list(spec, spec)
    if scheme(spec) in FETCHABLE_SCHEMES:
        return [_entries(spec, spec)]
    _require(spec, spec)
    fs, path = _fs_of(spec)
    if fs.isdir(path):
        return _list_tree(spec, spec)
    uri = path if storage.is_local(spec) else spec
    _check_image_file(fs, path, spec)
    return [_entries(uri, spec, stamp=_stamp(fs.info(path)))]


def _check_image_file(fs, path: str, spec: str) -> None:
    """A single file given as the source must be an image Koala reads (by its signature):
    anything else is refused now, in one line, before any work."""
    from koala.images import SUPPORTED_FORMATS, image_signature

    try:
        with fs.open(path, "rb") as f:
            head = f.read(64)
    except Exception as exc:
        raise SourceError(f"source {spec!r}: cannot read it ({one_line(exc)})") from None
    if not head:
        raise SourceError(f"source {spec!r} is an empty file")
    if image_signature(head) is None:
        kinds = ", ".join(sorted(SUPPORTED_FORMATS))
        raise SourceError(
            f"source {spec!r} is not an image Koala reads ({kinds}), a folder, an archive "
            f"({', '.join(ARCHIVE_SUFFIXES)}) or a list of URIs ({', '.join(LIST_SUFFIXES)})"
        )


def _read_bytes(url: str) -> bytes:
    """The content of a list or captions file (a local one by its plain path)."""
    if storage.is_local(url):
        return Path(storage.local_path(url)).read_bytes()
    return storage.read_bytes(url)


def _require(url: str, source: str) -> None:
    try:
        local = storage.is_local(url)
        ok = os.path.exists(storage.local_path(url)) if local else storage.exists(url)
    except Exception as exc:
        raise SourceError(f"source {source!r}: cannot read {url} ({one_line(exc)})") from None
    if not ok:
        raise SourceError(f"source {source!r}: {url} does not exist")


def _location(url: str) -> tuple[str, tuple[str, ...]] | None:
    """Where ``url`` lies, as (filesystem, path components), to compare folders component-wise:
    local paths absolute with symlinks resolved, ``s3a://`` as ``s3://``; None for HTTP(S)."""
    if not storage.is_local(url) and "::" in url:
        url = url.rsplit("::", 1)[1]  # a chained URL lies where its last part does
    s = scheme(url)
    if s in FETCHABLE_SCHEMES:
        return None
    if storage.is_local(url):
        return "file", Path(os.path.expanduser(storage.local_path(url))).resolve().parts
    norm = posixpath.normpath("/" + url.split("://", 1)[1])
    return ("s3" if s == "s3a" else s), tuple(p for p in norm.split("/") if p)


def _source_path(spec: str) -> str:
    """The path a ``--source`` reads: a preset's PATH, else the source itself."""
    head, sep, rest = spec.strip().partition(":")
    if sep and head.lower() in PRESETS and not rest.startswith("//"):
        return rest.partition("?")[0]
    return spec.strip()


def check_output_apart(sources: list[str], output: str) -> None:
    """Raise :class:`SourceError` when ``output`` is, contains or lies inside an input path
    (a folder, prefix, archive or list file; a URL list's entries are not checked)."""
    out = _location(output)
    if out is None:
        return
    for spec in sources:
        src = _location(_source_path(spec))
        if src is None or src[0] != out[0]:
            continue
        o, i = out[1], src[1]
        if o == i:
            problem = "is the input"
        elif i[: len(o)] == o:
            problem = "contains the input"
        elif o[: len(i)] == i:
            problem = "lies inside the input"
        else:
            continue
        raise SourceError(
            f"output {output!r} {problem} {spec!r}: a run would read its own results; "
            "choose an output folder apart from every input"
        )


def mark_output(output: str, kind: str) -> None:
    """Write :data:`OUTPUT_MARKER` at the root of ``output`` (once), so that no Koala run
    lists that folder as input; ``kind`` names the flow that wrote it."""
    marker = storage.join(output, OUTPUT_MARKER)
    if not storage.exists(marker):
        storage.atomic_write_bytes(marker, json.dumps({"written_by": f"koala {kind}"}).encode())


def check_listed_inputs_apart(refs: list[InputRef], output: str) -> None:
    """Raise :class:`SourceError` when a URL list names an input inside ``output`` (its result
    could land on it). Inputs of folders, prefixes and archives lie in their source, which
    :func:`check_output_apart` has already kept apart from the output."""
    out = _location(output)
    if out is None:
        return
    for ref in refs:
        if not ref.source.lower().endswith(LIST_SUFFIXES):
            continue
        where = _location(ref.uri)
        if where is not None and where[0] == out[0] and where[1][: len(out[1])] == out[1]:
            raise SourceError(
                f"input {ref.uri!r} (listed in {ref.source!r}) lies inside the output "
                f"{output!r}: refused, its result could overwrite it"
            )


def uri_key(uri: str) -> str:
    """The stable WebDataset key of an input URI (16 hex digits, no dots)."""
    return hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]


def enumerate_inputs(sources: list[str], staging: str) -> list[InputRef]:
    """All inputs of all sources, in order, each with a unique stable key.

    An input listed twice keeps its URI key the first time and gets ``-2``, ``-3``... after;
    the later copies are then rejected as duplicates of the first.
    """
    if not sources:
        raise SourceError("no --source given")
    seen: Counter[str] = Counter()
    refs: list[InputRef] = []
    for spec in sources:
        for e in expand_source(spec, staging):
            key = uri_key(e["uri"])
            seen[key] += 1
            if seen[key] > 1:
                key = f"{key}-{seen[key]}"
            refs.append(InputRef(key=key, ordinal=len(refs), **e))
    return refs
