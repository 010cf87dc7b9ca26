"""The default model committed with the code: present, small, and usable on unseen data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from flows.build_dataset import build_dataset
from models.config import FLAGSHIP
from models.registry import SHIPPED, SHIPPED_REGISTRY, champion, load_model
from tasks.preprocess import preprocess_shard, write_features_index
from tests.fixtures import colour_photo, encode


def test_shipped_flagship_is_a_small_registered_champion() -> None:
    """The default model: under 25 MB, its card says how and on what it was made, and its
    colour comes from its own distribution (no chroma gain)."""
    version = champion(SHIPPED, FLAGSHIP)
    assert version, f"models/shipped/{FLAGSHIP}/champion.json is missing"
    folder = Path(SHIPPED_REGISTRY) / FLAGSHIP / version
    assert (folder / "weights.safetensors").stat().st_size < 25 * 1024 * 1024
    card = json.loads((folder / "card.json").read_text())
    assert card["architecture"] == FLAGSHIP and card["val_metrics"]["psnr"] > 20
    assert card["train_mean_ab"] and len(card["train_mean_ab"]) == 2
    assert card["chroma_gain"] == 1.0 and "cores" in card["hardware"]
    assert card["training"]["resolution"] and card["epochs_run"] >= 1


def test_shipped_flagship_takes_hints_and_without_them_is_the_model_it_grew_from() -> None:
    """Issue 28: the hint-taking flagship was the 2026-12-02 model with hint inputs trained
    alone; without hints it predicts exactly as that model, with one it predicts otherwise."""
    import torch

    from models.calibration import takes_hints
    from models.chroma_unet import hint_maps

    model, card = load_model(SHIPPED, FLAGSHIP)
    origin, _ = load_model(SHIPPED, card["training"]["init_from"])
    assert takes_hints(model) and not takes_hints(origin)
    torch.manual_seed(0)
    light = torch.rand(1, 1, 64, 64)
    embedding = torch.randn(1, card["config"]["embedding_dim"])
    maps = hint_maps([[(20, 20, 30, 30)]], [[(60.0, 40.0)]], 64)
    with torch.no_grad():
        plain = origin(light, embedding)
        assert torch.equal(model(light, embedding), plain)
        assert not torch.allclose(model(light, embedding, maps), plain, atol=1e-3)


def test_previous_flagship_still_ships() -> None:
    version = champion(SHIPPED, "unet")
    assert version and load_model(SHIPPED, "unet")[1]["version"] == version


@pytest.mark.usefixtures("prefect_server")
def test_evaluate_unseen_collection_with_the_shipped_model(tmp_path: Path) -> None:
    """A collection the project has never seen, all in the test split, no model of its own."""
    photos = tmp_path / "unseen"
    photos.mkdir()
    for i in range(3):
        (photos / f"u{i}.jpg").write_bytes(encode(colour_photo(500 + i, (240, 180))))
    data = tmp_path / "data"
    build_dataset(sources=[str(photos)], out=str(data), splits="0,0,1")
    shards = sorted((data / "shards").glob("*.tar"))
    for shard in shards:
        preprocess_shard(str(shard), str(data))
    write_features_index(str(data), "efficientnet-lite0", [s.stem for s in shards])
    assert load_model(str(data), FLAGSHIP)[1]["version"] == champion(SHIPPED, FLAGSHIP)
    report = tmp_path / "report"
    out = CliRunner().invoke(
        app, ["evaluate", "--data", str(data), "--models", FLAGSHIP, "--report", str(report)]
    )
    assert out.exit_code == 0, out.output
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary) == 3 and all(v["images"] == 3 for v in summary.values())
    assert (report / "index.html").exists()
