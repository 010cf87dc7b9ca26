"""The great-expectations suite on dataset indexes, and the planning rules it relies on."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from tasks.quality import DataQualityError, split_bounds, validate_dataset_index
from tasks.shards import parse_splits, plan_dataset, split_of


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def records(n: int, rejected: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(n):
        bad = i < rejected
        rows.append(
            {
                "key": f"k{i:04d}",
                "ordinal": i,
                "uri": f"/x/{i}.jpg",
                "source": "/x",
                "status": "rejected" if bad else "accepted",
                "reason": "corrupt" if bad else None,
                "detail": None,
                "sha256": None if bad else sha(f"b{i}"),
                "pixel_sha256": None if bad else sha(f"p{i}"),
                "width": None if bad else 200,
                "height": None if bad else 150,
                "bytes": None if bad else 1000,
                "seconds": 0.01,
            }
        )
    return pd.DataFrame(rows)


def test_split_is_a_pure_function_of_the_content_hash() -> None:
    hashes = [sha(str(i)) for i in range(4000)]
    splits = [split_of(h, RATIOS) for h in hashes]
    assert splits == [split_of(h, RATIOS) for h in hashes]
    share = pd.Series(splits).value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.03 and abs(share["val"] - 0.1) < 0.03


def test_plan_rejects_later_duplicates_and_fills_shards_in_order() -> None:
    frame = records(10)
    frame.loc[7, "pixel_sha256"] = frame.loc[2, "pixel_sha256"]
    plan = plan_dataset(frame, {"train": 1.0, "val": 0.0, "test": 0.0}, shard_size=4)
    assert plan.loc[7, "status"] == "rejected" and plan.loc[7, "reason"] == "duplicate"
    assert "k0002" in plan.loc[7, "detail"]
    assert list(plan["shard"].dropna()) == ["train-000000"] * 4 + ["train-000001"] * 4 + [
        "train-000002"
    ]


def test_suite_passes_on_a_good_index() -> None:
    plan = plan_dataset(records(200, rejected=5), RATIOS, shard_size=50)
    summary = validate_dataset_index(plan, RATIOS, min_side=64, max_rejected_fraction=0.1)
    assert summary["failed"] == [] and summary["expectations"] >= 15


@pytest.mark.parametrize(
    ("breakage", "expectation"),
    [
        (lambda f: f.assign(key="same"), "expect_column_values_to_be_unique"),
        (lambda f: f.assign(width=10), "expect_column_values_to_be_between"),
        (lambda f: f.assign(split="train"), "split_train"),
    ],
    ids=["duplicate-keys", "too-small", "split-ratio"],
)
def test_suite_names_the_failing_expectation(breakage, expectation: str) -> None:
    plan = breakage(plan_dataset(records(200), RATIOS, shard_size=50))
    with pytest.raises(DataQualityError, match=expectation):
        validate_dataset_index(plan, RATIOS, min_side=64, max_rejected_fraction=0.1)


def test_too_many_rejections_fail_the_gate() -> None:
    plan = plan_dataset(records(100, rejected=40), RATIOS, shard_size=50)
    with pytest.raises(DataQualityError, match="rejected"):
        validate_dataset_index(plan, RATIOS, min_side=64, max_rejected_fraction=0.25)


def test_split_bounds_widen_for_small_datasets() -> None:
    small, large = split_bounds(RATIOS, 20, 0.05), split_bounds(RATIOS, 20000, 0.05)
    assert small["val_max"] > large["val_max"] >= 0.15
    assert parse_splits("0.9,0.05,0.05") == {"train": 0.9, "val": 0.05, "test": 0.05}
    with pytest.raises(ValueError, match="summing to 1"):
        parse_splits("0.9,0.2,0.05")


def test_folder_splits_follow_the_collection_layout() -> None:
    from tasks.shards import folder_split

    assert folder_split("/data/bsds500/train/1.jpg") == "train"
    assert folder_split("s3://b/set/Validation/x/2.png") == "val"
    assert folder_split("tar://test/3.jpg::/data/train/all.tar") == "test"
    assert folder_split("/data/trainers/4.jpg") is None
    frame = records(30)
    frame["uri"] = [f"/d/{'train' if i < 20 else 'val'}/{i}.jpg" for i in range(30)]
    plan = plan_dataset(frame, parse_splits("folders"), shard_size=100)
    assert list(plan["split"]) == ["train"] * 20 + ["val"] * 10
    validate_dataset_index(plan, None, min_side=64, max_rejected_fraction=0.1)
