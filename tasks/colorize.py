"""Colorize one batch of archive inputs: read, test for colour, predict a*b* in batches on the
model's working size, merge with each scan's own full-resolution L*, write labelled outputs and
one index part file for the batch.

The index (:mod:`tasks.archive_index`) is a Parquet dataset, ``DST/index/part-*.parquet``, one
row per input and model version. A part is written last, after the batch's outputs, so a crash
loses at most the batch in flight; a rerun skips what is done, retries transient failures and
supersedes the row of an input that changed. A full disk or another I/O error on the output ends
the run with :class:`OutputError` (one line); its batch is redone on rerun.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import io
import logging
import posixpath
import time
from collections import Counter
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps

from koala import storage
from koala.colour import colorize_lightness, working_views
from koala.errors import KoalaError, Rejected, one_line
from koala.fetch import fetch, make_client
from koala.hint_spread import spread_hints, view_boxes
from koala.hints import HintError, check_on_scan, to_json
from koala.images import pil_guards
from koala.outputs import (
    FORMATS,
    encode_output,
    output_dtype,
    read_provenance,
    resolve_format,
)
from koala.scans import HasColour, Scan, read_scan
from koala.settings import get_settings
from koala.sources import (
    InputRef,
)
from models.backbones import cached_backbone, lean_efficientnet
from models.calibration import predict_ab, predict_with_confidence, takes_hints
from models.chroma_unet import hint_maps
from models.config import DEFAULT_BACKBONE
from models.registry import load_model
from models.runtime import (
    fold_batchnorm,
    inference_dtype,
    inference_mode,
    one_torch_thread,
    precast_for_autocast,
    resolve_device,
    set_torch_threads,
)
from tasks.archive_index import (
    INDEX_COLUMNS,
    INDEX_DTYPES,
    INDEX_SCHEMA,
    RunPlan,
    now,
)
from tasks.colorize_plan import (  # noqa: F401  (the stage's API in one place)
    check_options,
    group_batches,
    output_names,
    output_uri,
    part_uri,
    plan_batches,
    relative_name,
    resolve_registry,
    run_rows,
    run_summary,
    saturation_tag,
    status_counts,
)
from tasks.colorize_plan import prepare_run as plan_run
from tasks.config import ColorizeConfig
from tasks.thumbnails import THUMB, make_thumb, thumb_uris

__all__ = ["INDEX_COLUMNS", "ColorizeConfig", "OutputError", "colorize_batch", "prepare_run"]
#: OS errors on the output that end a run: retrying the next image cannot help
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})

log = logging.getLogger(__name__)

#: thumbnails for the contact sheet are kept for the first inputs of the collection
SHEET_INPUTS = 24
#: side of the random probes that fold the batch norms: which convolution each norm reads and
#: whether the folded copy agrees do not depend on the size; 96 px (Inception needs 75) costs
#: a quarter of the 200 px view
PROBE_SIDE = 96


#: failure reasons of inputs that decode, so the contact sheet can show them
SHOWABLE_FAILURES = frozenset({"too_small"})


class OutputError(KoalaError):
    """The output cannot be written (disk full, read-only, I/O error): the run stops."""


@lru_cache(maxsize=2)
def cached_colorizer(
    registry: str, spec: str, device: torch.device, precision: str = ColorizeConfig.precision
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """The colorization model, its embedding backbone and its card, loaded once per worker
    process and made lean for inference (:func:`streamlined`), both channels-last (faster
    convolutions on CPU and GPU), their convolution weights stored in the autocast dtype of
    ``precision`` (same outputs, 7% faster here)."""
    model, card = loaded_model(registry, spec)
    backbone = cached_backbone(card.get("backbone", DEFAULT_BACKBONE), None, device)
    with one_torch_thread():  # its probes are small
        model, backbone = streamlined(model.to(device).eval(), backbone, device)
    dtype = inference_dtype(device, precision)
    channels_last = torch.channels_last
    return (
        precast_for_autocast(model.to(memory_format=channels_last), dtype),
        precast_for_autocast(backbone.to(memory_format=channels_last), dtype),
        card,
    )


def ready_colorizer(cfg: ColorizeConfig) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """This process's colorizer for ``cfg`` (loaded on first use; the CLI calls it early for
    a run in its own process), with torch's threads set to the worker's cores."""
    set_torch_threads()
    device = resolve_device(cfg.device)  # once per task: a worker may have a GPU the flow lacks
    return cached_colorizer(cfg.registry, cfg.model, device, cfg.precision)


def streamlined(
    model: torch.nn.Module, backbone: torch.nn.Module, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Copies of the eval-mode model and backbone with every batch norm folded into the
    convolution it follows (models/runtime.py fold_batchnorm) and their EfficientNets made
    lean (models/backbones.py lean_efficientnet): outputs equal to float32 rounding (checked
    on a probe as it folds), fewer passes over memory."""
    probe = torch.Generator().manual_seed(0)
    light = torch.rand(1, 1, PROBE_SIDE, PROBE_SIDE, generator=probe).to(device)
    embedding = None
    if getattr(model, "uses_embedding", True):
        gray = torch.rand(1, 1, PROBE_SIDE, PROBE_SIDE, generator=probe).to(device)
        backbone, _ = fold_batchnorm(backbone, lambda b: b(gray)[0])
        with torch.inference_mode():
            embedding = backbone(gray)[0]
    else:
        backbone = copy.deepcopy(backbone)
    model, _ = fold_batchnorm(model, lambda m: predict_ab(m, light, embedding))
    lean_efficientnet(model)
    lean_efficientnet(backbone)
    return model, backbone


#: (registry, spec) -> the loaded network and card, also under its pinned NAME@VERSION
_LOADED: dict[tuple[str, str], tuple[torch.nn.Module, dict]] = {}


def loaded_model(registry: str, spec: str) -> tuple[torch.nn.Module, dict]:
    """:func:`models.registry.load_model`, once per process for a model version: the CLI's
    check loads it by the name the user gave, the run asks for its pinned version."""
    if (registry, spec) not in _LOADED:
        if len(_LOADED) > 8:  # a long-lived worker that saw many versions
            _LOADED.clear()
        model, card = load_model(registry, spec)
        pinned = (registry, f"{card['name']}@{card['version']}")
        _LOADED[(registry, spec)] = _LOADED[pinned] = (model, card)
    return _LOADED[(registry, spec)]


@lru_cache(maxsize=4)
def verified_card(registry: str, spec: str) -> dict:
    """The card of ``spec`` once its weights have loaded into its network (a broken entry
    fails here, in one line, not on a worker); once per process, as the CLI's preflight and
    the flow both ask."""
    return loaded_model(registry, spec)[1]


class Prediction(NamedTuple):
    """A scan's predicted a*b* (2, S, S) on its padded working view, the image's box in the
    view, the view's L* (the guide of the upsampling) and the model's confidence."""

    ab: np.ndarray
    box: tuple[int, int, int, int]
    light: np.ndarray
    confidence: float | None


def _predict(
    model: torch.nn.Module,
    backbone,
    scans: list[Scan],
    device: torch.device,
    precision: str,
    saturation: float = 1.0,
    hints: list[list] | None = None,
) -> list[Prediction]:
    """One forward for ``scans``: their a*b* times ``saturation`` (the colour strength the
    archivist asked for), boxes, view L* and confidences; each scan's colour ``hints`` go in
    too where the model takes them."""
    views = [working_views(s.view) for s in scans]
    light = torch.from_numpy(np.stack([v["l"] for v in views])[:, None].astype(np.float32) / 255)
    boxes = [v["box200"] for v in views]
    maps = None
    if hints and any(hints) and takes_hints(model):
        maps = view_hint_maps(scans, hints, boxes, light.shape[-1]).to(device)
    channels_last = torch.channels_last
    with inference_mode(device, precision):
        embedding = None
        if getattr(model, "uses_embedding", True):
            gray = torch.from_numpy(np.stack([v["gray299"] for v in views])[:, None])
            embedding, _ = backbone(gray.to(device).contiguous(memory_format=channels_last))
        light_in = light.to(device).contiguous(memory_format=channels_last)
        ab, confidence = predict_with_confidence(model, light_in, embedding, boxes, maps)
        ab = ab.float().cpu().numpy()
    if saturation != 1.0:
        ab *= saturation
    lum = light[:, 0].numpy() * 100.0
    return [Prediction(ab[i], boxes[i], lum[i], confidence[i]) for i in range(len(views))]


def view_hint_maps(scans: list[Scan], hints: list[list], boxes: list, size: int) -> torch.Tensor:
    """The scans' colour hints on the model's view, as a hint-taking model reads them."""
    places, colours = [], []
    for scan, scan_hints, (x0, y0, x1, y1) in zip(scans, hints, boxes, strict=True):
        crop = view_boxes(scan_hints, (scan.width, scan.height), (x0, y0, x1, y1))
        places.append(
            [(x0 + left, y0 + top, x0 + right, y0 + bottom) for left, top, right, bottom in crop]
        )
        colours.append([hint.ab for hint in scan_hints])
    return hint_maps(places, colours, size)


def _new_row(ref: InputRef, card: dict, cfg: ColorizeConfig, plan: RunPlan) -> dict:
    return {
        "input_uri": ref.uri,
        "key": ref.key,
        "ordinal": ref.ordinal,
        "model": card["name"],
        "model_version": card["version"],
        "weights_sha256": card["weights_sha256"],
        "output_uri": None,
        "reason": None,
        "note": None,
        "treated_as": cfg.treat_as,
        "saturation": float(cfg.saturation),
        "input_stamp": ref.stamp,
        "input_name": relative_name(ref),
        "hints": len(plan.hints.get(ref.key, ())),
        "hints_digest": plan.digests.get(ref.key),
        "_name": plan.names[ref.key],
        "_claimed": plan.claimed.get(ref.key, False),
        "_hints": plan.hints.get(ref.key, []),
    }


def _read_input(row: dict, ref: InputRef, client, cfg: ColorizeConfig) -> Scan | None:
    """Fetch and decode one input into ``row``; None (with the row's status) when it is not
    colorized: a failure of any kind, or a colour photograph."""
    s = get_settings()
    try:
        data = fetch(ref.uri, client, int(s.max_input_mb * 1024 * 1024), s.http_retries)
        row["input_sha256"] = hashlib.sha256(data).hexdigest()
        scan = read_scan(data, cfg.treat_as, cfg.limits)
    except Rejected as rej:
        row.update(status="failed", reason=f"{rej.reason}: {rej.detail}")
        if rej.reason in SHOWABLE_FAILURES:  # it decodes: the sheet shows what was refused
            _input_thumb(cfg.output, ref.key, data)
        return None
    except HasColour as col:
        row.update(status="skipped_color", reason=f"has colour: {col}", bit_depth=8)
        row.update(width=col.width, height=col.height, input_mode=col.mode)
        row.update(colour_score=col.evidence.score, colour_evidence=col.evidence.detail)
        row.update(colour_uncertain=col.evidence.uncertain)
        _input_thumb(cfg.output, ref.key, col.image)  # the archivist checks the judge by eye
        return None
    except Exception as exc:  # never let one input crash the batch
        row.update(status="failed", reason=f"error: {one_line(exc)}")
        return None
    row.update(width=scan.width, height=scan.height, input_mode=scan.input_mode)
    row.update(bit_depth=scan.bit_depth, note=scan.note or None)
    try:  # checked before the run for files; an HTTP input's size is known only now
        check_on_scan(row.get("_hints", []), scan.width, scan.height, f"hints of {ref.uri}")
    except HintError as exc:
        row.update(status="failed", reason=f"bad_hint: {exc}")
        return None
    if scan.colour is not None:
        row.update(colour_score=scan.colour.score, colour_evidence=scan.colour.detail)
        row.update(colour_uncertain=scan.colour.uncertain)
    return scan


def _input_thumb(output: str, key: str, image: Image.Image | bytes) -> None:
    """The contact sheet's thumbnail of an input left alone (its image, or its file's bytes);
    a failure only loses the picture."""
    try:
        if isinstance(image, bytes):
            pil_guards()
            image = Image.open(io.BytesIO(image))
            image.draft("RGB", (2 * THUMB, 2 * THUMB))  # JPEG: decoded reduced
            image = ImageOps.exif_transpose(image).convert("RGB")
        storage.atomic_write_bytes(thumb_uris(output, key)[0], make_thumb(image))
    except Exception as exc:
        log.warning("no thumbnail for %s: %s", key, one_line(exc))


def _fatal(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS


def _merge_and_write(
    pending: list, model, backbone, card: dict, cfg: ColorizeConfig, device: torch.device
) -> None:
    """Predict a*b* for the pending scans in one forward, then merge and write each; a model
    failure fails these rows; an output that cannot be written ends the run."""
    t0 = time.perf_counter()
    try:
        scans = [s for _, s, _ in pending]
        hints = [row.get("_hints", []) for row, _, _ in pending]
        predictions = _predict(model, backbone, scans, device, cfg.precision, cfg.saturation, hints)
    except Exception as exc:  # a model failure fails these rows, not the run
        for row, _, spent in pending:
            row.update(status="failed", reason=f"model_error: {one_line(exc)}", seconds=spent)
        return
    share = (time.perf_counter() - t0) / len(pending)
    for (row, scan, spent), prediction in zip(pending, predictions, strict=True):
        t1 = time.perf_counter()
        row["confidence"] = prediction.confidence
        try:
            _write_output(row, scan, with_hints(prediction, scan, row.get("_hints")), cfg, card)
        except Exception as exc:
            if _fatal(exc):
                raise OutputError(f"output {cfg.output!r}: {exc.strerror or exc}") from None
            row.update(status="failed", reason=f"write_failed: {one_line(exc)}")
        row["colorized_at"] = now()
        row["seconds"] = spent + share + time.perf_counter() - t1


def with_hints(prediction: Prediction, scan: Scan, hints: list | None) -> Prediction:
    """``prediction`` with its scan's colour ``hints`` spread over their regions (as it is
    without hints)."""
    if not hints:
        return prediction
    size = (scan.width, scan.height)
    ab = spread_hints(prediction.light, prediction.ab, prediction.box, hints, size)
    return prediction._replace(ab=ab)


def colorize_batch(refs: list[InputRef], plan: RunPlan, cfg: ColorizeConfig) -> dict:
    """Colorize ``refs`` (names and superseded rows from ``plan``); write outputs, thumbnails
    for the contact sheet and the batch's index part. Bad inputs become ``failed`` rows; a full
    or broken output raises :class:`OutputError` before the part is written."""
    model, backbone, card = ready_colorizer(cfg)
    device = resolve_device(cfg.device)
    part = part_uri(cfg.output, card["version"], refs, plan.redoes, cfg.saturation, plan.digests)
    if storage.exists(part):
        return {"part": part, "rows": len(refs), "skipped": True, "counts": {}}
    rows: list[dict] = []
    pending: list[tuple[dict, Scan, float]] = []
    held = 0.0
    with make_client() as client:
        for ref in refs:
            t0 = time.perf_counter()
            rows.append(row := _new_row(ref, card, cfg, plan))
            scan = _read_input(row, ref, client, cfg)
            if scan is None:
                row.update(seconds=time.perf_counter() - t0, colorized_at=now())
                continue
            pending.append((row, scan, time.perf_counter() - t0))
            held += scan.width * scan.height / 1e6
            if len(pending) >= cfg.batch_size or held >= cfg.max_batch_megapixels:
                _merge_and_write(pending, model, backbone, card, cfg, device)
                pending, held = [], 0.0
        if pending:
            _merge_and_write(pending, model, backbone, card, cfg, device)
    frame = pd.DataFrame(rows).drop(columns=["_name", "_claimed", "_hints"])
    frame = frame.reindex(columns=INDEX_COLUMNS)
    try:
        storage.write_parquet(part, frame.astype(INDEX_DTYPES), INDEX_SCHEMA)
    except OSError as exc:
        if _fatal(exc):
            raise OutputError(f"output {cfg.output!r}: {exc.strerror or exc}") from None
        raise
    counts = frame["status"].value_counts().to_dict()
    return {"part": part, "rows": len(frame), "skipped": False, "counts": counts}


def colorize_blocks(blocks: list[list[InputRef]], plan: RunPlan, cfg: ColorizeConfig) -> dict:
    """:func:`colorize_batch` on consecutive batches in one task (fewer, longer tasks cost
    less orchestration); each batch still writes its own index part. A run-ending
    :class:`OutputError` is returned as ``error`` (not raised), so the flow can end with that
    one line rather than a worker's traceback."""
    out = {"rows": 0, "skipped": True, "counts": Counter(), "error": None}
    for refs in blocks:
        try:
            result = colorize_batch(refs, plan, cfg)
        except OutputError as exc:
            out["error"] = str(exc)
            break
        out["rows"] += result["rows"]
        out["skipped"] &= result["skipped"]
        out["counts"].update(result["counts"])
    return out | {"counts": dict(out["counts"])}


def _write_output(row: dict, scan: Scan, prediction: Prediction, cfg, card: dict) -> None:
    """Merge, encode and atomically write one output (and its thumbnails when sampled): in the
    format :func:`resolve_format` chooses, 16-bit where the scan and the format are, with the
    input's metadata (``scan.metadata``) and the Koala label."""
    fmt = resolve_format(cfg.format, scan)
    rgb = colorize_lightness(
        scan.lightness,
        prediction.ab,
        prediction.box,
        output_dtype(fmt, scan.bit_depth),
        light_view=prediction.light,
    )
    data = encode_output(
        rgb,
        fmt,
        card["name"],
        card["version"],
        row["input_sha256"],
        source=scan.metadata,
        source_uri=row["input_uri"],
        saturation=cfg.saturation,
        hints=to_json(row["_hints"]).decode() if row.get("_hints") else None,
        hints_sha256=row.get("hints_digest"),
    )
    uri = _free_uri(output_uri(cfg, row["_name"], FORMATS[fmt]), row, card)
    storage.atomic_write_bytes(uri, data)
    if row["ordinal"] < SHEET_INPUTS:
        before, after = thumb_uris(cfg.output, row["key"], cfg.saturation)
        storage.atomic_write_bytes(before, make_thumb(scan.view))
        storage.atomic_write_bytes(after, make_thumb(rgb))
    row.update(status="ok", output_uri=uri)


def _free_uri(uri: str, row: dict, card: dict) -> str:
    """``uri``, or a distinct name beside it when a file is already there that the index does
    not give to this input and that is not this input's own output (a run killed before its
    index part, say): a file of another input or model version is never overwritten."""
    if row.get("_claimed") or not storage.exists(uri):
        return uri
    made = read_provenance(storage.read_bytes(uri))
    saturation = float(made.get("saturation", 1.0))  # outputs before it was recorded: 1
    mine = (row["input_uri"], card["version"], row["saturation"], row.get("hints_digest"))
    theirs = (made.get("sourceUri"), made.get("modelVersion"), saturation, made.get("hintsSha256"))
    if theirs == mine:
        return uri
    stem, ext = posixpath.splitext(uri)
    salt = hashlib.sha256(f"{row['input_uri']}|{card['version']}".encode()).hexdigest()[:8]
    return _free_uri(f"{stem}-{salt}{ext}", row, card)


def prepare_run(
    source: str, cfg: ColorizeConfig
) -> tuple[list[InputRef], RunPlan, dict, pd.DataFrame]:
    """:func:`tasks.colorize_plan.prepare_run`, then the model's weights loaded once (a broken
    registry entry fails here, in one line, not on a worker)."""
    refs, plan, _, index = plan_run(source, cfg)
    return refs, plan, verified_card(cfg.registry, cfg.model), index
