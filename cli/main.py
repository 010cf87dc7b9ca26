"""The ``koala`` command: each subcommand runs the same Prefect flow that prefect.yaml deploys."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any, Literal

import typer
from typer._click import exceptions as click_errors  # the click that typer vendors
from typer.core import TyperGroup

from koala.choices import DEVICES, FORMAT_CHOICES, TREAT_AS, ImageLimits
from koala.errors import KoalaError
from koala.params import call_with, pick
from models.config import (
    CALIBRATION_TARGET,
    DEFAULT_BACKBONE,
    EFFICIENTNET_LITE0,
    FLAGSHIP,
    INCEPTION_RESNET_V2,
    TrainConfig,
)
from tasks.config import (
    BuildConfig,
    ColorizeConfig,
    CompareConfig,
    EvaluateConfig,
    PreprocessConfig,
)


class OneLineErrors(TyperGroup):
    """The ``koala`` group: a command-line mistake (a typo'd option or command, a missing or
    wrong value) is one line with a "did you mean" and where to read more, exit code 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:  # bare `koala`: the help
            exc.show()
            code = 0
        except click_errors.UsageError as exc:
            typer.echo(f"koala: error: {usage_line(exc)}", err=True)
            code = 2
        except click_errors.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except typer.Abort:
            typer.echo("koala: stopped", err=True)
            code = 130
        sys.exit(code if isinstance(code, int) else 0)


#: plain help (click's): it reads well in an 80-column terminal, choices listed
PLAIN = {"rich_markup_mode": None, "pretty_exceptions_enable": False}
app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    help="Koala colorizes grayscale photographs at archive scale. Each command runs a "
    "Prefect flow; `koala COMMAND --help` tells more.",
    **PLAIN,
)


@app.callback()
def _root(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also show Prefect's and Dask's own log lines (per task)."
        ),
    ] = False,
) -> None:
    """Koala: colorize grayscale photographs at archive scale; every subcommand is a flow."""
    _quiet_logging(verbose)


def _quiet_logging(verbose: bool) -> None:
    """Terminal output is progress bars and the summary: Prefect's console handler shows
    warnings only and Dask (here and in its worker processes) logs warnings only, unless
    ``verbose``; the Prefect server still receives every log line. Set before Prefect or Dask
    is imported, as both read their logging config then."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client telemetry (and its banner)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    if verbose:
        return
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)


def _names(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [m.strip() for m in text.split(",") if m.strip()]


def _options(pairs: list[str]) -> dict:
    """``["rebalance=0.85", "freeze_encoder=false"]`` -> typed dict (JSON values, else strings)."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            _fail(f"--set {pair!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


#: options that several commands share
Backbone = Annotated[
    Literal[EFFICIENTNET_LITE0, INCEPTION_RESNET_V2], typer.Option(help="Embedding network.")
]
Device = Annotated[
    Literal[DEVICES], typer.Option(help="auto: the GPU when there is one (KOALA_DEVICE).")
]
Samples = Annotated[int, typer.Option(min=0, help="Images in the sample grid.")]
Workers = Annotated[int | None, typer.Option(min=1, help="Local Dask workers.")]
Hints = Annotated[
    str | None,
    typer.Option(
        help="Colour hints: a folder or s3:// prefix of <name>.hints.json sidecars at the "
        "scans' paths, or a CSV (image,x,y|left,top,right,bottom,colour). Default: "
        "sidecars beside the scans."
    ),
]
Scheduler = Annotated[str | None, typer.Option(help="Existing Dask scheduler.")]
#: --device's default: the flows' None (KOALA_DEVICE, else the GPU when there is one)
AUTO = "auto"


def _device(choice: str) -> str | None:
    """A ``--device`` for the flows: ``auto`` is their default (None)."""
    return None if choice == AUTO else choice


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"koala: error: {message}", err=True)
    raise typer.Exit(code)


def _prepare_environment(scheduler: str | None) -> str | None:
    """The Prefect API (found or started only now, after the command's checks passed); a
    ``--scheduler`` becomes the configured one. Returns the local stack's Dask scheduler when
    the stack is up."""
    api = _connect_prefect()
    _ready(api)
    _use_scheduler(scheduler)
    return api.dask


def _connect_prefect():  # -> infra.prefect_api.PrefectApi
    """The configured Prefect server, the local stack's, or a temporary one starting now in
    the background (:func:`_ready` waits for it)."""
    from infra.prefect_api import connect

    return connect()


def _ready(api) -> None:
    api.ready(lambda line: typer.echo(line, err=True))


def _use_scheduler(scheduler: str | None) -> None:
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
    shard_size: Annotated[
        int, typer.Option(min=1, help="Samples per shard.")
    ] = BuildConfig.shard_size,
    splits: Annotated[
        str, typer.Option(help="train,val,test ratios, or 'folders' (train/val/test dirs).")
    ] = BuildConfig.splits,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Most inputs per ingest task.")
    ] = BuildConfig.chunk_size,
    min_side: Annotated[
        int, typer.Option(min=1, help="Reject images whose shorter side is below this (px).")
    ] = ImageLimits.min_side,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Reject images with more pixels (decompression bombs).")
    ] = ImageLimits.max_pixels,
    max_rejected_fraction: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Fail the run when more than this fraction of inputs is rejected."
        ),
    ] = BuildConfig.max_rejected_fraction,
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address.")] = None,
) -> None:
    """Download, validate and shard image sources into WebDataset tars with a Parquet index."""
    params = dict(locals())
    try:
        from koala.sources import enumerate_inputs
        from tasks.shards import preflight

        preflight(source, out, splits)
        # Listing the sources here too costs a second pass over them, but a bad source then
        # fails as one clean line before Prefect starts (the flow checks again for deployments).
        enumerate_inputs(source, f"{out.rstrip('/')}/_staging")
        _prepare_environment(scheduler)
        from flows.build_dataset import build_dataset

        stats = call_with(build_dataset, params, sources=source)
    except (KoalaError, ValueError) as exc:
        _fail(str(exc).splitlines()[0] if isinstance(exc, ValueError) else str(exc))
    typer.echo(
        f"{stats['accepted']} of {stats['inputs']} inputs accepted into {stats['shards']} "
        f"shard(s); rejected: {stats['reasons'] or 'none'}\nindex: {out.rstrip('/')}/index.parquet"
    )


@app.command("preprocess")
def preprocess_cmd(
    data: Annotated[str, typer.Option(help="Dataset root made by build-dataset.")],
    backbone: Backbone = PreprocessConfig.backbone,
    weights: Annotated[
        str | None, typer.Option(help="Backbone checkpoint (timm key names for IRv2).")
    ] = PreprocessConfig.weights,
    workers: Workers = None,
    scheduler: Scheduler = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=f"Default: {PreprocessConfig.CPU_BATCH} CPU, {PreprocessConfig.GPU_BATCH} GPU.",
        ),
    ] = PreprocessConfig.batch_size,
) -> None:
    """Resize-and-pad to 200/299, CIE Lab and global embeddings into feature shards, on Dask."""
    params = dict(locals())
    try:
        from flows.preprocess import dataset_shards, preprocess
        from infra.runners import dask_runner
        from models.backbones import load_backbone

        dataset_shards(data)
        load_backbone(backbone, weights)  # fail fast on a missing or mismatched checkpoint
        stack_dask = _prepare_environment(scheduler)
        runner = dask_runner(scheduler or stack_dask, workers)
        flow = preprocess.with_options(task_runner=runner)
        result = call_with(flow, params)
    except KoalaError as exc:
        _fail(str(exc))
    typer.echo(
        f"{result['samples']} samples in {result['shards']} feature shard(s) "
        f"({result['recomputed']} computed now)\nfeatures: {result['features']}"
    )


def _outcome(state):
    """The result of a finished flow run; a failed run ends the command with its one line
    (exit 2 for a KoalaError raised by the flow, 1 for a run that stopped, e.g. disk full)."""
    from cli.stack_run import outcome_of

    return _reported(outcome_of(state))


def _reported(outcome: dict):
    """``{"result": ...}`` -> the result; ``{"failed": line}`` ends the command (exit 1)."""
    if "failed" in outcome:
        _fail(outcome["failed"], code=1)
    return outcome["result"]


@app.command("colorize")
def colorize_cmd(
    input: Annotated[
        str, typer.Option(help="Folder, s3:// prefix, tar/zip or list file of image URIs.")
    ],
    output: Annotated[
        str,
        typer.Option(help="Local folder or s3:// prefix for the results; never in the input."),
    ],
    model: Annotated[
        str,
        typer.Option(
            help="NAME[@VERSION] from --registry, else the shipped models (no @VERSION: the "
            "champion; `koala models list` shows both)."
        ),
    ] = FLAGSHIP,
    format: Annotated[
        Literal[FORMAT_CHOICES],
        typer.Option(
            help="auto keeps the input's format and bit depth (TIFF stays TIFF, 16-bit stays "
            "16-bit)."
        ),
    ] = ColorizeConfig.format,
    treat_as: Annotated[
        Literal[TREAT_AS],
        typer.Option(
            help="auto: skip photographs that already have colour; monochrome: colorize every "
            "input; colour: skip every colour-mode input."
        ),
    ] = ColorizeConfig.treat_as,
    recolor: Annotated[
        bool, typer.Option(help="Same as --treat-as monochrome.", hidden=True)
    ] = False,
    saturation: Annotated[
        float, typer.Option(help="Colour strength: 1 as predicted, 0 gray, >1 more vivid.")
    ] = ColorizeConfig.saturation,
    retry_failed: Annotated[
        bool,
        typer.Option(help="Also redo inputs that failed for a permanent reason (corrupt, ...)."),
    ] = ColorizeConfig.retry_failed,
    hints: Hints = ColorizeConfig.hints,
    registry: Annotated[
        str | None, typer.Option(help="Dataset root whose models/ to use (KOALA_DATA_ROOT).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Images per model forward.")
    ] = ColorizeConfig.batch_size,
    workers: Workers = None,
    scheduler: Scheduler = None,
    device: Device = AUTO,
) -> None:
    """Colorize a collection at full resolution: labelled outputs that keep the input's
    metadata, a Parquet index and a contact sheet. Inputs done with the same model version are
    skipped; transient failures and changed inputs are redone."""
    params = dict(locals())
    params["treat_as"] = "monochrome" if recolor else treat_as
    params["device"] = _device(device)
    api = _connect_prefect()  # a temporary server starts now, beside the checks and the model
    try:
        from koala import lease
        from tasks.colorize_plan import prepare_run, resolve_registry

        params["registry"] = resolve_registry(registry)
        cfg = pick(ColorizeConfig, params)
        refs, plan, card, index = prepare_run(input, cfg)  # fail fast, before torch is imported
        try:  # this process holds the output's lease until the run ends
            result = _colorize_planned(api, params, cfg, input, refs, plan, card, index)
        finally:
            lease.release(cfg.output)
    except KoalaError as exc:
        api.close()
        _fail(str(exc))
    if result is not None:
        _print_outcome(result)


def _colorize_planned(api, params: dict, cfg: ColorizeConfig, source: str, *planned) -> dict | None:
    """The planned run: nothing to do (its summary printed), or the run on the local stack's
    warm worker (this process gives the lease to it) or from this process."""
    from koala import lease
    from tasks.colorize_plan import plan_batches

    refs, plan, card, index = planned
    todo = plan_batches(refs, plan, index, card, cfg)
    if not todo:
        api.close()
        _nothing_to_do(source, refs, card, index, cfg, plan.digests)
        return None
    params["model"] = f"{card['name']}@{card['version']}"  # this version, pinned
    images = sum(len(b) for b in todo)
    if _on_warm_stack(api, images, scheduler=params["scheduler"], workers=params["workers"]):
        lease.release(cfg.output)  # the worker's flow takes it
        return _stack_outcome(api, params)
    return _run_here(api, params, images, params["scheduler"], params["workers"])


def _on_warm_stack(api, images: int, scheduler, workers) -> bool:
    """Whether a run goes to the local stack's warm Dask worker (``cli/stack_run.py``): the
    stack is up with its cluster, the run is small, and no scheduler or workers are asked."""
    from koala.settings import get_settings

    settings = get_settings()
    small = images <= settings.in_process_images and not settings.dask_address
    return (
        api.origin == "local stack" and bool(api.dask) and small and not scheduler and not workers
    )


def _stack_outcome(api, params: dict) -> dict:
    """The run on the stack's worker; a failed run ends the command with its one line."""
    from cli.stack_run import run_on_stack

    return _reported(run_on_stack(api.dask, params, lambda line: typer.echo(line, err=True)))


def _run_here(api, params: dict, images: int, scheduler, workers) -> dict:
    """The run from this process: its model checked and loaded while the Prefect server
    starts, then the flow with the runner :func:`_colorize_runner` picks."""
    from tasks.colorize import verified_card

    verified_card(params["registry"], params["model"])  # the weights load
    runner = _colorize_runner(images, scheduler, workers, api.dask, pick(ColorizeConfig, params))
    _ready(api)
    _use_scheduler(scheduler)
    from flows.colorize import colorize_archive

    flow = colorize_archive.with_options(task_runner=runner)
    return _outcome(_reporting_to(api, lambda: call_with(flow, params, return_state=True)))


def _reporting_to(api, run):
    """``run()``, with a Prefect server that went away for longer than the client's retries
    turned into one line (exit 1, no traceback in the run's log): the batches already
    written stay, and a rerun resumes."""
    import httpx

    flow_log = logging.getLogger("prefect.flow_runs")
    flow_log.addFilter(_no_traceback_for_lost_server)
    try:
        return run()
    except httpx.TransportError as exc:
        _fail(
            f"lost the Prefect server at {api.url} during the run ({type(exc).__name__}); "
            "the batches done are kept: rerun to resume",
            1,
        )
    finally:
        flow_log.removeFilter(_no_traceback_for_lost_server)


def _no_traceback_for_lost_server(record: logging.LogRecord) -> bool:
    """Log filter: a flow run's record of a lost connection to its server keeps its one
    line and drops the traceback (the command's own last line says what happened)."""
    import httpx

    if record.exc_info and isinstance(record.exc_info[1], httpx.TransportError):
        record.exc_info, record.exc_text = None, None
    return True


def _colorize_runner(images: int, scheduler, workers, stack_dask, cfg: ColorizeConfig):
    """The task runner of a colorize run (``infra.runners.colorize_runner``); a run in this
    process gets its model loaded now, while the Prefect server starts."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from infra.runners import colorize_runner

    runner = colorize_runner(images, scheduler, workers, stack_dask)
    if isinstance(runner, ThreadPoolTaskRunner):
        from tasks.colorize import ready_colorizer

        ready_colorizer(cfg)
    return runner


def _print_outcome(result: dict) -> None:
    """Where a colorize run's results are, then its summary as the last line."""
    from tasks.archive_index import outcome_line

    typer.echo(
        f"model: {result['model']}\nimages: {result['images']}\nindex: {result['index']}\n"
        f"contact sheet: {result['contact_sheet']}"
    )
    if result["counts"] and set(result["counts"]) == {"failed"}:  # nothing came of the run
        why = ", ".join(f"{n} {code}" for code, n in result.get("reasons", {}).items())
        _fail(f"every input failed ({why}); the reasons are in the index and contact sheet", 1)
    typer.echo(outcome_line(result["counts"], result["new"]))


def _nothing_to_do(
    source: str, refs: list, card: dict, index, cfg: ColorizeConfig, digests: dict
) -> None:
    """Every input is done with this model version and saturation: the summary from the
    index, without waiting for Prefect or starting Dask (a run would do nothing)."""
    from koala import storage
    from tasks.colorize_plan import run_rows, run_summary

    output = cfg.output
    spec = f"{card['name']}@{card['version']}"
    rows = run_rows(index, refs, card, cfg.saturation, digests)
    sheet = storage.join(output, "contact_sheet.html")
    if not storage.exists(sheet):  # a run stopped before writing it
        from tasks.archive_index import read_index
        from tasks.contact_sheet import sheet_settings, write_contact_sheet

        settings = sheet_settings(cfg)
        rows = run_rows(read_index(output), refs, card, cfg.saturation, digests)  # all columns
        sheet = write_contact_sheet(output, rows, spec, collection=source, settings=settings)
    result = run_summary(output, spec, rows, sheet, new=0)
    _print_outcome(result)


TrainModels = Annotated[
    str,
    typer.Option(
        help="Comma-separated: chroma_unet, unet, koalarization, zhang, zhang_resnet, "
        "regression, autoencoder, pretrained_encoder, gan."
    ),
]
Epochs = Annotated[
    int, typer.Option(min=1, help="Most epochs (early stopping or the budget may end sooner).")
]
Budget = Annotated[float | None, typer.Option(help="Same wall-clock budget for every model.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Samples per training step.")]
Seed = Annotated[int, typer.Option(help="Random seed (initialisation, sample order).")]
Settings = Annotated[
    list[str] | None,
    typer.Option("--set", help="KEY=VALUE for the models' configs, e.g. finetune_after=3."),
]
ColourTarget = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Calibrate each model (prior correction of its colour distribution, or a "
        "chroma gain) so val colourfulness reaches this fraction of the truth's (e.g. 0.95).",
    ),
]
Resolution = Annotated[
    int | None, typer.Option(min=32, help="Train on the 200 px views downsampled to this size.")
]
EpochSamples = Annotated[
    int | None, typer.Option(min=1, help="Samples per epoch (val and checkpoint that often).")
]
LearningRate = Annotated[float, typer.Option(min=0.0, help="Peak learning rate (cosine decay).")]
InitFrom = Annotated[
    str | None,
    typer.Option(
        help="Fine-tune the registered model NAME@VERSION (its weights and config; --set "
        "overrides) instead of training from scratch."
    ),
]


TotalSamples = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="A campaign: the learning rate decays over this many samples across legs and "
        "resumes; training ends there.",
    ),
]
LegMinutes = Annotated[
    float | None,
    typer.Option(
        min=0.0, help="End this leg after M minutes (checkpoint, register the best so far)."
    ),
]
CheckpointDir = Annotated[
    str | None,
    typer.Option(help="Keep checkpoints here (default DATA/checkpoints), e.g. ~/koala-campaign."),
]
Patience = Annotated[int, typer.Option(min=1, help="Stop after N epochs without val gain.")]


@app.command("review")
def review_cmd(
    output: Annotated[str, typer.Argument(help="A colorize output (folder or s3:// prefix).")],
    port: Annotated[int, typer.Option(min=0, help="Local port (0: any free one).")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Pin the colours you know: a local page to click a point of a result, pick its colour
    and save; the next `koala colorize` run of this output honours the hints."""
    from cli.review import make_server

    try:
        server = make_server(output, host, port)
    except KoalaError as exc:
        _fail(str(exc))
    typer.echo(f"review {output} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option(help="Dataset root with preprocessed features.")],
    models: TrainModels,
    epochs: Epochs = TrainConfig.epochs,
    budget_minutes: Budget = TrainConfig.budget_minutes,
    backbone: Backbone = DEFAULT_BACKBONE,
    batch_size: BatchSize = TrainConfig.batch_size,
    device: Device = AUTO,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoints.")] = False,
    seed: Seed = TrainConfig.seed,
    set_: Settings = None,
    colour_target: ColourTarget = TrainConfig.colour_target,
    resolution: Resolution = TrainConfig.resolution,
    epoch_samples: EpochSamples = TrainConfig.epoch_samples,
    lr: LearningRate = TrainConfig.lr,
    init_from: InitFrom = TrainConfig.init_from,
    total_samples: TotalSamples = TrainConfig.total_samples,
    leg_minutes: LegMinutes = TrainConfig.leg_minutes,
    checkpoint_dir: CheckpointDir = TrainConfig.checkpoint_dir,
    patience: Patience = TrainConfig.patience,
) -> None:
    """Train models on feature shards and register the best epoch of each."""
    params = dict(locals())
    try:
        from flows.train import check_training_inputs, train_models
        from koala.lifecycle import stop_on_signals

        check_training_inputs(data, _names(models), backbone, init_from)
        _prepare_environment(None)
        with stop_on_signals():  # Ctrl-C / SIGTERM: checkpoint, then stop (--resume goes on)
            results = call_with(
                train_models,
                params,
                models=_names(models),
                device=_device(device),
                options=_options(set_ or []),
            )
    except KoalaError as exc:
        _fail(str(exc))
    except BaseException:
        from koala.lifecycle import stop_requested

        if stop_requested():
            _fail("interrupted: checkpoints saved; run the same command with --resume", 130)
        raise
    for r in results:
        if r["version"] is None:
            typer.echo(f"{r['name']}: no epoch finished yet, nothing registered; --resume goes on")
            continue
        typer.echo(
            f"{r['name']}@{r['version']}: val PSNR {r['val']['psnr']:.2f} dB, "
            f"{r['epochs']} epoch(s), {r['seconds']:.0f} s"
        )


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[str, typer.Option(help="Dataset root with features and models.")],
    models: Annotated[str, typer.Option(help="Comma-separated NAME[@VERSION].")],
    report: Annotated[str, typer.Option(help="Folder for metrics, summary and index.html.")],
    split: Annotated[str, typer.Option(help="test, val or train.")] = EvaluateConfig.split,
    backbone: Backbone = DEFAULT_BACKBONE,
    samples: Samples = EvaluateConfig.samples,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Score only the split's first N images.")
    ] = EvaluateConfig.limit,
) -> None:
    """Evaluate models and the gray / mean-ab baselines at full resolution; write a report."""
    params = dict(locals())
    try:
        from models.cards import find_card

        for spec in _names(models):
            find_card(data, spec)  # an unknown model or version fails before anything starts
        _prepare_environment(None)
        from flows.evaluate import evaluate_models
        from tasks.evaluate import report_path

        summary = call_with(evaluate_models, params, models=_names(models))
    except KoalaError as exc:
        _fail(str(exc))
    _print_summary(summary)
    typer.echo(f"report: {report_path(report)}")


def _print_summary(summary: dict) -> None:
    """One line per model: the headline metrics of an evaluation."""
    typer.echo(
        f"{'model':44s} {'PSNR':>7s} {'SSIM':>6s} {'abMAE':>6s} {'colour':>7s} {'gap':>6s} "
        f"{'FD':>7s}"
    )
    for name, m in summary.items():
        typer.echo(
            f"{name:44s} {m['psnr']:7.2f} {m['ssim']:6.3f} {m['ab_mae']:6.2f} "
            f"{m['colourfulness_ratio']:7.2f} {m['colourfulness_gap_abs']:6.2f} "
            f"{m['fd_lite0']:7.1f}"
        )


@app.command("compare")
def compare_cmd(
    data: Annotated[str, typer.Option(help="Dataset root with preprocessed features.")],
    report: Annotated[str, typer.Option(help="Folder for the comparison report.")],
    budget_minutes: Annotated[
        float, typer.Option(min=0.01, help="Wall-clock training minutes per model.")
    ] = CompareConfig.budget_minutes,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated subset (default: every model).")
    ] = None,
    split: Annotated[
        str, typer.Option(help="Split to score (test; val if there is none).")
    ] = EvaluateConfig.split,
    backbone: Backbone = DEFAULT_BACKBONE,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Samples per training step, the same for every model.")
    ] = CompareConfig.batch_size,
    colour_target: Annotated[
        float | None,
        typer.Option(min=0.0, help="Chroma calibration target for every model; 0 turns it off."),
    ] = CompareConfig.colour_target,
    device: Device = AUTO,
    samples: Samples = EvaluateConfig.samples,
    patience: Annotated[
        int | None,
        typer.Option(min=1, help="Early stopping (default: every model uses the whole budget)."),
    ] = CompareConfig.patience,
) -> None:
    """Train every model for the same budget on the same data and compare them in one report."""
    params = dict(locals())
    try:
        from flows.compare import compare_models
        from flows.train import check_training_inputs
        from koala.lifecycle import stop_on_signals
        from tasks.compare import COMPARED
        from tasks.evaluate import report_path

        check_training_inputs(data, _names(models) if models else list(COMPARED), backbone)
        _prepare_environment(None)

        with stop_on_signals():
            summary = call_with(
                compare_models,
                params,
                models=_names(models) if models else None,
                colour_target=colour_target or None,
                device=_device(device),
            )
    except KoalaError as exc:
        _fail(str(exc))
    _print_summary(summary)
    typer.echo(f"report: {report_path(report)}")


models_app = typer.Typer(help="The model registry.", no_args_is_help=True, **PLAIN)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list_cmd(
    data: Annotated[
        str | None,
        typer.Option(help="Dataset root holding models/ (default: KOALA_DATA_ROOT)."),
    ] = None,
) -> None:
    """The models shipped with Koala, then those of the registry when there is one (colorize
    looks there first); * marks each name's champion."""
    from koala import storage
    from koala.settings import get_settings
    from models.cards import SHIPPED, SHIPPED_REGISTRY, list_models, registry_root

    root = data or get_settings().data_root
    here = registry_root(root)
    if storage.is_local(here):
        here = os.path.abspath(storage.local_path(here))
    for where, title in ((SHIPPED, f"shipped with Koala ({SHIPPED_REGISTRY})"), (root, here)):
        try:
            table = list_models(where)
        except KoalaError as exc:
            _fail(str(exc))
        if table.empty:
            continue
        typer.echo(f"{title}:")
        for row in table.to_dict("records"):
            psnr = row.get("val_psnr")
            metric = f"  val PSNR {psnr:.2f} dB" if isinstance(psnr, float) and psnr == psnr else ""
            star = "*" if row["champion"] else " "
            typer.echo(f"  {star} {row['name']}@{row['version']}{metric}")


@models_app.command("promote")
def models_promote_cmd(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION to make the champion.")],
    data: Annotated[str, typer.Option(help="Dataset root holding models/.")],
    reason: Annotated[str, typer.Option(help="Recorded with the pointer.")] = "by hand",
) -> None:
    """Make a registered version the champion that colorization uses by default."""
    from models.registry import promote

    name, _, version = spec.partition("@")
    try:
        promote(data, name, version, reason=reason)
    except KoalaError as exc:
        _fail(str(exc))
    typer.echo(f"{name}@{version} is now the champion")


@models_app.command("ship")
def models_ship_cmd(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION to ship with the code.")],
    data: Annotated[str, typer.Option(help="Dataset root holding models/.")],
) -> None:
    """Copy a registered version into models/shipped/ (committed with the code) as the
    champion that a fresh clone colorizes with."""
    from models.registry import ship

    try:
        name, version = ship(data, spec)
    except KoalaError as exc:
        _fail(str(exc))
    typer.echo(f"{name}@{version} is now the shipped default")


@models_app.command("calibrate")
def models_calibrate_cmd(
    spec: Annotated[str, typer.Argument(help="NAME[@VERSION] to calibrate.")],
    data: Annotated[str, typer.Option(help="Dataset root with val features and models/.")],
    colour_target: Annotated[
        float, typer.Option(min=0.0, help="Val colourfulness as a fraction of the truth's.")
    ] = CALIBRATION_TARGET,
) -> None:
    """Register a copy of a model (same weights) with its colour calibrated on val (the
    flagship's annealed-mean temperature, other models' chroma gain)."""
    from models.training import calibrate_registered

    try:
        version = calibrate_registered(data, spec, colour_target, log=typer.echo)
    except KoalaError as exc:
        _fail(str(exc))
    typer.echo(f"registered {spec.partition('@')[0]}@{version}")


def main() -> None:
    """Entry point of the ``koala`` console script."""
    app()


def usage_line(exc) -> str:
    """One line for a command-line mistake (a click ``UsageError``), with the closest
    option or command and where to read more."""
    where = exc.ctx.command_path if exc.ctx is not None else "koala"
    name = getattr(exc, "option_name", None)
    if name is not None:  # NoSuchOption: click's own close matches (difflib)
        close = getattr(exc, "possibilities", None) or []
        hint = f"; did you mean {' or '.join(close[:2])}?" if close else ""
        return f"no option {name} for `{where}`{hint} (see: {where} --help)"
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    return f"{message} (see: {where} --help)"


if __name__ == "__main__":
    sys.exit(main())


@models_app.command("record-leg")
def models_record_leg_cmd(
    spec: Annotated[str, typer.Argument(help="NAME@VERSION: the campaign's best model so far.")],
    data: Annotated[str, typer.Option(help="Dataset root holding the model's registry.")],
    evals: Annotated[
        list[str],
        typer.Option(
            "--eval",
            help="NAME=DATA[:SPLIT] to score it on (repeatable), e.g. "
            "mix=/data/mix:test bsds=/data/bsds:val.",
        ),
    ],
    curve: Annotated[str, typer.Option(help="The campaign's curve (JSON; a PNG beside it).")],
    reports: Annotated[str, typer.Option(help="Folder for the evaluation reports.")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Score only each split's first N images.")
    ] = None,
    restart: Annotated[
        str | None, typer.Option(help="Keep its weights (bf16) and card here as the restart point.")
    ] = None,
    reference: Annotated[
        bool, typer.Option(help="A reference model (e.g. the shipped one): drawn as a line.")
    ] = False,
) -> None:
    """Score a campaign's model on fixed evaluation sets at full resolution and add it to the
    curve of quality against CPU-hours (docs/campaign/)."""
    import json

    from koala import storage
    from models.cards import find_card

    try:
        card = find_card(data, spec)
        sets = {}
        for item in evals:
            name, _, where = item.partition("=")
            root, _, split = where.partition(":")
            if not name or not root:
                raise KoalaError(f"--eval {item!r}: expected NAME=DATA[:SPLIT]")
            sets[name] = (root, split or "test")
        _prepare_environment(None)
        from flows.evaluate import evaluate_models
        from tasks import campaign

        exact = f"{card['name']}@{card['version']}"
        summaries = {}
        for name, (root, split) in sets.items():
            out = storage.join(reports, name)
            model = exact if root == data else _copy_for_eval(data, root, exact)
            summaries[name] = evaluate_models(
                data=root, models=[model], report=out, split=split, limit=limit
            )
        point = campaign.leg_point(card, summaries, reference)
        points = campaign.record_point(curve, point)
        png = campaign.plot_curve(points, curve.rsplit(".", 1)[0] + ".png")
        if restart:
            campaign.export_restart(data, exact, restart)
    except KoalaError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(point, indent=1))  # this model's point, wherever it sorts
    typer.echo(f"curve: {curve} ({png})")


def _copy_for_eval(src: str, dst: str, spec: str) -> str:
    """``spec`` registered in ``src`` made visible to ``dst``'s evaluation (copied across
    registries unless ``dst`` already has it or it is shipped); returns the spec."""
    from models.cards import SHIPPED, copy_version, locate, resolve, versions

    root = locate(src, spec)
    name, version = resolve(root, spec)
    if root != SHIPPED and version not in versions(dst, name):
        copy_version(root, dst, name, version)
    return spec


@models_app.command("import")
def models_import_cmd(
    folder: Annotated[str, typer.Argument(help="A restart point: card.json + weights.bf16.")],
    data: Annotated[str, typer.Option(help="Dataset root whose registry gets it.")],
) -> None:
    """Register a campaign's restart point (kept by record-leg --restart) so that training
    can start from it: koala train --init-from NAME@VERSION."""
    from tasks.campaign import import_restart

    try:
        spec = import_restart(folder, data)
    except (KoalaError, OSError) as exc:
        _fail(f"{folder}: cannot import ({exc})")
    typer.echo(f"registered {spec}")
