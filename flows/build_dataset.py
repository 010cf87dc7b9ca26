"""``build-dataset``: image sources into validated WebDataset shards with a Parquet index."""

from __future__ import annotations

import json
import time

import pandas as pd
from prefect import flow
from prefect.logging import get_run_logger

from flows.artifacts import publish_dataset
from flows.progress import track
from flows.stages import stage
from infra.runners import DeferredRunner, task_runner
from koala import storage
from koala.images import ImageLimits
from koala.sources import enumerate_inputs, mark_output
from tasks.config import BuildConfig
from tasks.ingest import chunk_fingerprint, chunk_paths, ingest_chunk
from tasks.quality import validate_dataset_index
from tasks.shards import (
    ShardJob,
    missing_chunk_tars,
    plan_dataset,
    preflight,
    run_stats,
    shard_jobs,
    write_index,
    write_shard,
)

PARALLEL_TASKS = 4  # ingest tasks in flight on the default thread runner
ingest_task = stage(ingest_chunk, "ingest-chunk", retries=1)
write_shard_task = stage(write_shard, "write-shard", retries=1)
validate_task = stage(validate_dataset_index, "validate-dataset-index")


def balanced_chunk_size(n_inputs: int, max_size: int, min_size: int = 16) -> int:
    """Inputs per ingest task: at most ``max_size``, small enough that every task slot is busy.

    Keeping the number of tasks in flight the same for small and large collections keeps the
    work spread over all workers and the peak memory independent of the collection's size.
    """
    slots = PARALLEL_TASKS
    return max(min(max_size, -(-n_inputs // slots)), min(min_size, max_size))


#: a thread pool of PARALLEL_TASKS, or Dask when a scheduler is configured (built when a run starts)
RUNNER = DeferredRunner(task_runner, threads=PARALLEL_TASKS)


@flow(name="build-dataset", task_runner=RUNNER, log_prints=True)
def build_dataset(
    sources: list[str],
    out: str,
    shard_size: int = BuildConfig.shard_size,
    splits: str = BuildConfig.splits,
    chunk_size: int = BuildConfig.chunk_size,  # at most; see balanced_chunk_size
    min_side: int = ImageLimits.min_side,
    max_pixels: int = ImageLimits.max_pixels,
    max_rejected_fraction: float = BuildConfig.max_rejected_fraction,
    keep_staging: bool = BuildConfig.keep_staging,
) -> dict:
    """Ingest ``sources`` into ``out``: ``shards/{split}-{n}.tar``, ``index.parquet``, stats JSON.

    Resumable: finished chunks and shards are reused, so a rerun after a crash completes the
    work and gives the same keys, splits and index as an uninterrupted run.
    """
    log = get_run_logger()
    t0 = time.perf_counter()
    ratios = preflight(sources, out, splits)
    mark_output(out, "build-dataset")
    staging = storage.join(out, "_staging")
    limits = ImageLimits(min_side=min_side, max_pixels=max_pixels)
    for folder in (storage.join(out, "shards"), storage.join(staging, "chunks")):
        storage.remove_stale_temporaries(folder)  # left by a killed run
    inputs = enumerate_inputs(sources, staging)
    chunk_size = balanced_chunk_size(len(inputs), chunk_size)
    chunks = [inputs[i : i + chunk_size] for i in range(0, len(inputs), chunk_size)]
    log.info("%d inputs from %d source(s) in %d chunk(s)", len(inputs), len(sources), len(chunks))

    staged = _ingest(chunks, staging, limits)
    records = pd.concat([storage.read_parquet(p) for _, p in staged], ignore_index=True)
    index = plan_dataset(records, ratios, shard_size)
    jobs = shard_jobs(index, {i: t for i, (t, _) in enumerate(staged)}, chunk_size)
    restage = sorted(missing_chunk_tars(out, jobs, staged))
    if restage:  # a shard is incomplete and its staged images were already cleaned up
        log.info("re-staging %d chunk(s) whose images are needed again", len(restage))
        again = [ingest_task.submit(i, chunks[i], staging, limits, force=True) for i in restage]
        list(track(again, "re-ingest", lambda r: f"chunk {r['chunk']}"))
    stats = _write_shards(out, index, jobs, t0)
    stats["quality"] = validate_task(
        index, ratios, min_side=min_side, max_rejected_fraction=max_rejected_fraction
    )
    if not keep_staging:  # keep the small chunk records so that a rerun is a no-op
        for tar_url, _ in staged:
            storage.remove(tar_url)
    publish_dataset(stats, out)
    return stats


def _ingest(chunks: list[list], staging: str, limits: ImageLimits) -> list[tuple[str, str]]:
    """Ingest every chunk (a finished one is reused); the (tar, records) each staged."""
    futures = [ingest_task.submit(i, c, staging, limits) for i, c in enumerate(chunks)]
    list(
        track(
            futures,
            "ingest",
            lambda r: (
                f"chunk {r['chunk']}: {r['accepted']}/"
                f"{r['inputs']} accepted" + (" (reused)" if r["skipped"] else "")
            ),
            "image",
            lambda r: r["inputs"],
            sum(len(c) for c in chunks),
        )
    )
    return [chunk_paths(staging, i, chunk_fingerprint(c, limits)) for i, c in enumerate(chunks)]


def _write_shards(out: str, index: pd.DataFrame, jobs: list[ShardJob], t0: float) -> dict:
    """Write the shards (a complete one is kept), the index and the run's stats JSON."""
    futures = [write_shard_task.submit(out, job) for job in jobs]
    shard_stats = list(
        track(
            futures,
            "shards",
            lambda s: (
                f"{s['shard']}: {s['count']} samples"
                + (" (already complete)" if s.get("skipped") else "")
            ),
            "shard",
        )
    )
    write_index(out, index)
    stats = run_stats(index, shard_stats, time.perf_counter() - t0)
    storage.atomic_write_bytes(
        storage.join(out, "stats.json"), json.dumps(stats, indent=2).encode()
    )
    get_run_logger().info(
        "index: %d rows, %d accepted, rejected by reason: %s",
        stats["inputs"],
        stats["accepted"],
        stats["reasons"],
    )
    return stats
