"""``evaluate-models``: full-resolution metrics of models and baselines, and an HTML report."""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from flows.artifacts import publish_scores
from flows.stages import stage
from infra.runners import DeferredRunner, task_runner
from koala.params import pick
from models.config import DEFAULT_BACKBONE
from tasks import evaluate
from tasks.config import EvaluateConfig

evaluate_task = stage(evaluate.evaluate_models, "evaluate")


@flow(name="evaluate-models", task_runner=DeferredRunner(task_runner, threads=1), log_prints=True)
def evaluate_models(
    data: str,
    models: list[str],
    report: str,
    backbone: str = DEFAULT_BACKBONE,
    split: str = EvaluateConfig.split,
    samples: int = EvaluateConfig.samples,
    limit: int | None = EvaluateConfig.limit,
) -> dict:
    """Score ``models`` (``name[@version]``) and the gray / mean-ab baselines on ``split``."""
    cfg = pick(EvaluateConfig, locals())
    log = get_run_logger()
    summary = evaluate_task(data, models, report, backbone, cfg)
    for name, m in summary.items():
        log.info(
            "%s: PSNR %.2f dB, SSIM %.3f, ab MAE %.2f, colourfulness x%.2f of truth, FD-lite0 %.1f",
            name,
            m["psnr"],
            m["ssim"],
            m["ab_mae"],
            m["colourfulness_ratio"],
            m["fd_lite0"],
        )
    log.info("report: %s", evaluate.report_path(report))
    publish_scores("evaluate-models", summary, evaluate.report_path(report))
    return summary
