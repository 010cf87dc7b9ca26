"""Zhang et al.'s classification model: gamut bins, soft encoding, annealed-mean decoding,
class rebalancing, and the 50-bin and residual variants."""

from __future__ import annotations

import pytest
import torch

from models import ab_bins
from models.losses import box_mask
from models.registry import build_model


def test_gamut_bins_near_313_with_the_papers_extent() -> None:
    centres = ab_bins.gamut_bins(10.0)
    # the paper reports 313; the sRGB gamut under skimage's D65 Lab reaches 261 cells of the
    # grid (docs/architecture.md): same extent, every centre a multiple of 10
    assert 250 <= len(centres) <= 330
    assert centres[:, 0].min() == -90 and centres[:, 0].max() == 100
    assert centres[:, 1].min() == -110 and centres[:, 1].max() == 90
    assert torch.equal(centres, torch.round(centres / 10) * 10)
    assert len(torch.unique(centres, dim=0)) == len(centres)
    # a coarser grid has fewer bins, and the Pune paper's 50 is one setting away
    assert len(ab_bins.gamut_bins(20.0)) < len(centres)
    assert abs(build_model("zhang", num_bins=50, width=8).num_bins - 50) <= 3


def test_soft_encoding_sums_to_one_over_five_nearest_bins() -> None:
    centres = ab_bins.gamut_bins(10.0)
    ab = (torch.rand(2, 2, 6, 7) - 0.5) * 120
    target = ab_bins.soft_encode(ab, centres)
    assert target.shape == (2, len(centres), 6, 7)
    torch.testing.assert_close(target.sum(1), torch.ones(2, 6, 7))
    assert (target >= 0).all() and ((target > 0).sum(1) == 5).all()
    nearest = ab_bins.nearest_bins(ab, centres)
    assert torch.equal(target.argmax(1), nearest)  # the closest bin weighs most


def test_encode_then_annealed_mean_returns_the_ab_within_one_bin() -> None:
    centres = ab_bins.gamut_bins(10.0)
    torch.manual_seed(0)
    picks = centres[torch.randint(len(centres), (64,))] + (torch.rand(64, 2) - 0.5) * 8
    ab = picks.T.reshape(1, 2, 8, 8)
    logits = torch.log(ab_bins.soft_encode(ab, centres).clamp_min(1e-8))
    decoded = ab_bins.annealed_mean(logits, centres, temperature=0.38)
    assert (decoded - ab).abs().max() < 10.0  # one bin
    # the temperature moves between the mean (T=1) and the mode (T->0)
    mode = ab_bins.annealed_mean(logits, centres, temperature=0.01)
    torch.testing.assert_close(mode, centres[ab_bins.nearest_bins(ab, centres)].permute(0, 3, 1, 2))


def test_class_weights_average_to_one_and_favour_rare_colours() -> None:
    centres = ab_bins.gamut_bins(10.0)
    ab = torch.randn(1, 2, 64, 64) * 8  # mostly near-gray colours...
    ab[..., :4, :4] = torch.tensor([60.0, 70.0]).view(1, 2, 1, 1)  # ...and a rare vivid patch
    counts = ab_bins.bin_counts(ab, torch.ones(1, 1, 64, 64), centres)
    assert counts.sum() == 64 * 64
    w = ab_bins.rebalancing_weights(counts, centres, lam=0.5)
    smooth = ab_bins.smoothed_prior(counts, centres)
    assert float((w * smooth).sum()) == pytest.approx(1.0, rel=1e-5)
    vivid = ab_bins.nearest_bins(torch.tensor([60.0, 70.0]).view(1, 2, 1, 1), centres).item()
    common = ab_bins.nearest_bins(torch.zeros(1, 2, 1, 1), centres).item()
    assert w[vivid] > 3 * w[common]
    # lambda 1 is uniform weighting
    uniform = ab_bins.rebalancing_weights(counts, centres, lam=1.0)
    torch.testing.assert_close(uniform, torch.ones_like(uniform))


def test_model_fits_its_prior_on_real_pixels_and_decodes_in_range() -> None:
    model = build_model("zhang", width=8)
    ab = torch.zeros(2, 2, 32, 32)
    ab[:, :, :, 16:] = torch.tensor([40.0, -30.0]).view(1, 2, 1, 1) / 128
    boxes = torch.tensor([[0, 0, 32, 32], [0, 0, 32, 32]])
    model.fit_prior([{"ab": ab, "box": boxes}])
    gray = ab_bins.nearest_bins(torch.zeros(1, 2, 1, 1), model.centres).item()
    assert model.class_weights[gray] < model.class_weights.max()
    assert model.class_weights.min() > 0
    light = torch.rand(2, 1, 32, 32)
    assert model.logits(light).shape == (2, model.num_bins, 8, 8)
    out = model(light)
    assert out.shape == (2, 2, 32, 32) and out.abs().max() <= 1.0
    loss, pred = model.objective(light, None, ab, box_mask(boxes, (32, 32)))
    assert loss.item() > 0 and pred.shape == out.shape


def test_resnet_variant_uses_residual_blocks() -> None:
    from models.blocks import ResidualBlock

    plain, resnet = build_model("zhang", width=8), build_model("zhang_resnet", width=8)
    assert resnet.config.variant == "resnet"
    assert any(isinstance(m, ResidualBlock) for m in resnet.modules())
    assert not any(isinstance(m, ResidualBlock) for m in plain.modules())
    with pytest.raises(ValueError, match="variant"):
        build_model("zhang", variant="vgg")
