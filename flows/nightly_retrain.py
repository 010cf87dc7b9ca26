"""``nightly-retrain``: ingest what is new, preprocess it, train a challenger, evaluate it against
the champion on the same held-out split and promote it only when it is better by the margin.

Each step is one of the project's flows (run here as subflows), so the nightly run reuses their
caching: finished ingest chunks, shards and feature shards are not recomputed, and a failed
data-quality check in ``build-dataset`` or ``preprocess`` stops the run before training.
"""

from __future__ import annotations

from prefect import flow, get_client
from prefect.logging import get_run_logger
from prefect.runtime import deployment, flow_run

from flows.artifacts import publish_decision
from flows.build_dataset import build_dataset
from flows.evaluate import evaluate_models
from flows.preprocess import preprocess
from flows.train import train_models
from koala import storage
from koala.errors import KoalaError
from models.config import FLAGSHIP, TrainConfig
from models.promotion import current_champion, decide, record_decision
from tasks.config import BuildConfig, EvaluateConfig, NightlyConfig
from tasks.evaluate import report_path


def how_started() -> str:
    """How this run started: by its deployment's schedule (named, with whether it is active)
    or by hand; read from the Prefect API."""
    if not deployment.id:
        return "run by hand, not from a deployment"
    with get_client(sync_client=True) as client:
        dep = client.read_deployment(deployment.id)
        auto = client.read_flow_run(flow_run.id).auto_scheduled
    schedules = "; ".join(
        f"{getattr(s.schedule, 'cron', None) or s.schedule} "
        f"{getattr(s.schedule, 'timezone', None) or ''} ({'active' if s.active else 'paused'})"
        for s in dep.schedules
    )
    how = "started by its schedule" if auto else "started by hand"
    return f"{how}; deployment {dep.name!r} schedule: {schedules or 'none'}"


@flow(name="nightly-retrain", log_prints=True)
def nightly_retrain(
    sources: list[str],
    data: str,
    model: str = FLAGSHIP,
    epochs: int = TrainConfig.epochs,
    budget_minutes: float | None = NightlyConfig.budget_minutes,
    batch_size: int = TrainConfig.batch_size,
    colour_target: float | None = NightlyConfig.colour_target,
    metric: str = NightlyConfig.metric,
    margin: float = NightlyConfig.margin,
    split: str = EvaluateConfig.split,
    shard_size: int = BuildConfig.shard_size,
    splits: str = BuildConfig.splits,
) -> dict:
    """Retrain ``model`` on ``sources`` (ingested into the dataset root ``data``) and promote
    the challenger if it beats the champion on ``metric`` by ``margin`` on ``split``."""
    log = get_run_logger()
    log.info(
        "nightly-retrain of %s on sources %s into %s (%s)", model, sources, data, how_started()
    )
    build_dataset(sources=sources, out=data, shard_size=shard_size, splits=splits)
    preprocess(data=data)
    champion = current_champion(data, model)
    result = train_models(
        data=data,
        models=[model],
        epochs=epochs,
        budget_minutes=budget_minutes,
        batch_size=batch_size,
        colour_target=colour_target,
    )[0]
    challenger = f"{model}@{result['version']}"
    contenders = [challenger] + ([f"{model}@{champion}"] if champion else [])
    report = storage.join(data, "reports", f"nightly-{result['version']}")
    try:
        scores = evaluate_models(data=data, models=contenders, report=report, split=split)
    except KoalaError as exc:
        raise KoalaError(f"cannot compare on the {split} split: {exc}") from exc
    decision = decide(
        scores, f"{model}@{champion}" if champion else None, challenger, metric, margin
    )
    record_decision(data, model, result["version"], decision)
    log.info(
        "%s %s: challenger %s %s %.4f vs champion %s %s (margin %s)",
        "PROMOTED" if decision["promoted"] else "kept the champion;",
        model,
        challenger,
        metric,
        decision["challenger_score"],
        decision["champion"] or "none",
        "-" if decision["champion_score"] is None else f"{decision['champion_score']:.4f}",
        margin,
    )
    publish_decision(decision, report_path(report), sources)
    return decision | {"report": report}
