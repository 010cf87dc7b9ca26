"""Which Prefect task runner a flow uses, decided by configuration (``KOALA_DASK_ADDRESS``)."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from koala.settings import get_settings


def task_runner(address: str | None = None, threads: int = 4) -> TaskRunner:
    """A ``DaskTaskRunner`` on ``address`` (or the configured scheduler), else a thread pool."""
    address = address or get_settings().dask_address
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner(max_workers=threads)
