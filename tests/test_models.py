"""Colorization networks, masked losses and the model registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.losses import box_mask, masked_loss
from models.registry import (
    ARCHITECTURES,
    RegistryError,
    build_model,
    champion,
    list_models,
    load_model,
    promote,
    resolve,
    save_model,
)


def small(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **({"width": 16} if name != "unet" else {}))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_forward_backward_shapes_and_range(name: str) -> None:
    model = small(name).train()
    light, emb = torch.rand(2, 1, 64, 80), torch.randn(2, 1280)
    out = model(light, emb)
    assert out.shape == (2, 2, 64, 80) and out.abs().max() <= 1.0
    out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


def test_unet_encoder_is_pretrained_and_frozen_until_released() -> None:
    model = build_model("unet")
    assert all(not p.requires_grad for p in model.encoder.parameters())
    model.train()
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # BN keeps ImageNet statistics
    model.set_encoder_trainable(True)
    model.train()
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert not any(m.training for m in bns) and model.encoder._blocks[0].training
    fresh = build_model("unet", pretrained=False)
    stem = "encoder._conv_stem.weight"
    assert not torch.equal(fresh.state_dict()[stem], model.state_dict()[stem])


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_single_batch_overfit(name: str) -> None:
    """Each model can memorise one batch: the loss falls by an order of magnitude."""
    torch.manual_seed(1)
    model = small(name).train()
    light = torch.rand(2, 1, 48, 48)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="ij")
    target = 0.4 * torch.stack([xx * light[:, 0] * 2 - 0.5, yy.expand(2, -1, -1)], 1)
    emb = torch.randn(2, 1280)
    mask = box_mask(torch.tensor([[0, 4, 48, 44], [2, 0, 46, 48]]), (48, 48))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(300):
        opt.zero_grad()
        loss = masked_loss("mse", model(light, emb), target, mask)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-20:]) < losses[0] / 10, (losses[0], losses[-1])


def test_masked_loss_ignores_padding() -> None:
    pred, target = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    target[..., 0, :] = 5.0  # wrong only in the top row, which is padding
    mask = box_mask(torch.tensor([[0, 1, 4, 4]]), (4, 4))
    assert masked_loss("mse", pred, target, mask).item() == 0.0
    assert masked_loss("mse", pred, target, torch.ones(1, 1, 4, 4)).item() == pytest.approx(6.25)
    assert mask.sum().item() == 12
    h = masked_loss("huber", pred + 1.0, target, mask, delta=0.5).item()
    assert h == pytest.approx(0.5 * (1.0 - 0.25))  # delta * (|x| - delta / 2)


def test_registry_round_trip_and_champion(tmp_path: Path) -> None:
    root = str(tmp_path)
    model = small("koalarization").eval()
    v1 = save_model(root, "koalarization", model, {"val_metrics": {"psnr": 22.0}})
    v2 = save_model(root, "koalarization", small("koalarization"), {"val_metrics": {"psnr": 23.5}})
    assert resolve(root, "koalarization") == ("koalarization", max(v1, v2))  # latest by default
    promote(root, "koalarization", v1, reason="best on val")
    assert champion(root, "koalarization") == v1
    loaded, card = load_model(root, "koalarization")  # the champion
    assert card["version"] == v1 and card["config"]["width"] == 16
    x, e = torch.rand(1, 1, 32, 32), torch.randn(1, 1280)
    torch.testing.assert_close(loaded(x, e), model(x, e))
    weights = tmp_path / "models" / "koalarization" / v1 / "weights.safetensors"
    assert weights.read_bytes()[:8] != b"PK\x03\x04"  # safetensors, not a pickle zip
    table = list_models(root)
    assert list(table["champion"]) == [v == v1 for v in table["version"]]
    assert set(table["val_psnr"]) == {22.0, 23.5}
    with pytest.raises(RegistryError, match="no version"):
        load_model(root, "koalarization@nope")
    with pytest.raises(RegistryError, match="no model named"):
        load_model(root, "zhang")
    card_path = tmp_path / "models" / "koalarization" / v2 / "card.json"
    tampered = json.loads(card_path.read_text()) | {"weights_sha256": "0" * 64}
    card_path.write_text(json.dumps(tampered))
    with pytest.raises(RegistryError, match="do not match"):
        load_model(root, f"koalarization@{v2}")


def test_shipped_models_are_found_when_the_root_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.registry as reg

    shipped = tmp_path / "shipped"
    monkeypatch.setattr(reg, "SHIPPED_REGISTRY", str(shipped))
    shipped_version = save_model(reg.SHIPPED, "regression", small("regression"), {})
    assert (shipped / "regression" / shipped_version / "card.json").exists()
    _, card = load_model(str(tmp_path / "data"), "regression")
    assert card["version"] == shipped_version
    own = save_model(str(tmp_path / "data"), "regression", small("regression"), {})
    assert load_model(str(tmp_path / "data"), "regression")[1]["version"] == own


def test_model_options_apply_only_where_the_config_has_them() -> None:
    from koala.cli import _options
    from models.registry import options_for

    opts = _options(["rebalance=0.85", "freeze_encoder=false", "note=abc"])
    assert opts == {"rebalance": 0.85, "freeze_encoder": False, "note": "abc"}
    assert options_for("unet", opts) == {"rebalance": 0.85, "freeze_encoder": False}
    assert options_for("regression", opts) == {}
    assert build_model("unet", **options_for("unet", opts)).config.rebalance == 0.85
