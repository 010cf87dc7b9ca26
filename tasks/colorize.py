"""Colorize one batch of archive inputs: read, test for colour, predict a*b* in batches on the
model's working size, merge with each scan's own full-resolution L*, write labelled outputs and
one index part file for the batch.

The index is a Parquet dataset, ``DST/index/part-*.parquet``, one row per input and model
version (:data:`INDEX_COLUMNS`). A part is written last, after the batch's outputs, so a crash
loses at most the batch in flight; the flow skips inputs that have a row for the same model
version, so a rerun never duplicates one.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from PIL import Image

from koala import storage
from koala.errors import KoalaError, one_line
from koala.settings import get_settings
from models.calibration import predict_ab
from models.registry import find_card, load_model
from models.runtime import inference_mode, resolve_device, set_torch_threads
from tasks.colour import colorize_lightness, working_views
from tasks.fetch import fetch, make_client
from tasks.images import DEFAULT_LIMITS, ImageLimits, Rejected
from tasks.outputs import FORMATS, encode_output
from tasks.preprocess import cached_backbone
from tasks.scans import HasColour, Scan, read_scan
from tasks.sources import InputRef, enumerate_inputs

INDEX_COLUMNS = [
    "input_uri",
    "input_sha256",
    "output_uri",
    "status",
    "reason",
    "width",
    "height",
    "input_mode",
    "bit_depth",
    "model",
    "model_version",
    "weights_sha256",
    "seconds",
    "note",
    "key",
    "ordinal",
]
INDEX_DTYPES = {
    c: "Int64" if c in ("width", "height", "bit_depth") else "object" for c in INDEX_COLUMNS
} | {"seconds": "float64", "ordinal": "int64"}
INDEX_SCHEMA = pa.schema(
    [
        (
            c,
            pa.int64()
            if t in ("Int64", "int64")
            else pa.float64()
            if t == "float64"
            else pa.string(),
        )
        for c, t in INDEX_DTYPES.items()
    ]
)
#: thumbnails for the contact sheet are kept for the first inputs of the collection
SHEET_INPUTS = 24
THUMB = 320


@dataclass(frozen=True)
class ColorizeConfig:
    """What a colorize run does to each input (the same for every batch)."""

    registry: str
    model: str
    output: str
    format: str = "jpg"
    recolor: bool = False
    #: images per model forward
    batch_size: int = 8
    #: decoded megapixels held at once by a batch before it runs the model
    max_batch_megapixels: float = 64.0
    device: str | None = None
    #: inference precision: auto (float16 on CUDA, bfloat16 on CPUs that have it), fp32, bf16
    precision: str = "auto"
    limits: ImageLimits = DEFAULT_LIMITS


@lru_cache(maxsize=2)
def cached_colorizer(
    registry: str, spec: str, device: str
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """The colorization model, its embedding backbone and its card, loaded once per worker
    process, both channels-last (faster convolutions on CPU and GPU)."""
    model, card = load_model(registry, spec)
    backbone = cached_backbone(card.get("backbone", "efficientnet-lite0"), None, device)
    channels_last = torch.channels_last
    return (
        model.to(device).to(memory_format=channels_last).eval(),
        backbone.to(memory_format=channels_last),
        card,
    )


def index_dir(output: str) -> str:
    return storage.join(output, "index")


def output_uri(cfg: ColorizeConfig, name: str) -> str:
    """Where the colorized image of an input named ``name`` (relative, no suffix) goes."""
    return storage.join(cfg.output, "images", name + FORMATS[cfg.format])


def part_uri(output: str, version: str, refs: list[InputRef]) -> str:
    """The index part of a batch: named by the model version and the batch's inputs."""
    h = hashlib.sha256(version.encode())
    for ref in refs:
        h.update(ref.key.encode())
    return storage.join(
        index_dir(output), f"part-{refs[0].ordinal:08d}-{h.hexdigest()[:12]}.parquet"
    )


def relative_name(ref: InputRef) -> str:
    """An input's path inside its collection, without suffix: the member of an archive, the
    path below a folder or prefix, or host/path of a URL."""
    uri, proto = ref.uri, ref.uri.split("://", 1)[0] if "://" in ref.uri else "file"
    if proto in ("tar", "zip") and "::" in uri:
        rel = uri.split("://", 1)[1].split("::", 1)[0]
    elif proto in ("http", "https"):
        parts = urlsplit(uri)
        rel = parts.netloc + parts.path
    else:
        root = ref.source.rstrip("/")
        root = os.path.abspath(storage.local_path(root)) if storage.is_local(root) else root
        rel = uri[len(root) + 1 :] if uri.startswith(root + "/") else posixpath.basename(uri)
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return posixpath.splitext("/".join(parts) or ref.key)[0]


def output_names(refs: list[InputRef]) -> dict[str, str]:
    """key -> output name; inputs whose names collide (``a.png`` and ``a.tif``) get their key
    appended, so no output overwrites another."""
    names = {ref.key: relative_name(ref) for ref in refs}
    seen = Counter(names.values())
    return {k: f"{n}-{k[:8]}" if seen[n] > 1 else n for k, n in names.items()}


def _thumb(img: Image.Image | np.ndarray) -> bytes:
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


def thumb_uris(output: str, key: str) -> tuple[str, str]:
    """(before, after) thumbnail URIs of an input, for the contact sheet."""
    base = storage.join(output, "contact", key)
    return f"{base}-before.jpg", f"{base}-after.jpg"


def _predict(
    model: torch.nn.Module, backbone, scans: list[Scan], device: torch.device, precision: str
) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """a*b* (2, S, S) on the padded working view of each scan, and the box of the image."""
    views = [working_views(s.view) for s in scans]
    light = torch.from_numpy(np.stack([v["l"] for v in views])[:, None].astype(np.float32) / 255)
    channels_last = torch.channels_last
    with inference_mode(device, precision):
        embedding = None
        if getattr(model, "uses_embedding", True):
            gray = torch.from_numpy(np.stack([v["gray299"] for v in views])[:, None])
            embedding, _ = backbone(gray.to(device).contiguous(memory_format=channels_last))
        light = light.to(device).contiguous(memory_format=channels_last)
        ab = predict_ab(model, light, embedding).float().cpu().numpy()
    return [(ab[i], v["box200"]) for i, v in enumerate(views)]


def colorize_batch(refs: list[InputRef], names: dict[str, str], cfg: ColorizeConfig) -> dict:
    """Colorize ``refs`` (``names``: key -> relative output name); write outputs, thumbnails for
    the contact sheet and the batch's index part. Bad inputs become ``failed`` rows."""
    set_torch_threads()
    device = resolve_device(cfg.device)
    model, backbone, card = cached_colorizer(cfg.registry, cfg.model, str(device))
    version = card["version"]
    part = part_uri(cfg.output, version, refs)
    if storage.exists(part):
        return {"part": part, "rows": len(refs), "skipped": True, "counts": {}}
    s = get_settings()
    max_bytes = int(s.max_input_mb * 1024 * 1024)
    rows: list[dict] = []
    pending: list[tuple[dict, Scan, float]] = []

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        try:
            predictions = _predict(
                model, backbone, [scan for _, scan, _ in pending], device, cfg.precision
            )
        except Exception as exc:  # a model failure fails these rows, not the run
            for row, _, spent in pending:
                row.update(status="failed", reason=f"model_error: {one_line(exc)}", seconds=spent)
            pending.clear()
            return
        share = (time.perf_counter() - t0) / len(pending)
        for (row, scan, spent), (ab, box) in zip(pending, predictions, strict=True):
            t1 = time.perf_counter()
            try:
                _write_output(row, scan, ab, box, cfg, card)
            except Exception as exc:
                row.update(status="failed", reason=f"write_failed: {one_line(exc)}")
            row["seconds"] = spent + share + time.perf_counter() - t1
        pending.clear()

    with make_client() as client:
        held = 0.0
        for ref in refs:
            t0 = time.perf_counter()
            row = {
                "input_uri": ref.uri,
                "key": ref.key,
                "ordinal": ref.ordinal,
                "model": card["name"],
                "model_version": version,
                "weights_sha256": card["weights_sha256"],
                "output_uri": None,
                "reason": None,
                "note": None,
                "_name": names[ref.key],
            }
            rows.append(row)
            try:
                data = fetch(ref.uri, client, max_bytes, s.http_retries)
                row["input_sha256"] = hashlib.sha256(data).hexdigest()
                scan = read_scan(data, cfg.recolor, cfg.limits)
                del data
            except Rejected as rej:
                row.update(status="failed", reason=f"{rej.reason}: {rej.detail}")
            except HasColour as col:
                row.update(
                    status="skipped_color",
                    reason=f"has colour: {col}",
                    width=col.width,
                    height=col.height,
                    input_mode=col.mode,
                    bit_depth=8,
                )
            except Exception as exc:  # never let one input crash the batch
                row.update(status="failed", reason=f"error: {one_line(exc)}")
            else:
                row.update(
                    width=scan.width,
                    height=scan.height,
                    input_mode=scan.input_mode,
                    bit_depth=scan.bit_depth,
                    note=scan.note or None,
                )
                pending.append((row, scan, time.perf_counter() - t0))
                held += scan.width * scan.height / 1e6
                if len(pending) >= cfg.batch_size or held >= cfg.max_batch_megapixels:
                    flush()
                    held = 0.0
                continue
            row["seconds"] = time.perf_counter() - t0
        flush()
    frame = pd.DataFrame(rows).drop(columns="_name").reindex(columns=INDEX_COLUMNS)
    storage.write_parquet(part, frame.astype(INDEX_DTYPES), INDEX_SCHEMA)
    counts = frame["status"].value_counts().to_dict()
    return {"part": part, "rows": len(frame), "skipped": False, "counts": counts}


def colorize_blocks(
    blocks: list[list[InputRef]], names: dict[str, str], cfg: ColorizeConfig
) -> dict:
    """:func:`colorize_batch` on consecutive batches in one task (fewer, longer tasks cost
    less orchestration); each batch still writes its own index part."""
    out = {"rows": 0, "skipped": True, "counts": Counter()}
    for refs in blocks:
        result = colorize_batch(refs, {r.key: names[r.key] for r in refs}, cfg)
        out["rows"] += result["rows"]
        out["skipped"] &= result["skipped"]
        out["counts"].update(result["counts"])
    return out | {"counts": dict(out["counts"])}


def group_batches(batches: list[list[InputRef]], most: int = 4, tasks: int = 8) -> list:
    """Consecutive batches grouped into tasks of up to ``most``, but at least ``tasks`` tasks
    when there are that many batches, so every worker gets work."""
    size = max(1, min(most, len(batches) // tasks))
    return [batches[i : i + size] for i in range(0, len(batches), size)]


def _write_output(
    row: dict, scan: Scan, ab: np.ndarray, box: tuple[int, int, int, int], cfg, card: dict
) -> None:
    """Merge, encode and atomically write one output (and its thumbnails when sampled)."""
    depth = np.uint16 if cfg.format == "tiff" and scan.bit_depth == 16 else np.uint8
    rgb = colorize_lightness(scan.lightness, ab, box, depth)
    data = encode_output(rgb, cfg.format, card["name"], card["version"], row["input_sha256"])
    uri = output_uri(cfg, row["_name"])
    storage.atomic_write_bytes(uri, data)
    if row["ordinal"] < SHEET_INPUTS:
        before, after = thumb_uris(cfg.output, row["key"])
        storage.atomic_write_bytes(before, _thumb(scan.view))
        storage.atomic_write_bytes(after, _thumb(rgb))
    row.update(status="ok", output_uri=uri)


def read_index(output: str) -> pd.DataFrame:
    """All rows written so far (empty with :data:`INDEX_COLUMNS` when none)."""
    parts = (
        storage.list_files(index_dir(output), "*.parquet")
        if storage.exists(index_dir(output))
        else []
    )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDEX_DTYPES.items()})
    return storage.read_parquet(index_dir(output))


def prepare_run(
    source: str, cfg: ColorizeConfig
) -> tuple[list[InputRef], dict[str, str], dict, pd.DataFrame]:
    """Check everything before any work and fail with one line naming the problem: the format,
    the model (known, loadable), the output (writable) and the input (exists, not empty).
    Returns every input, their output names, the model's card and the rows already written
    for this model version."""
    if cfg.format not in FORMATS:
        raise KoalaError(f"unknown format {cfg.format!r}; choose from {sorted(FORMATS)}")
    card = find_card(cfg.registry, cfg.model)
    storage.check_writable(cfg.output)
    storage.remove_stale_temporaries(cfg.output)
    refs = enumerate_inputs([source], storage.join(cfg.output, "_staging"))
    index = read_index(cfg.output)
    mine = index[(index["model"] == card["name"]) & (index["model_version"] == card["version"])]
    return refs, output_names(refs), card, mine


def batches(refs: list[InputRef], size: int, done: set[str]) -> list[list[InputRef]]:
    """Fixed blocks of ``size`` inputs in collection order, less the inputs already done.

    Blocks do not depend on what is done, so a batch redone after a crash has the same part
    name as the one a lingering worker of the killed run may still write: one replaces the
    other and no row is duplicated."""
    blocks = [refs[i : i + size] for i in range(0, len(refs), size)]
    return [todo for b in blocks if (todo := [r for r in b if r.uri not in done])]
