"""The colour campaign's record: a leg's point from real evaluation summaries, the curve
file and its plot, and the bf16 restart point that registers again."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.registry import build_model, load_model, save_model
from tasks import campaign


def _summary(spec: str, psnr: float, ratio: float) -> dict:
    base = {"colourfulness_ratio": 0.0, "fd_lite0": 40.0, "images": 10}
    return {
        "gray": {**base, "psnr": 23.0},
        spec: {**base, "psnr": psnr, "colourfulness_ratio": ratio, "fd_lite0": 30.0},
    }


def _card(version: str, legs: list[tuple[float, int]]) -> dict:
    return {
        "name": "chroma_unet",
        "version": version,
        "training_seconds": sum(h for h, _ in legs) * 3600,
        "training_samples": 1000,
        "legs": [{"hours": h, "threads": t} for h, t in legs],
    }


def test_points_make_a_curve_and_a_plot(tmp_path: Path) -> None:
    curve = str(tmp_path / "campaign" / "curve.json")
    first = _card("v1", [(1.0, 2)])
    second = _card("v2", [(1.0, 2), (0.5, 2)])
    p1 = campaign.leg_point(first, {"mix": _summary("chroma_unet@v1", 24.0, 0.6)})
    assert p1["cpu_hours"] == 2.0 and p1["mix"]["gain_db"] == 1.0
    campaign.record_point(curve, p1)
    p2 = campaign.leg_point(second, {"mix": _summary("chroma_unet@v2", 24.5, 0.8)})
    points = campaign.record_point(curve, p2)
    assert [p["version"] for p in points] == ["chroma_unet@v1", "chroma_unet@v2"]
    assert points[1]["cpu_hours"] == 3.0 and points[1]["legs"] == 2
    again = campaign.record_point(curve, {**p2, "cpu_hours": 3.0})  # a re-record replaces
    assert len(again) == 2 and json.loads(Path(curve).read_text()) == again
    png = campaign.plot_curve(again, str(tmp_path / "campaign" / "curve.png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_restart_point_is_bf16_and_registers_again(tmp_path: Path) -> None:
    root, folder = str(tmp_path / "data"), str(tmp_path / "restart")
    model = build_model("chroma_unet", pretrained=False)
    card = {"architecture": "chroma_unet", "legs": [{"hours": 1.0, "threads": 2}]}
    version = save_model(root, "chroma_unet", model, card)
    campaign.export_restart(root, f"chroma_unet@{version}", folder)
    size = (Path(folder) / "weights.bf16.safetensors").stat().st_size
    assert (
        size
        < 0.6 * (Path(root) / "models/chroma_unet" / version / "weights.safetensors").stat().st_size
    )
    spec = campaign.import_restart(folder, str(tmp_path / "elsewhere"))
    restored, new_card = load_model(str(tmp_path / "elsewhere"), spec)
    original = model.state_dict()
    for key, value in restored.state_dict().items():
        expected = original[key]
        if value.is_floating_point():
            expected = expected.to(torch.bfloat16).float()
        assert torch.equal(value, expected), key
    assert new_card["legs"] == card["legs"] and "bf16" in new_card["restored_from"]
