"""Training through the flow on a tiny dataset: registry entries, resume, interruption, budget,
determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app
from flows.train import train_models
from models.calibration import MAX_GAIN
from models.registry import list_models, load_model
from models.training import TrainConfig, checkpoint_dir, train_model
from tasks.campaign import import_restart

FAST = TrainConfig(epochs=2, batch_size=4, patience=5)


def test_flow_trains_and_registers_each_model(features: Path) -> None:
    results = train_models(
        data=str(features), models=["regression", "koalarization"], epochs=2, batch_size=4
    )
    assert [r["name"] for r in results] == ["regression", "koalarization"]
    table = list_models(str(features))
    assert {"regression", "koalarization"} <= set(table["name"])
    _, card = load_model(str(features), "koalarization")
    assert card["epochs_run"] == 2 and len(card["history"]) == 2
    assert card["backbone"] == "efficientnet-lite0" and len(card["data_index_sha256"]) == 64
    assert card["val_metrics"]["psnr"] > 10
    out = CliRunner().invoke(app, ["models", "list", "--data", str(features)])
    assert out.exit_code == 0 and "koalarization@" in out.output and "val PSNR" in out.output


def test_same_seed_same_weights(features: Path) -> None:
    a = train_model(str(features), "regression", cfg=TrainConfig(epochs=1, batch_size=4, seed=3))
    b = train_model(str(features), "regression", cfg=TrainConfig(epochs=1, batch_size=4, seed=3))
    wa = load_model(str(features), f"regression@{a['version']}")[0].state_dict()
    wb = load_model(str(features), f"regression@{b['version']}")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_interrupted_training_checkpoints_and_resumes(features: Path) -> None:
    """Fine-tuning from the first epoch, so the resumed optimizer has the encoder's group."""
    finetune = {"finetune_after": 0}

    def stop_after_first_epoch(message: str) -> None:
        if "epoch 1:" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(
            str(features), "unet", cfg=FAST, log=stop_after_first_epoch, model_options=finetune
        )
    ckpt = Path(checkpoint_dir(str(features), "unet"))
    assert (ckpt / "last.safetensors").exists() and (ckpt / "optimizer.pt").exists()
    after_one = load_file(str(ckpt / "last.safetensors"))
    messages: list[str] = []
    result = train_model(
        str(features), "unet", cfg=FAST, resume=True, log=messages.append, model_options=finetune
    )
    assert messages[0].startswith("unet: resuming in epoch 2 after ")
    assert result["epochs"] == 2 and not any("epoch 1:" in m for m in messages)
    final = load_file(str(ckpt / "last.safetensors"))
    assert any(not torch.equal(after_one[k], final[k]) for k in final)
    encoder = [k for k in final if k.startswith("encoder.") and "running" not in k]
    assert any(not torch.equal(after_one[k], final[k]) for k in encoder)  # it was fine-tuned


def test_colour_target_calibrates_and_is_applied_when_loaded(features: Path) -> None:
    result = train_model(
        str(features), "regression", cfg=TrainConfig(epochs=1, batch_size=4, colour_target=0.9)
    )
    model, card = load_model(str(features), f"regression@{result['version']}")
    calibration = card["calibration"]
    assert calibration["target"] == 0.9 and model.chroma_gain == card["chroma_gain"] >= 1.0
    assert calibration["ratio_after"] >= 0.9 or card["chroma_gain"] == MAX_GAIN
    assert calibration["ratio_after"] >= calibration["ratio_before"]


def test_budget_stops_training(features: Path) -> None:
    result = train_model(
        str(features), "regression", cfg=TrainConfig(epochs=50, batch_size=4, budget_minutes=0.0001)
    )
    assert result["epochs"] == 1


def test_unknown_model_is_a_clear_error(features: Path) -> None:
    out = CliRunner().invoke(app, ["train", "--data", str(features), "--models", "unet,vgg"])
    assert out.exit_code == 2 and "unknown model(s) ['vgg']" in out.output


def test_evaluate_writes_metrics_summary_and_report(features: Path, tmp_path: Path) -> None:
    from flows.evaluate import evaluate_models

    train_model(str(features), "regression", cfg=TrainConfig(epochs=1, batch_size=4))
    report = tmp_path / "report"
    out = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--data",
            str(features),
            "--models",
            "regression",
            "--report",
            str(report),
            "--split",
            "val",
            "--samples",
            "2",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "gray" in out.output and "mean_ab" in out.output and "regression@" in out.output
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary) >= {"gray", "mean_ab"} and len(summary) == 3
    assert summary["gray"]["colourfulness"] == pytest.approx(0.0, abs=0.5)
    metrics = pd.read_parquet(report / "metrics.parquet")
    assert len(metrics) == 4 * 3  # 4 val images x (2 baselines + 1 model)
    page = (report / "index.html").read_text()
    assert page.count("<img") == 2 * 4  # 2 samples x (gray, model, mean_ab, ground truth)
    assert "class='best'" in page and "FD-lite0" in page
    for src in __import__("re").findall(r"src='([^']+)'", page):
        assert (report / src).stat().st_size > 0
    with pytest.raises(Exception, match="no model named"):
        evaluate_models(data=str(features), models=["zhang"], report=str(report), split="val")


def test_sigterm_checkpoints_and_stops_the_cli(features: Path, prefect_server: str) -> None:
    """A real signal to `koala train` (training runs in a flow's task thread)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    state = Path(checkpoint_dir(str(features), "koalarization")) / "state.json"
    state.unlink(missing_ok=True)
    env = os.environ | {"PREFECT_API_URL": prefect_server, "PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "cli.main", "train", "--data", str(features)]
    proc = subprocess.Popen(
        [*cmd, "--models", "koalarization", "--epochs", "500", "--batch-size", "4"],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not state.exists():
        time.sleep(0.2)
    assert state.exists(), "no epoch finished"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "--resume" in out
    assert 1 <= json.loads(state.read_text())["epoch"] < 500


def test_chroma_unet_calibrates_its_prior_correction_and_keeps_it_when_recalibrated(
    features: Path,
) -> None:
    """chroma_unet, trained at a reduced resolution with short epochs, is calibrated by the
    prior correction of its decoding (no gain); it is in the card's config with the training
    prior in the weights, and comes back when loaded, also after ``models calibrate``."""
    from models.training import calibrate_registered

    cfg = TrainConfig(epochs=2, batch_size=4, colour_target=0.9, resolution=64, epoch_samples=4)
    result = train_model(str(features), "chroma_unet", cfg=cfg, model_options={"pretrained": False})
    model, card = load_model(str(features), f"chroma_unet@{result['version']}")
    assert card["chroma_gain"] == 1.0 and card["epochs_run"] == 2
    assert model.prior_correction == card["config"]["prior_correction"] >= 0.0
    assert model.log_prior.any()  # the training split's prior travels with the weights
    assert card["training"]["resolution"] == 64 and "cores" in card["hardware"]
    version = calibrate_registered(str(features), f"chroma_unet@{result['version']}", 0.3)
    again, card2 = load_model(str(features), f"chroma_unet@{version}")
    assert again.prior_correction == card2["config"]["prior_correction"]
    assert card2["calibration"]["calibrated_from"] == result["version"]
    assert card2["calibration"]["ratio_after"] >= min(0.3, card2["calibration"]["ratio_before"])


def test_a_campaign_resumed_mid_epoch_ends_where_an_unbroken_one_does(
    features: Path, tmp_path: Path
) -> None:
    """A leg that stops after its first step, resumed from a checkpoint folder outside the
    dataset, gives bit-identical weights to one unbroken run (model, both optimizers, the data
    position and its augmentation, the random state); the card counts both legs."""
    campaign = dict(total_samples=16, epoch_samples=8, batch_size=4, resolution=64, patience=9)
    options = {"adversarial_weight": 0.1, "finetune_after": 1, "pretrained": False}

    def run(folder: Path, **extra) -> dict:
        cfg = TrainConfig(**campaign, checkpoint_dir=str(folder), **extra)
        resume = (folder / "chroma_unet" / "state.json").exists()
        return train_model(
            str(features), "chroma_unet", cfg=cfg, model_options=options, resume=resume
        )

    straight = run(tmp_path / "one")
    first_leg = run(tmp_path / "two", leg_minutes=1e-9)
    assert first_leg["version"] is None  # stopped inside the first epoch: nothing to register
    state = json.loads((tmp_path / "two" / "chroma_unet" / "state.json").read_text())
    assert state["epoch"] == 0 and state["position"] == 4 and state["samples"] == 4
    resumed = run(tmp_path / "two")
    a = load_file(str(tmp_path / "one" / "chroma_unet" / "last.safetensors"))
    b = load_file(str(tmp_path / "two" / "chroma_unet" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("discriminator.") for k in a)
    _, card = load_model(str(features), f"chroma_unet@{resumed['version']}")
    assert card["training_samples"] == 16 and [leg["samples"] for leg in card["legs"]] == [4, 12]
    legs_seconds = sum(leg["hours"] for leg in card["legs"]) * 3600  # hours kept to 0.36 s
    assert abs(card["training_seconds"] - legs_seconds) < 1.0
    assert straight["epochs"] == resumed["epochs"] == 2
    kept = tmp_path / "two" / "chroma_unet" / "epochs"
    assert sorted(p.name for p in kept.iterdir()) == ["001", "002"]  # every epoch, as bf16
    spec = import_restart(str(kept / "002"), str(features))
    model, card = load_model(str(features), spec)
    assert card["epoch"] == 2 and card["val_metrics"]["psnr"] == card["history"][-1]["val_psnr"]
    assert all(
        torch.equal(v.to(torch.bfloat16).float(), model.state_dict()[k])
        for k, v in b.items()
        if v.is_floating_point()
    )
