"""Progress of a flow's task futures: a Prefect log line per result and a bar on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from tqdm import tqdm


def track(futures: list[PrefectFuture], desc: str, describe: Callable[[Any], str]) -> Iterator[Any]:
    """Yield each future's result as it completes, logging ``describe(result)`` for it."""
    logger = get_run_logger()
    with tqdm(
        total=len(futures), desc=desc, unit="task", file=sys.stderr, disable=not sys.stderr.isatty()
    ) as bar:
        for done, fut in enumerate(as_completed(futures), start=1):
            result = fut.result()
            bar.update(1)
            logger.info("%s %d/%d: %s", desc, done, len(futures), describe(result))
            yield result
