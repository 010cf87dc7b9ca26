"""The tasks of the flows: a stage function of ``tasks/`` (or ``models/``) as a Prefect task.

Stages keep their own results on storage (and skip work that is done), so Prefect neither
caches nor persists what they return."""

from __future__ import annotations

from collections.abc import Callable

from prefect import Task, task
from prefect.cache_policies import NO_CACHE


def stage(fn: Callable, name: str, retries: int | None = None) -> Task:
    """``fn`` as the Prefect task ``name``, retried ``retries`` times after a failure (None:
    Prefect's default)."""
    return task(fn, name=name, retries=retries, cache_policy=NO_CACHE, persist_result=False)
