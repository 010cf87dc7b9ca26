"""Ingest one chunk of inputs: fetch, decode, validate and stage the accepted images.

A chunk writes two files under the staging area, the tar first and the Parquet last:
``chunk-{n:06d}-{fp}.tar`` (``{key}.jpg`` + ``{key}.json`` per accepted image) and
``chunk-{n:06d}-{fp}.parquet`` (one row per input). ``fp`` fingerprints the chunk's inputs and
limits, so a finished chunk is reused on rerun and a chunk whose inputs changed is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from typing import TypeVar

import httpx
import pandas as pd

from koala import storage
from koala.errors import one_line
from koala.fetch import fetch, make_client
from koala.images import (
    DEFAULT_LIMITS,
    ImageLimits,
    Rejected,
    colour_evidence,
    decode_image,
    encode_jpeg,
    pixel_sha256,
)
from koala.settings import KoalaSettings, get_settings
from koala.sources import InputRef

T = TypeVar("T")
R = TypeVar("R")

#: columns of a chunk's Parquet (and, with split/shard added, of ``index.parquet``)
RECORD_COLUMNS = [
    "key",
    "ordinal",
    "status",
    "reason",
    "detail",
    "source",
    "uri",
    "sha256",
    "pixel_sha256",
    "width",
    "height",
    "orig_width",
    "orig_height",
    "mode",
    "format",
    "bytes",
    "reencoded",
    "colour_score",
    "colour_uncertain",
    "caption",
    "label",
    "seconds",
]


_INTS = ("width", "height", "orig_width", "orig_height", "bytes")
_FLOATS = ("colour_score", "seconds")
RECORD_DTYPES = {
    c: "Int64" if c in _INTS else "float64" if c in _FLOATS else "object" for c in RECORD_COLUMNS
} | {"ordinal": "int64", "reencoded": "boolean", "colour_uncertain": "boolean"}


def chunk_fingerprint(inputs: list[InputRef], limits: ImageLimits) -> str:
    """Hash of a chunk's inputs and limits: the cache key of its staged output."""
    h = hashlib.sha256(json.dumps(asdict(limits), sort_keys=True).encode())
    for ref in inputs:
        h.update(json.dumps(ref.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:12]


def chunk_paths(staging: str, chunk_id: int, fingerprint: str) -> tuple[str, str]:
    """(tar URL, parquet URL) of a staged chunk."""
    stem = storage.join(staging, "chunks", f"chunk-{chunk_id:06d}-{fingerprint}")
    return f"{stem}.tar", f"{stem}.parquet"


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool, in order, with at most ``2 * workers`` results pending."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def process_input(
    ref: InputRef, data: bytes | Rejected, limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[dict, bytes | None, bytes | None]:
    """One fetched input to (index record, stored JPEG bytes, sample JSON); never raises for
    bad input. ``data`` is the input's bytes, or the :class:`Rejected` its fetch ended with."""
    t0 = time.perf_counter()
    rec: dict = dict.fromkeys(RECORD_COLUMNS)
    rec.update(
        key=ref.key,
        ordinal=ref.ordinal,
        source=ref.source,
        uri=ref.uri,
        caption=ref.caption,
        label=ref.label,
    )
    jpg = meta = None
    try:
        if isinstance(data, Rejected):
            raise data
        rec["sha256"] = hashlib.sha256(data).hexdigest()
        decoded = decode_image(data, limits)
        rec.update(
            width=decoded.rgb.width,
            height=decoded.rgb.height,
            orig_width=decoded.width,
            orig_height=decoded.height,
            mode=decoded.mode,
            format=decoded.format,
        )
        evidence = colour_evidence(decoded.rgb, limits)
        rec["colour_score"] = evidence.score  # kept for monochrome rejections too
        rec["colour_uncertain"] = evidence.uncertain
        if not evidence.is_colour:
            raise Rejected("monochrome", evidence.detail)
        rec["pixel_sha256"] = pixel_sha256(decoded.rgb)
        jpg = encode_jpeg(decoded, data)
        rec.update(status="accepted", bytes=len(jpg), reencoded=not decoded.clean_jpeg)
        meta = json.dumps(
            {
                "key": ref.key,
                "source": ref.source,
                "uri": ref.uri,
                "original_size": [decoded.width, decoded.height],
                "original_mode": decoded.mode,
                "original_format": decoded.format,
                "frames": decoded.frames,
                "sha256": rec["sha256"],
                "caption": ref.caption,
                "captions": list(ref.captions),
                "label": ref.label,
            },
            ensure_ascii=False,
        ).encode()
    except Rejected as rej:
        rec.update(status="rejected", reason=rej.reason, detail=rej.detail)
        jpg = meta = None
    except Exception as exc:  # a bad input is a row, never a crashed run
        rec.update(status="rejected", reason="unexpected_error", detail=one_line(exc))
        jpg = meta = None
    rec["seconds"] = time.perf_counter() - t0
    return rec, jpg, meta


_POOL: ProcessPoolExecutor | None = None
_POOL_SETTINGS: KoalaSettings | None = None  # the settings its processes were started with
_POOL_LOCK = threading.Lock()
#: attempts at an input's checks in processes (a process that dies takes the inputs it held
#: with it: they are tried again in a fresh pool) before it is a rejected row
CHECK_ATTEMPTS = 2


def checks_pool() -> ProcessPoolExecutor | None:
    """The processes (``KOALA_INGEST_PROCESSES``) that fetch and check the inputs of every
    ingest task of this process, started once (again when the settings change); None to do
    it in the task's threads (the setting is 0, or this process may not have children: a Dask
    worker's is daemonic)."""
    global _POOL, _POOL_SETTINGS
    s = get_settings()
    if s.ingest_processes == 0 or multiprocessing.current_process().daemon:
        return None
    with _POOL_LOCK:
        if _POOL is not None and s != _POOL_SETTINGS:  # its processes fetch with the old ones
            _POOL.shutdown(wait=False)
            _POOL = None
        if _POOL is None:  # spawn: forking a process that runs threads can deadlock the child
            ctx = multiprocessing.get_context("spawn")
            _POOL, _POOL_SETTINGS = ProcessPoolExecutor(s.ingest_processes, mp_context=ctx), s
        return _POOL


def _drop_pool(broken: ProcessPoolExecutor) -> None:
    """Forget a pool whose process died (the next :func:`checks_pool` starts a fresh one)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is broken:
            _POOL = None
    broken.shutdown(wait=False, cancel_futures=True)


Checked = tuple[dict, bytes | None, bytes | None]
Check = Callable[[InputRef, bytes, ImageLimits], Checked]
Job = tuple[ProcessPoolExecutor, Future]
#: inputs per job of the check processes: a process fetches its batch on its own threads and
#: connection pool and checks each input as it arrives, so raw bytes never cross processes
BATCH = 16
#: this process's HTTP client and fetch threads, by its settings' id (made once per process)
_FETCHING: dict[int, tuple[httpx.Client, ThreadPoolExecutor]] = {}


def fetch_input(ref: InputRef, client: httpx.Client) -> tuple[InputRef, bytes | Rejected]:
    """``ref``'s bytes, or the :class:`Rejected` its fetch ended with."""
    s = get_settings()
    try:
        return ref, fetch(ref.uri, client, int(s.max_download_mb * 1024 * 1024), s.http_retries)
    except Rejected as rej:
        return ref, rej


def _check(check: Check, ref: InputRef, data: bytes | Rejected, limits: ImageLimits) -> Checked:
    # a failed fetch has nothing to check: its row says why
    return (
        process_input(ref, data, limits) if isinstance(data, Rejected) else check(ref, data, limits)
    )


def fetch_and_check(refs: list[InputRef], limits: ImageLimits, check: Check) -> list[Checked]:
    """In a check process: fetch ``refs`` on this process's threads and keep-alive connection
    pool, and check each input in order as it arrives."""
    s = get_settings()
    if id(s) not in _FETCHING:
        _FETCHING[id(s)] = make_client(), ThreadPoolExecutor(s.http_concurrency)
    client, threads = _FETCHING[id(s)]
    fetched = threads.map(lambda r: fetch_input(r, client), refs)
    return [_check(check, ref, data, limits) for ref, data in fetched]


def checked_inputs(
    inputs: list[InputRef],
    limits: ImageLimits = DEFAULT_LIMITS,
    check: Check = process_input,
) -> Iterator[Checked]:
    """Each input fetched and checked (:func:`process_input`), in order: in batches on
    :func:`checks_pool`'s processes, a few batches ahead; or fetched on threads and checked
    here when there is no pool."""
    s = get_settings()
    if checks_pool() is None:
        with make_client() as client:
            fetched = ordered_map(lambda r: fetch_input(r, client), inputs, s.http_concurrency)
            yield from (_check(check, ref, data, limits) for ref, data in fetched)
        return
    pending: deque[tuple[list[InputRef], Job]] = deque()
    for i in range(0, len(inputs), BATCH):
        batch = inputs[i : i + BATCH]
        pending.append((batch, _submit(batch, limits, check)))
        if len(pending) >= 2 * s.ingest_processes:
            yield from _collect(*pending.popleft(), limits, check)
    while pending:
        yield from _collect(*pending.popleft(), limits, check)


def _submit(batch: list[InputRef], limits: ImageLimits, check: Check) -> Job:
    """:func:`fetch_and_check` of ``batch`` on the pool (a fresh one when a process died)."""
    for _ in range(CHECK_ATTEMPTS):
        pool = checks_pool()
        try:
            return pool, pool.submit(fetch_and_check, batch, limits, check)
        except BrokenProcessPool:
            _drop_pool(pool)
    raise BrokenProcessPool("the processes of ingest's checks keep dying")


def _collect(
    batch: list[InputRef], job: Job, limits: ImageLimits, check: Check, attempts: int = 1
) -> list[Checked]:
    """The checked inputs of ``job``. When its process died, its inputs are tried again one by
    one in a fresh pool; one that has killed :data:`CHECK_ATTEMPTS` processes is a rejected row
    (the input may be what kills it) and the others go on."""
    pool, future = job
    try:
        return future.result()
    except BrokenProcessPool:
        _drop_pool(pool)
    if len(batch) == 1 and attempts >= CHECK_ATTEMPTS:
        died = Rejected("unexpected_error", "the process that checked it died")
        return [process_input(batch[0], died, limits)]
    # one at a time, so that an input that kills its process takes no other with it
    return [
        checked
        for ref in batch
        for checked in _collect([ref], _submit([ref], limits, check), limits, check, attempts + 1)
    ]


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def ingest_chunk(
    chunk_id: int,
    inputs: list[InputRef],
    staging: str,
    limits: ImageLimits = DEFAULT_LIMITS,
    force: bool = False,
) -> dict:
    """Process one chunk into the staging area (skipped when already staged); return its counts."""
    fp = chunk_fingerprint(inputs, limits)
    tar_url, parquet_url = chunk_paths(staging, chunk_id, fp)
    if not force and storage.exists(parquet_url):
        frame = storage.read_parquet(parquet_url, columns=["status"])
        return {
            "chunk": chunk_id,
            "inputs": len(frame),
            "skipped": True,
            "accepted": int((frame["status"] == "accepted").sum()),
        }
    records = []
    # The checks run in processes that fetch their own inputs, a few batches ahead of the tar,
    # so memory holds a window of checked images, not dozens of decoded ones.
    with storage.atomic_open(tar_url) as f, tarfile.open(fileobj=f, mode="w") as tar:
        for rec, jpg, meta in checked_inputs(inputs, limits):
            records.append(rec)
            if jpg is not None:
                _add_member(tar, f"{rec['key']}.jpg", jpg)
                _add_member(tar, f"{rec['key']}.json", meta)
    frame = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS).astype(RECORD_DTYPES)
    storage.write_parquet(parquet_url, frame)
    return {
        "chunk": chunk_id,
        "inputs": len(frame),
        "skipped": False,
        "accepted": int((frame["status"] == "accepted").sum()),
    }
