"""The conditional GAN: alternating steps touch only their own network."""

from __future__ import annotations

import pytest
import torch

from models.losses import box_mask
from models.registry import build_model


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, p in module.named_parameters() if not torch.equal(before[k], p)}


def test_d_step_and_g_step_change_only_their_own_parameters() -> None:
    torch.manual_seed(0)
    gan = build_model("gan", width=8).train()
    opts = gan.optimizers(lr=1.0, weight_decay=0.0)  # the GAN's own lr and beta1 apply
    assert opts["generator"].defaults["lr"] == 2e-4
    assert opts["generator"].defaults["betas"][0] == 0.5
    light, ab = torch.rand(2, 1, 48, 48), (torch.rand(2, 2, 48, 48) - 0.5) * 0.5
    mask = box_mask(torch.tensor([[0, 4, 48, 44], [0, 0, 48, 48]]), (48, 48))
    g_trainable = {k for k, p in gan.generator.named_parameters() if p.requires_grad}
    encoder = {k for k in dict(gan.generator.named_parameters()) if k.startswith("encoder.")}
    assert encoder and not (encoder & g_trainable)  # the pretrained encoder is frozen

    g0, d0 = _snapshot(gan.generator), _snapshot(gan.discriminator)
    d_loss = gan.discriminator_step(light, ab, mask, opts["discriminator"])
    assert d_loss > 0
    assert _changed(g0, gan.generator) == set()
    assert _changed(d0, gan.discriminator) == set(d0)

    g1, d1 = _snapshot(gan.generator), _snapshot(gan.discriminator)
    losses = gan.generator_step(light, ab, mask, opts["generator"])
    expected = losses["g_adversarial"] + 100.0 * losses["g_l1"]
    assert losses["loss"] == pytest.approx(expected, rel=1e-5)
    assert _changed(d1, gan.discriminator) == set()
    assert _changed(g1, gan.generator) == g_trainable
    assert all(p.requires_grad for p in gan.discriminator.parameters())  # restored

    logged = gan.train_step(light, None, ab, mask, opts)
    assert set(logged) == {"loss", "d_loss", "g_adversarial", "g_l1"}
