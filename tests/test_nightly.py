"""nightly-retrain: ingest, preprocess, train a challenger, promote it only when it is better;
a failed data-quality check stops it before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flows.nightly_retrain import nightly_retrain
from models.registry import build_model, champion, promote, save_model, versions
from tasks.quality import DataQualityError
from tests.fixtures import colour_photo, corrupt_jpeg, encode

ARGS = {
    "model": "regression",
    "epochs": 1,
    "budget_minutes": None,
    "batch_size": 4,
    "colour_target": None,
    "split": "val",
    "splits": "folders",
    "shard_size": 4,
    "margin": 0.05,
}


def _photos(folder: Path) -> Path:
    for i in range(12):
        sub = folder / ("train" if i < 8 else "val")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"p{i}.jpg").write_bytes(encode(colour_photo(500 + i, (120, 90))))
    return folder


def test_promotes_a_better_challenger_and_refuses_one_that_is_not(
    tmp_path: Path, prefect_server: str
) -> None:
    data = str(tmp_path / "data")
    bad = build_model("regression")
    with torch.no_grad():
        for p in bad.parameters():
            p.fill_(0.05)  # saturated a*b* everywhere: a champion any training beats
    untrained = save_model(data, "regression", bad, {})
    promote(data, "regression", untrained, reason="a deliberately bad stand-in")
    photos = str(_photos(tmp_path / "photos"))

    first = nightly_retrain(sources=[photos], data=data, **ARGS)
    assert first["promoted"] and first["champion"] == f"regression@{untrained}", first
    assert first["challenger_score"] > first["champion_score"] + 0.05
    winner = first["challenger"].split("@")[1]
    assert champion(data, "regression") == winner
    recorded = json.loads(
        (Path(data) / "models" / "regression" / winner / "promotion.json").read_text()
    )
    assert recorded["promoted"] and recorded["metric"] == "psnr"
    assert (Path(first["report"]) / "index.html").exists()

    # same data and seed: the new challenger is no better than the champion, so it stays
    second = nightly_retrain(sources=[photos], data=data, **ARGS)
    assert not second["promoted"] and second["champion"] == first["challenger"]
    assert second["improvement"] < 0.05
    assert champion(data, "regression") == winner
    assert len(versions(data, "regression")) == 3


def test_failed_data_quality_stops_before_training(tmp_path: Path, prefect_server: str) -> None:
    photos = tmp_path / "bad"
    photos.mkdir()
    for i in range(3):
        (photos / f"ok{i}.jpg").write_bytes(encode(colour_photo(600 + i, (120, 90))))
    for i in range(7):
        (photos / f"broken{i}.jpg").write_bytes(corrupt_jpeg(700 + i))
    data = tmp_path / "data"
    with pytest.raises(DataQualityError):
        nightly_retrain(sources=[str(photos)], data=str(data), **(ARGS | {"splits": "0.6,0.4,0"}))
    assert not (data / "models").exists() and not (data / "features").exists()
