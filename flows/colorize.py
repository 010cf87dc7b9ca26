"""``colorize-archive``: mass-colorize a collection into full-resolution, labelled outputs with
a Parquet index and a contact sheet; batches spread over Dask workers."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.progress import track
from infra.runners import dask_runner
from koala.settings import get_settings
from tasks.colorize import (
    ColorizeConfig,
    batches,
    colorize_blocks,
    group_batches,
    prepare_run,
    read_index,
)
from tasks.contact_sheet import write_contact_sheet

_opts = {"cache_policy": NO_CACHE, "persist_result": False}
colorize_task = task(colorize_blocks, name="colorize-batches", retries=1, **_opts)


def _describe(result: dict) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result["counts"].items()))
    return f"{result['rows']} inputs" + (" (already done)" if result["skipped"] else f": {counts}")


@flow(name="colorize-archive", task_runner=dask_runner(), log_prints=True)
def colorize_archive(
    input: str,
    output: str,
    model: str = "unet",
    format: str = "jpg",
    recolor: bool = False,
    registry: str | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> dict:
    """Colorize every image of ``input`` (folder, ``s3://`` prefix, tar/zip or URL list) into
    ``output/images/``, write ``output/index/`` and ``output/contact_sheet.html``. ``model`` is
    ``NAME[@VERSION]`` from ``registry`` (a dataset root; default ``KOALA_DATA_ROOT``), or the
    model shipped with Koala. Inputs already done with this model version are skipped."""
    log = get_run_logger()
    cfg = ColorizeConfig(
        registry=registry or get_settings().data_root,
        model=model,
        output=output,
        format=format,
        recolor=recolor,
        batch_size=batch_size,
        device=device,
    )
    refs, names, card, done = prepare_run(input, cfg)
    todo = batches(refs, batch_size, set(done["input_uri"]))
    spec = f"{card['name']}@{card['version']}"
    log.info(
        "%d input(s) to colorize with %s (%d already done) -> %s",
        sum(len(b) for b in todo),
        spec,
        len(done),
        output,
    )
    futures = [
        colorize_task.submit(group, {r.key: names[r.key] for b in group for r in b}, cfg)
        for group in group_batches(todo)
    ]
    list(track(futures, "colorize", _describe))
    index = read_index(output)
    mine = index[(index["model"] == card["name"]) & (index["model_version"] == card["version"])]
    sheet = write_contact_sheet(output, mine, spec)
    counts = {str(k): int(v) for k, v in mine["status"].value_counts().items()}
    log.info("done: %s; contact sheet %s", counts, sheet)
    return {
        "model": spec,
        "inputs": len(mine),
        "counts": counts,
        "index": f"{output.rstrip('/')}/index",
        "contact_sheet": sheet,
        "images": f"{output.rstrip('/')}/images",
    }
