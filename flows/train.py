"""``train-models``: train and register several models on the same feature shards."""

from __future__ import annotations

import contextlib

import dask
from prefect import flow
from prefect.logging import get_run_logger

from flows.artifacts import publish_training
from flows.progress import track
from flows.stages import stage
from infra.runners import DeferredRunner, task_runner
from koala.errors import KoalaError
from koala.lifecycle import stop_on_signals
from koala.params import pick
from models.config import DEFAULT_BACKBONE, TrainConfig
from models.data import feature_shards
from models.registry import ARCHITECTURES, find_card
from models.training import train_model


def _train(
    root: str, name: str, backbone: str, cfg: TrainConfig, resume: bool, options: dict | None = None
) -> dict:
    """One model's training, logging per epoch to the Prefect run."""
    from prefect.logging import get_run_logger as run_logger

    log = run_logger()
    return train_model(
        root, name, backbone, cfg, resume=resume, log=log.info, model_options=options
    )


train_task = stage(_train, "train-model")


def gpu_resource_annotation() -> contextlib.AbstractContextManager:
    """``dask.annotate(resources={"GPU": 1})`` when the flow runs on a Dask cluster that has a
    worker offering a ``GPU`` resource (``dask worker --resources GPU=1``); otherwise nothing,
    and training runs wherever it lands, on CPU if that is all there is."""
    try:
        import distributed

        client = distributed.get_client()
    except (ImportError, ValueError):  # no Dask client: the default thread runner
        return contextlib.nullcontext()
    workers = client.scheduler_info().get("workers", {}).values()
    if any(w.get("resources", {}).get("GPU") for w in workers):
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()


def check_training_inputs(
    data: str, models: list[str], backbone: str, init_from: str | None = None
) -> None:
    """Fail before any work: every model is known, the train and val features exist, and
    ``init_from`` is a registered model of the one architecture trained."""
    unknown = [m for m in models if m not in ARCHITECTURES]
    if unknown:
        raise KoalaError(f"unknown model(s) {unknown}; choose from {sorted(ARCHITECTURES)}")
    if init_from:
        card = find_card(data, init_from)
        if models != [card["architecture"]]:
            raise KoalaError(f"init_from {init_from!r} is a {card['architecture']}: train only it")
    feature_shards(data, backbone, "train")
    feature_shards(data, backbone, "val")


@flow(name="train-models", task_runner=DeferredRunner(task_runner, threads=1), log_prints=True)
def train_models(
    data: str,
    models: list[str],
    backbone: str = DEFAULT_BACKBONE,
    epochs: int = TrainConfig.epochs,
    budget_minutes: float | None = TrainConfig.budget_minutes,
    batch_size: int = TrainConfig.batch_size,
    device: str | None = TrainConfig.device,
    resume: bool = False,
    seed: int = TrainConfig.seed,
    options: dict | None = None,
    colour_target: float | None = TrainConfig.colour_target,
    resolution: int | None = TrainConfig.resolution,
    epoch_samples: int | None = TrainConfig.epoch_samples,
    lr: float = TrainConfig.lr,
    init_from: str | None = TrainConfig.init_from,
    total_samples: int | None = TrainConfig.total_samples,
    leg_minutes: float | None = TrainConfig.leg_minutes,
    checkpoint_dir: str | None = TrainConfig.checkpoint_dir,
    patience: int = TrainConfig.patience,
) -> list[dict]:
    """Train each of ``models`` on ``data``'s features; with ``budget_minutes`` every model gets
    the same wall-clock budget on the same data, so that comparisons are fair. ``options`` set
    config fields of the models that have them (e.g. ``{"finetune_after": 3}`` for the U-Net);
    ``colour_target`` calibrates each model's colour on val (models/calibration.py);
    ``resolution`` trains on views downsampled to that size, ``epoch_samples`` caps an epoch
    (validation and a checkpoint come that often); ``init_from`` (``name@version``) fine-tunes
    a registered model instead of starting from scratch; ``total_samples``, ``leg_minutes``
    and ``checkpoint_dir`` run a campaign in legs (models/training.py)."""
    cfg = pick(TrainConfig, locals())
    log = get_run_logger()
    check_training_inputs(data, models, backbone, init_from)
    log.info("training %s on %s (%s features)", ", ".join(models), data, backbone)
    with gpu_resource_annotation():
        futures = [train_task.submit(data, m, backbone, cfg, resume, options) for m in models]
    with stop_on_signals():  # SIGTERM / Ctrl-C: every model checkpoints, then the run stops
        results = list(
            track(
                futures,
                "train",
                lambda r: (
                    f"{r['name']}@{r['version']}: val PSNR "
                    f"{r['val']['psnr']:.2f} dB after {r['epochs']} epoch(s)"
                ),
            )
        )
    publish_training(results, data)
    return results
