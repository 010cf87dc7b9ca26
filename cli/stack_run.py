"""A small ``colorize`` on the local stack: the ``colorize-archive`` flow runs inside one of the
stack's Dask workers (the same one each time, unless it is busy), a process that keeps Prefect
and torch imported and the model loaded from one run to the next, so the command itself loads
neither: about 3 s for one scan instead of 8, once the first run after ``up`` has loaded them
there. The run reports to the stack's Prefect server like any other; this module is imported
by the worker by reference, so it stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def colorize_on_worker(params: dict[str, Any]) -> dict[str, Any]:
    """Run ``colorize-archive`` here (a worker's thread), its tasks on one thread of this
    process: ``{"result": ...}``, ``{"failed": message}``, or the flow's KoalaError raised."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.colorize import colorize_archive
    from koala.params import call_with

    flow = colorize_archive.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    return outcome_of(call_with(flow, params, return_state=True))


def outcome_of(state) -> dict[str, Any]:
    """A finished flow run's state as a command reports it: ``{"result": ...}``, or
    ``{"failed": its one line}`` for a run that stopped (disk full, ...); a KoalaError the
    flow raised (a bad input found late) is raised again."""
    from koala.errors import KoalaError

    if not state.is_failed():
        return {"result": state.result()}
    try:
        state.result()
    except KoalaError:
        raise
    except Exception:
        pass
    return {"failed": state.message or "the run failed"}


def run_on_stack(dask: str, params: dict[str, Any], say: Callable[[str], None]) -> dict:
    """``colorize_on_worker(params)`` on the stack's scheduler ``dask``; Ctrl-C cancels it."""
    from distributed import Client

    say(f"running on the local stack's Dask cluster ({dask}); follow it in the Prefect UI")
    with Client(dask, timeout="10s", set_as_default=False) as client:
        warm = sorted(client.scheduler_info()["workers"])[:1]  # the same worker every time
        future = client.submit(
            colorize_on_worker, params, pure=False, workers=warm, allow_other_workers=True
        )
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise
