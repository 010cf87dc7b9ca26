"""Which Prefect task runner a flow uses, decided by configuration (``KOALA_DASK_ADDRESS``).

Flows name their runner with :class:`DeferredRunner`, so importing a flow reads no settings and
configures nothing: the real runner is built when the flow runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import dask
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from koala.settings import get_settings

#: Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in workers; setting it turns off glibc's adaptive
#: mmap threshold, so every large torch buffer is a fresh mmap (page faults, 1.7x slower
#: embeddings here). Workers that Koala starts also get a fixed 32 MiB mmap threshold; for your
#: own workers export MALLOC_MMAP_THRESHOLD_=33554432 (see docs/architecture.md).
WORKER_MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": 64 * 1024 * 1024,
    "MALLOC_MMAP_THRESHOLD_": 32 * 1024 * 1024,
}


def task_runner(address: str | None = None, threads: int = 4) -> TaskRunner:
    """A ``DaskTaskRunner`` on ``address`` (or the configured scheduler), else a thread pool."""
    address = address or get_settings().dask_address
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=threads)


def dask_runner(address: str | None = None, workers: int | None = None) -> TaskRunner:
    """Always Dask: on ``address`` (or the configured scheduler) when given, else on a
    process ``LocalCluster`` of ``workers`` single-threaded workers (default: one per core)."""
    from prefect_dask import DaskTaskRunner

    address = address or get_settings().dask_address
    if address:
        return DaskTaskRunner(address=address)
    n = workers or max(1, os.cpu_count() or 1)
    dask.config.set(
        {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    )
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": n,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


def colorize_runner(
    images: int, address: str | None, workers: int | None, stack_dask: str | None = None
) -> TaskRunner:
    """The runner of a colorize run of ``images`` inputs: in this process (Prefect's thread
    pool, one task at a time, the model this process already loaded) when the run is small
    (``KOALA_IN_PROCESS_IMAGES``) and no scheduler or worker count is asked for: starting a
    process cluster and loading the model in each worker costs more than such a run. Else
    Dask: ``address``, the configured scheduler, the local stack's, or a LocalCluster."""
    settings = get_settings()
    chosen = address or settings.dask_address
    if not chosen and workers is None and images <= settings.in_process_images:
        return ThreadPoolTaskRunner(max_workers=1)
    return dask_runner(chosen or stack_dask, workers)


class DeferredRunner(TaskRunner):
    """Stands in a ``@flow`` decorator; the real runner is built when the flow runs (Prefect
    calls :meth:`duplicate` on entering a run), from the settings of that moment."""

    def __init__(self, build: Callable[..., TaskRunner], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._make = partial(build, *args, **kwargs)

    def duplicate(self) -> TaskRunner:
        return self._make()

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a placeholder: Prefect runs the task runner that duplicate() builds")
