"""Data-quality gates: great-expectations suites kept in ``infra/expectations/`` run on an index.

A suite is GE's own JSON (name + expectations). Run-time values such as the allowed rejected
fraction are ``{"$PARAMETER": ...}`` placeholders filled in here from the flow's arguments.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from koala.errors import KoalaError
from tasks.shards import SPLITS

SUITES_DIR = Path(__file__).resolve().parent.parent / "infra" / "expectations"


class DataQualityError(KoalaError):
    """A data-quality suite failed; the message lists each failing expectation."""


def load_suite(name: str) -> dict:
    """The suite ``infra/expectations/{name}.json`` as a dict."""
    return json.loads((SUITES_DIR / f"{name}.json").read_text())


def _describe(result) -> str:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "condition_parser")}
    observed = result.result.get("observed_value", result.result.get("unexpected_count"))
    sample = result.result.get("partial_unexpected_list") or []
    extra = f", e.g. {sample[:3]}" if sample else ""
    return f"{cfg.type}({kwargs}): observed {observed}{extra}"


def validate_frame(frame: pd.DataFrame, suite_name: str, parameters: dict) -> dict:
    """Run a suite on ``frame``; return a summary or raise :class:`DataQualityError`."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    spec = load_suite(suite_name)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    asset = ctx.data_sources.add_pandas("koala").add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name, expectations=spec["expectations"]))
    vd = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
    )
    result = vd.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters)
    failed = [_describe(r) for r in result.results if not r.success]
    summary = {"suite": suite_name, "expectations": len(result.results), "failed": failed}
    if failed:
        raise DataQualityError(
            f"data-quality suite {suite_name!r} failed {len(failed)} of {len(result.results)} "
            "expectations: " + "; ".join(failed)
        )
    return summary


def split_bounds(ratios: dict[str, float] | None, n: int, tolerance: float) -> dict[str, float]:
    """Allowed share of each split: the ratio within ``tolerance`` plus 4 binomial sigmas
    (anything, for splits taken from folders)."""
    out = {}
    if ratios is None:
        return {f"{name}_{end}": v for name in SPLITS for end, v in (("min", 0.0), ("max", 1.0))}
    for name, p in ratios.items():
        slack = tolerance + 4 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))
        out[f"{name}_min"], out[f"{name}_max"] = max(0.0, p - slack), min(1.0, p + slack)
    return out


def validate_dataset_index(
    index: pd.DataFrame,
    ratios: dict[str, float] | None,
    *,
    min_side: int,
    max_rejected_fraction: float,
    split_tolerance: float = 0.05,
) -> dict:
    """Validate a ``build-dataset`` index with the ``dataset_index`` suite."""
    frame = index.copy()
    frame["rejected"] = (frame["status"] != "accepted").astype(int)
    for name in SPLITS:
        frame[f"split_{name}"] = (frame["split"] == name).astype(int)
    n_accepted = int((frame["status"] == "accepted").sum())
    params = {
        "min_side": min_side,
        "max_side": 1_000_000,
        "max_rejected_fraction": max_rejected_fraction,
        **split_bounds(ratios, n_accepted, split_tolerance),
    }
    return validate_frame(frame, "dataset_index", params)


def validate_features_index(
    index: pd.DataFrame, *, expected_rows: int, embedding_dim: int, encoder_size: int
) -> dict:
    """Validate a ``preprocess`` features index with the ``features_index`` suite."""
    frame = index.copy()
    # NaN anywhere in the statistics or embeddings shows up as a null here
    frame = frame.replace([float("inf"), float("-inf")], float("nan"))
    params = {
        "expected_rows": expected_rows,
        "embedding_dim": embedding_dim,
        "encoder_size": encoder_size,
        "min_norm": 1e-3,
        "max_norm": 1e4,
    }
    return validate_frame(frame, "features_index", params)
