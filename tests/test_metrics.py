"""Metrics against hand-computed values, and the full-resolution merge."""

from __future__ import annotations

import numpy as np
import pytest

from koala.colour import merge_full_resolution, rgb_to_lab
from koala.metrics import frechet_distance, image_metrics


def test_metrics_match_hand_computation() -> None:
    rng = np.random.default_rng(0)
    true_rgb = rng.integers(20, 200, (32, 48, 3)).astype(np.uint8)
    pred_rgb = true_rgb + 10  # every channel 10 levels off: MSE 100
    true_ab = rng.normal(0, 20, (32, 48, 2))
    pred_ab = true_ab + np.array([3.0, 4.0])  # every pixel 5 a*b* units away
    m = image_metrics(pred_rgb, true_rgb, pred_ab, true_ab)
    assert m["psnr"] == pytest.approx(10 * np.log10(255**2 / 100), abs=1e-6)
    assert m["ab_mae"] == pytest.approx(3.5)
    assert m["ab_acc_2"] == 0.0 and m["ab_acc_5"] == 1.0 and m["ab_acc_10"] == 1.0
    assert m["ab_auc"] == pytest.approx(146 / 151)  # thresholds 5..150 of 0..150
    assert m["colourfulness_gap"] == pytest.approx(m["colourfulness"] - m["colourfulness_true"])
    assert 0 < m["ssim"] < 1


def test_saturation_difference_and_gray() -> None:
    gray = np.full((8, 8, 3), 100, np.uint8)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    ab = np.zeros((8, 8, 2))
    m = image_metrics(gray, red, ab, ab)
    assert m["saturation_diff"] == pytest.approx(1.0)  # HSV S: 0 for gray, 1 for pure red
    assert m["colourfulness"] == 0.0


def test_frechet_distance() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    b = rng.normal(size=(4000, 4)) * 2.0  # same mean, std 2: trace(1 + 4 - 2*2) * 4 dims
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.1)


def test_merge_keeps_full_resolution_l_and_upsamples_ab() -> None:
    rgb = np.random.default_rng(2).integers(0, 255, (90, 300, 3)).astype(np.uint8)
    lab = rgb_to_lab(rgb)
    ab_view = np.zeros((2, 200, 200), np.float32)
    box = (0, 70, 200, 130)  # where a 300x90 image sits in the 200 square
    ab_view[0, 70:130] = 12.0
    ab_view[1, 70:130] = -7.0
    ab_view[:, :70] = 99.0  # padding: must not leak into the result
    merged = merge_full_resolution(lab, ab_view, box)
    assert merged.shape == (90, 300, 3)
    np.testing.assert_array_equal(merged[..., 0], lab[..., 0].astype(np.float32))
    np.testing.assert_allclose(merged[..., 1], 12.0, atol=1e-4)
    np.testing.assert_allclose(merged[..., 2], -7.0, atol=1e-4)
