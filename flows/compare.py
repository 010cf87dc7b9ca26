"""``compare-models``: train every model for the same wall-clock budget on the same data, one
at a time, score them and the baselines on the same split, and write one report (metrics
table with the best values marked, sample grid, training curves, budget, data, hardware)."""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from flows.artifacts import publish_scores
from flows.evaluate import evaluate_task
from flows.train import check_training_inputs, train_task
from infra.runners import DeferredRunner, task_runner
from koala import storage
from koala.lifecycle import stop_on_signals
from koala.params import pick
from models.config import DEFAULT_BACKBONE, TrainConfig
from models.registry import load_card
from tasks import compare
from tasks.config import CompareConfig, EvaluateConfig
from tasks.evaluate import report_path


@flow(name="compare-models", task_runner=DeferredRunner(task_runner, threads=1), log_prints=True)
def compare_models(
    data: str,
    report: str,
    budget_minutes: float = CompareConfig.budget_minutes,
    models: list[str] | None = None,
    backbone: str = DEFAULT_BACKBONE,
    split: str = EvaluateConfig.split,
    batch_size: int = CompareConfig.batch_size,
    colour_target: float | None = CompareConfig.colour_target,
    device: str | None = TrainConfig.device,
    seed: int = TrainConfig.seed,
    samples: int = EvaluateConfig.samples,
    patience: int | None = CompareConfig.patience,
) -> dict:
    """Train ``models`` (default: all of them) with the same budget, then evaluate them. By
    default every model trains for the whole budget (no early stopping; its best val epoch is
    kept); ``patience`` stops a model after that many epochs without val improvement."""
    most = CompareConfig.max_epochs  # a ceiling: the budget ends training (and paces its cosine)
    cfg = pick(TrainConfig, locals(), epochs=most, patience=patience or most)
    log = get_run_logger()
    models = list(models or compare.COMPARED)
    check_training_inputs(data, models, backbone)
    counts = compare.split_counts(data, backbone)
    scored, note = compare.scored_split(counts, split)
    log.info("comparing %s: %g min each on %s", ", ".join(models), budget_minutes, data)
    cards = {}
    with stop_on_signals():
        for name in models:  # one at a time: each gets the whole machine for its budget
            result = train_task(data, name, backbone, cfg, False)
            cards[name] = load_card(data, name, result["version"])
            log.info(
                "%s: %d epochs, val PSNR %.2f dB", name, result["epochs"], result["val"]["psnr"]
            )
    compare.plot_curves(cards, storage.join(report, "curves.png"))
    intro = compare.intro_html(
        data, counts, scored, note, budget_minutes, colour_target, batch_size, patience
    )
    appendix = (
        "<h2>Training</h2>" + compare.training_table(cards) + "<h2>Training curves</h2>"
        "<img src='curves.png' alt='training curves' style='max-width:100%'>"
    )
    specs = [f"{name}@{card['version']}" for name, card in cards.items()]
    scoring = EvaluateConfig(split=scored, samples=samples)
    summary = evaluate_task(data, specs, report, backbone, scoring, intro, appendix)
    log.info("report: %s", report_path(report))
    publish_scores("compare-models", summary, report_path(report))
    return summary
