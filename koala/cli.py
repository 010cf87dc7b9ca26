"""The ``koala`` command: each subcommand runs the same Prefect flow that prefect.yaml deploys."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from koala.errors import KoalaError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _root() -> None:
    """Koala: colorize grayscale photographs at archive scale; every subcommand is a flow."""


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"koala: error: {message}", err=True)
    raise typer.Exit(code)


def _prepare_environment(scheduler: str | None) -> None:
    """Quiet, offline-friendly Prefect defaults; a ``--scheduler`` becomes the configured one."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if scheduler:
        os.environ["KOALA_DASK_ADDRESS"] = scheduler
        from koala.settings import get_settings

        get_settings.cache_clear()


@app.command("build-dataset")
def build_dataset_cmd(
    source: Annotated[
        list[str],
        typer.Option(
            "--source",
            "-s",
            help="Folder, s3:// prefix, URL list (.txt/.csv/.parquet), tar/zip, or a "
            "imagenet:/flickr8k:/flickr30k: preset. Repeatable.",
        ),
    ],
    out: Annotated[str, typer.Option(help="Dataset root (local path or s3://).")],
    shard_size: Annotated[int, typer.Option(min=1, help="Samples per shard.")] = 1000,
    splits: Annotated[
        str, typer.Option(help="train,val,test ratios, or 'folders' (train/val/test dirs).")
    ] = "0.9,0.05,0.05",
    chunk_size: Annotated[int, typer.Option(min=1, help="Most inputs per ingest task.")] = 256,
    min_side: Annotated[int, typer.Option(min=1)] = 64,
    max_pixels: Annotated[int, typer.Option(min=1)] = 89_478_485,
    max_rejected_fraction: Annotated[float, typer.Option(min=0, max=1)] = 0.5,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address.")] = None,
) -> None:
    """Download, validate and shard image sources into WebDataset tars with a Parquet index."""
    _prepare_environment(scheduler)
    try:
        from flows.build_dataset import build_dataset, preflight

        preflight(source, out, splits)
        from tasks.sources import enumerate_inputs

        enumerate_inputs(source, f"{out.rstrip('/')}/_staging")  # fail fast on bad sources
        stats = build_dataset(
            sources=source,
            out=out,
            shard_size=shard_size,
            splits=splits,
            chunk_size=chunk_size,
            min_side=min_side,
            max_pixels=max_pixels,
            max_rejected_fraction=max_rejected_fraction,
        )
    except (KoalaError, ValueError) as exc:
        _fail(str(exc).splitlines()[0] if isinstance(exc, ValueError) else str(exc))
    typer.echo(
        f"{stats['accepted']} of {stats['inputs']} inputs accepted into {stats['shards']} "
        f"shard(s); rejected: {stats['reasons'] or 'none'}\nindex: {out.rstrip('/')}/index.parquet"
    )


def main() -> None:
    """Entry point of the ``koala`` console script."""
    app()


if __name__ == "__main__":
    sys.exit(main())
