"""``evaluate-models``: full-resolution metrics of models and baselines, and an HTML report."""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from infra.runners import DeferredRunner, task_runner
from tasks.evaluate import evaluate_models as evaluate_task_fn
from tasks.evaluate import report_path

evaluate_task = task(evaluate_task_fn, name="evaluate", cache_policy=NO_CACHE, persist_result=False)


@flow(name="evaluate-models", task_runner=DeferredRunner(task_runner, threads=1), log_prints=True)
def evaluate_models(
    data: str,
    models: list[str],
    report: str,
    backbone: str = "efficientnet-lite0",
    split: str = "test",
    samples: int = 8,
) -> dict:
    """Score ``models`` (``name[@version]``) and the gray / mean-ab baselines on ``split``."""
    log = get_run_logger()
    summary = evaluate_task(data, models, report, backbone, split, samples)
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
    log.info("report: %s", report_path(report))
    return summary
