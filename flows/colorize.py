"""``colorize-archive``: mass-colorize a collection into full-resolution, labelled outputs with
a Parquet index and a contact sheet; batches spread over Dask workers."""

from __future__ import annotations

from dataclasses import replace

from prefect import flow
from prefect.logging import get_run_logger
from prefect.states import Failed

from flows.artifacts import publish_colorize
from flows.progress import track
from flows.stages import stage
from infra.runners import DeferredRunner, dask_runner
from koala import lease
from koala.params import pick
from models.config import FLAGSHIP
from tasks.archive_index import RunPlan, outcome_line
from tasks.colorize import (
    colorize_blocks,
    group_batches,
    plan_batches,
    prepare_run,
    resolve_registry,
)
from tasks.config import ColorizeConfig
from tasks.run_end import finish_run

colorize_task = stage(colorize_blocks, "colorize-batches", retries=1)


def _describe(result: dict) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result["counts"].items()))
    if result.get("error"):
        return f"stopped: {result['error']}"
    return f"{result['rows']} inputs" + (" (already done)" if result["skipped"] else f": {counts}")


def _subplan(plan: RunPlan, group: list) -> RunPlan:
    """The part of ``plan`` that one task needs (its inputs only)."""
    keys = [r.key for b in group for r in b]
    return RunPlan(
        {k: plan.names[k] for k in keys},
        {k: plan.claimed.get(k, False) for k in keys},
        {k: plan.redoes.get(k, "") for k in keys},
        {k: plan.hints[k] for k in keys if k in plan.hints},
        {k: plan.digests[k] for k in keys if k in plan.digests},
    )


@flow(name="colorize-archive", task_runner=DeferredRunner(dask_runner), log_prints=True)
def colorize_archive(
    input: str,
    output: str,
    model: str = FLAGSHIP,
    format: str = ColorizeConfig.format,
    treat_as: str = ColorizeConfig.treat_as,
    saturation: float = ColorizeConfig.saturation,
    retry_failed: bool = ColorizeConfig.retry_failed,
    hints: str | None = ColorizeConfig.hints,
    registry: str | None = None,
    batch_size: int = ColorizeConfig.batch_size,
    device: str | None = ColorizeConfig.device,
) -> dict:
    """Colorize every image of ``input`` (folder, ``s3://`` prefix, tar/zip or URL list) into
    ``output/images/``, write ``output/index/`` and ``output/contact_sheet.html``. ``model`` is
    ``NAME[@VERSION]`` from ``registry`` (a dataset root; default ``KOALA_DATA_ROOT``), or the
    model shipped with Koala. Inputs already done with this model version are skipped; failures
    for a transient reason (and all failures with ``retry_failed``) and changed inputs are
    redone. ``hints`` is where the archivist's colour hints are (a folder or prefix of
    ``<name>.hints.json`` sidecars, or a CSV; default: sidecars beside the scans): an input
    with hints gets a result of its own, redone when its hints change. A full or broken output
    ends the run Failed with one line; a rerun resumes."""
    cfg = pick(ColorizeConfig, locals(), registry=resolve_registry(registry))
    refs, plan, card, index = prepare_run(input, cfg)  # holds the output's lease
    try:
        # every worker uses this version, whatever is promoted meanwhile
        cfg = replace(cfg, model=f"{card['name']}@{card['version']}")
        todo = plan_batches(refs, plan, index, card, cfg)
        del index  # the planning columns: the run's end reads the index whole again
        return _colorize(input, cfg, refs, plan, card, todo)
    finally:
        lease.release(output)


def _colorize(
    input: str, cfg: ColorizeConfig, refs: list, plan: RunPlan, card: dict, todo: list
) -> dict:
    """The run once planned: the batches ``todo`` on the task runner, then the index
    compacted, the contact sheet and the summary."""
    log = get_run_logger()
    n_todo = sum(len(b) for b in todo)
    log.info(
        "%d input(s) to colorize with %s (%d need no work) -> %s",
        n_todo,
        cfg.model,
        len(refs) - n_todo,
        cfg.output,
    )
    futures = [
        colorize_task.submit(group, _subplan(plan, group), cfg) for group in group_batches(todo)
    ]
    results = track(futures, "colorize", _describe, "image", lambda r: r["rows"], n_todo)
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        return Failed(message=f"{errors[0]}; the batches done are kept, rerun to resume")
    result = finish_run(cfg, refs, card, input, n_todo, plan.digests)
    log.info(
        "%s; contact sheet %s", outcome_line(result["counts"], n_todo), result["contact_sheet"]
    )
    publish_colorize(result)
    return result
