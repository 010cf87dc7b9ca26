"""What a finished flow run shows in the Prefect UI and ``prefect deployment run --watch``: a
table artifact of its figures and a link artifact to the page it wrote (contact sheet, report).

Keys are lowercase-dash (Prefect requires ``^[a-z0-9-]+$``) and name the flow, so the
Artifacts page keeps one history per flow and figure. Progress artifacts come from
:func:`flows.progress.track`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_table_artifact

#: schemes kept as they are; anything else is a local path
URL_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "http", "https", "file")


def link_url(uri: str) -> str:
    """``uri`` as a link: a local path becomes an absolute ``file://`` URL; ``s3://``,
    ``http(s)://`` and ``file://`` URLs stay as they are."""
    if urlparse(uri).scheme in URL_SCHEMES:
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def _cell(value: Any) -> Any:
    """A table cell: floats rounded for reading, containers as text."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (dict, list, tuple)):
        return str(value)
    return value


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> UUID:
    """A table artifact of ``rows`` (one dict per row, same keys) under ``key``."""
    table = [{k: _cell(v) for k, v in row.items()} for row in rows]
    return create_table_artifact(table=table, key=key, description=description)


def publish_counts(
    key: str, counts: Mapping[str, Any], description: str, label: str = "what"
) -> UUID:
    """A two-column table artifact (``label``, ``count``) of ``counts``."""
    rows = [{label: name, "count": n} for name, n in counts.items()]
    return publish_table(key, rows, description)


def publish_link(key: str, uri: str, text: str, description: str | None = None) -> UUID:
    """A link artifact to ``uri`` (see :func:`link_url`) shown as ``text``."""
    url = link_url(uri)
    return create_link_artifact(
        link=url, link_text=text, key=key, description=description or f"{text}: {url}"
    )


def publish_colorize(result: dict) -> None:
    """colorize-archive: inputs per status, the new ones, and the contact sheet."""
    counts = dict(sorted(result["counts"].items())) | {
        "total": result["inputs"],
        "new (colorized or retried this run)": result["new"],
    }
    text = f"{result['inputs']} input(s) with {result['model']}, {result['new']} new this run"
    publish_counts("colorize-archive-counts", counts, text, label="status")
    publish_link("colorize-archive-contact-sheet", result["contact_sheet"], "contact sheet")


def publish_dataset(stats: dict, out: str) -> None:
    """build-dataset: accepted and rejected inputs by reason."""
    reasons = {f"rejected: {r}": n for r, n in stats["reasons"].items()}
    counts = {"accepted": stats["accepted"], "rejected": stats["rejected"]} | reasons
    counts["total"] = stats["inputs"]
    splits = ", ".join(f"{s} {n}" for s, n in stats["splits"].items())
    text = f"{out}: {stats['shards']} shard(s); splits {splits}"
    publish_counts("build-dataset-counts", counts, text, label="outcome")


def publish_features(result: dict, data: str) -> None:
    """preprocess: samples and shards, and how many shards were recomputed."""
    counts = {
        "samples": result["samples"],
        "shards": result["shards"],
        "shards recomputed": result["recomputed"],
        "task seconds": result["task_seconds"],
    }
    publish_counts("preprocess-counts", counts, f"features of {data}: {result['features']}")


def publish_training(results: list[dict], data: str) -> None:
    """train-models: each model's registered version, validation PSNR and epochs."""
    rows = [
        {
            "model": r["name"],
            "version": r["version"],
            "val PSNR (dB)": r["val"]["psnr"],
            "epochs": r["epochs"],
            "seconds": r["seconds"],
        }
        for r in results
    ]
    publish_table("train-models-results", rows, f"models registered in {data}")


def publish_scores(flow: str, summary: dict[str, dict], report: str) -> None:
    """evaluate-models / compare-models: the summary table (one row per model or baseline)
    and the HTML report."""
    rows = [
        {"model": name} | {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
        for name, m in summary.items()
    ]
    publish_table(f"{flow}-summary", rows, f"scores of {len(rows)} model(s); report {report}")
    publish_link(f"{flow}-report", report, "report")


DECISION = ("challenger", "champion", "metric", "challenger_score", "champion_score",
            "improvement", "margin", "promoted")  # fmt: skip


def publish_decision(decision: dict, report: str, sources: list[str]) -> None:
    """nightly-retrain: challenger against champion, the decision, and the report."""
    row = {k: decision.get(k) for k in DECISION}
    verdict = "promoted the challenger" if decision["promoted"] else "kept the champion"
    text = f"{verdict}; trained on {', '.join(sources)}"
    publish_table("nightly-retrain-decision", [row], text)
    publish_link("nightly-retrain-report", report, "evaluation report")
