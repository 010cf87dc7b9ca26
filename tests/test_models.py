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
    options_for,
    promote,
    resolve,
    save_model,
)


def small(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **options_for(name, {"width": 16}))


def _batch(size: int = 48) -> tuple[torch.Tensor, ...]:
    """L, a smooth a*b*/128 target that depends on L, an embedding and a padded mask."""
    light = torch.rand(2, 1, size, size)
    axis = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    target = 0.4 * torch.stack([xx * light[:, 0] * 2 - 0.5, yy.expand(2, -1, -1)], 1)
    boxes = torch.tensor([[0, 4, size, size - 4], [2, 0, size - 2, size]])
    return light, torch.randn(2, 1280), target, box_mask(boxes, (size, size))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_forward_and_one_training_step(name: str) -> None:
    """Output shape and range at any input size; one train_step updates every trainable
    parameter (both networks for the GAN)."""
    model = small(name).train()
    out = model(torch.rand(2, 1, 64, 80), torch.randn(2, 1280))
    assert out.shape == (2, 2, 64, 80) and out.abs().max() <= 1.0
    trainable = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    light, emb, target, mask = _batch()
    losses = model.train_step(light, emb, target, mask, model.optimizers(1e-3, 0.0))
    assert set(losses) >= {"loss"} and all(v == v for v in losses.values())  # no NaN
    params = dict(model.named_parameters())
    unchanged = [k for k, v in trainable.items() if torch.equal(v, params[k])]
    assert trainable and not unchanged, unchanged[:5]


def _masked_error(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> float:
    light, emb, target, mask = batch
    with torch.no_grad():
        return float(((model(light, emb) - target).abs() * mask).sum() / (2 * mask.sum()))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_single_batch_overfit(name: str) -> None:
    """Each model memorises one batch with its own objective and optimizer(s): the a*b* error
    of its prediction falls to a fraction of where it started."""
    torch.manual_seed(1)
    model = small(name).train()
    batch = _batch()
    before = _masked_error(model.eval(), batch)
    opts = model.optimizers(3e-3, 0.0)
    model.train()
    for _ in range(200):
        model.train_step(*batch, opts)
    after = _masked_error(model.eval(), batch)
    assert after < 0.4 * before and after < 0.08, (before, after)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_registry_round_trip_of_every_model(tmp_path: Path, name: str) -> None:
    model = small(name).eval()
    version = save_model(str(tmp_path), name, model, {})
    loaded, card = load_model(str(tmp_path), name)
    assert card["version"] == version and card["architecture"] == name
    x, e = torch.rand(1, 1, 40, 56), torch.randn(1, 1280)
    torch.testing.assert_close(loaded(x, e), model(x, e))


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
    import models.cards as cards  # where the shipped registry's folder is declared

    shipped = tmp_path / "shipped"
    monkeypatch.setattr(cards, "SHIPPED_REGISTRY", str(shipped))
    shipped_version = save_model(cards.SHIPPED, "regression", small("regression"), {})
    assert (shipped / "regression" / shipped_version / "card.json").exists()
    _, card = load_model(str(tmp_path / "data"), "regression")
    assert card["version"] == shipped_version
    own = save_model(str(tmp_path / "data"), "regression", small("regression"), {})
    assert load_model(str(tmp_path / "data"), "regression")[1]["version"] == own
    # the shipped version named outright is still found beside the root's own versions
    named = load_model(str(tmp_path / "data"), f"regression@{shipped_version}")[1]
    assert named["version"] == shipped_version
    with pytest.raises(RegistryError, match=f"have: \\['{own}'\\]"):
        load_model(str(tmp_path / "data"), "regression@19990101T000000000Z-000000")


def test_model_options_apply_only_where_the_config_has_them() -> None:
    from cli.main import _options
    from models.registry import options_for

    opts = _options(["rebalance=0.85", "freeze_encoder=false", "note=abc"])
    assert opts == {"rebalance": 0.85, "freeze_encoder": False, "note": "abc"}
    assert options_for("unet", opts) == {"rebalance": 0.85, "freeze_encoder": False}
    assert options_for("regression", opts) == {}
    assert build_model("unet", **options_for("unet", opts)).config.rebalance == 0.85
