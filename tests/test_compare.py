"""`koala compare` end to end on a tiny dataset, every model through colorization, and the
pretrained-encoder CNN with a user's Xception checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from cli.main import app
from koala.outputs import read_label
from models.backbones import CheckpointError
from models.registry import ARCHITECTURES, build_model, options_for, save_model
from tasks.colorize import ColorizeConfig, colorize_batch, prepare_run
from tests.fixtures import colour_photo, encode


def test_compare_trains_each_model_for_the_budget_and_writes_the_report(
    features: Path, tmp_path: Path
) -> None:
    report = tmp_path / "compare"
    args = ["compare", "--data", str(features), "--report", str(report)]
    args += ["--budget-minutes", "0.02", "--models", "zhang,gan,autoencoder", "--samples", "2"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    for name in ("gray", "mean_ab", "zhang@", "gan@", "autoencoder@"):
        assert name in out.output
    page = (report / "index.html").read_text()
    # one row per model and baseline, the best value of each column marked
    rows = re.findall(r"<tr><th>([^<]+)</th><td", page.split("<h2>Samples")[0])
    assert [r.split("@")[0] for r in rows] == ["gray", "mean_ab", "zhang", "gan", "autoencoder"]
    assert page.count("class='best'") >= 9
    # budget, data and hardware are stated; no test split here, so val is scored and said so
    assert "0.02 wall-clock minutes" in page and "cores" in page and str(features) in page
    assert "no test split" in page and "<b>val</b> split" in page
    assert "was calibrated on val" in page
    curves = Image.open(report / "curves.png")
    assert curves.width > 800 and "src='curves.png'" in page
    for src in re.findall(r"src='([^']+)'", page):
        assert (report / src).stat().st_size > 0
    summary = pd.read_json(report / "summary.json")
    assert len(summary.columns) == 5


def test_unknown_model_in_compare_is_a_clear_error(features: Path, tmp_path: Path) -> None:
    args = ["compare", "--data", str(features), "--report", str(tmp_path / "r")]
    out = CliRunner().invoke(app, [*args, "--models", "zhang,vgg"])
    assert out.exit_code == 2 and "unknown model(s) ['vgg']" in out.output


def test_every_model_colorizes_an_archive(tmp_path: Path) -> None:
    """The colorize task Dask runs, with each architecture from the registry."""
    registry = str(tmp_path / "registry")
    for name in ARCHITECTURES:
        torch.manual_seed(0)
        model = build_model(name, **options_for(name, {"width": 8, "pretrained": False}))
        save_model(registry, name, model, {"backbone": "efficientnet-lite0"})
    scans = tmp_path / "scans"
    scans.mkdir()
    for i in range(2):
        gray = colour_photo(900 + i, (150 + 30 * i, 110)).convert("L")
        (scans / f"s{i}.png").write_bytes(encode(gray, "PNG"))
    for name in ARCHITECTURES:
        cfg = ColorizeConfig(registry, name, str(tmp_path / "out" / name), "png")
        refs, plan, card, _ = prepare_run(str(scans), cfg)
        result = colorize_batch(refs, plan, cfg)
        assert result["counts"] == {"ok": 2}, (name, result)
        for i in range(2):
            data = (tmp_path / "out" / name / "images" / f"s{i}.png").read_bytes()
            assert read_label(data) == f"Colorized by Koala {name}@{card['version']}"
            assert Image.open(tmp_path / "out" / name / "images" / f"s{i}.png").size == (
                150 + 30 * i,
                110,
            )


def test_pretrained_encoder_loads_a_users_xception_checkpoint(tmp_path: Path) -> None:
    from models.xception import XceptionEncoder

    torch.manual_seed(0)
    reference = XceptionEncoder()
    state = dict(reference.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    path = tmp_path / "xception.safetensors"
    save_file(state, str(path))
    model = build_model("pretrained_encoder", encoder="xception", encoder_weights=str(path))
    torch.testing.assert_close(model.encoder.state_dict()["conv1.weight"], state["conv1.weight"])
    assert not any(p.requires_grad for p in model.encoder.parameters())
    out = model.eval()(torch.rand(1, 1, 96, 96))
    assert out.shape == (1, 2, 96, 96)
    with pytest.raises(CheckpointError, match="needs encoder_weights"):
        build_model("pretrained_encoder", encoder="xception")
    save_file({"conv1.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="does not match xception"):
        build_model(
            "pretrained_encoder",
            encoder="xception",
            encoder_weights=str(tmp_path / "bad.safetensors"),
        )
