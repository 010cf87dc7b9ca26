"""Progress of a flow's task futures: a bar on a terminal that counts what people count
(images, samples, shards) with rate and ETA, a Prefect progress artifact that the UI and
``prefect deployment run --watch`` users can follow, and a log line per finished task."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from tqdm import tqdm

#: the progress artifact is updated when it moved by at least this many percent
ARTIFACT_STEP = 5.0


def track(
    futures: list[PrefectFuture],
    desc: str,
    describe: Callable[[Any], str],
    unit: str = "task",
    size: Callable[[Any], int] | None = None,
    total: int | None = None,
) -> Iterator[Any]:
    """Yield each future's result as it completes, logging ``describe(result)`` for it.

    The bar and the artifact count ``unit``s: one per result, or with ``size`` and ``total``
    ``size(result)`` of them (the images of a batch), ``total`` being their sum."""
    logger = get_run_logger()
    if size is None or total is None:
        size, total = (lambda _: 1), len(futures)
    artifact = _Progress(desc, unit, total)
    with tqdm(
        total=total,
        desc=desc,
        unit=f" {unit}",
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    ) as bar:
        for done, fut in enumerate(as_completed(futures), start=1):
            result = fut.result()
            bar.update(size(result))
            artifact.update(bar.n)
            logger.info("%s %d/%d: %s", desc, done, len(futures), describe(result))
            yield result
    artifact.update(total, final=True)


class _Progress:
    """A Prefect progress artifact (``<desc>-progress``), updated in steps of
    :data:`ARTIFACT_STEP` percent."""

    def __init__(self, desc: str, unit: str, total: int) -> None:
        self.desc, self.unit, self.total = desc, unit, max(total, 1)
        self.shown = 0.0
        self.id = create_progress_artifact(
            0.0, key=f"{desc}-progress", description=f"{desc}: 0 of {total} {unit}s"
        )

    def update(self, n: int, final: bool = False) -> None:
        pct = 100.0 * min(n, self.total) / self.total
        if final or pct - self.shown >= ARTIFACT_STEP:
            self.shown = pct
            text = f"{self.desc}: {n} of {self.total} {self.unit}s"
            update_progress_artifact(self.id, pct, description=text)
