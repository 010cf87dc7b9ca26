"""Chroma calibration: the fitted gain brings washed-out predictions to the target colourfulness,
and predictions apply it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from koala.colour import rgb_to_lab
from models.blocks import AB_SCALE
from models.calibration import colourfulness_ratio, fit_chroma_gain, predict_ab
from tests.fixtures import colour_photo


def _crops(shrink: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    crops = []
    for seed in range(3):
        lab = rgb_to_lab(np.asarray(colour_photo(seed, (64, 48))))
        ab = lab[..., 1:].transpose(2, 0, 1)
        crops.append((lab[..., 0] / 100.0, ab * shrink, ab))
    return crops


def test_gain_restores_washed_out_predictions() -> None:
    crops = _crops(0.5)
    assert 0.4 < colourfulness_ratio(crops, 1.0) < 0.6
    gain, before, after = fit_chroma_gain(crops, 0.9)
    assert 1.6 <= gain <= 1.9 and before < 0.6 and after >= 0.9
    assert colourfulness_ratio(crops, gain - 0.01) < 0.9  # the smallest gain that gets there


def test_gain_is_one_when_already_vivid_enough() -> None:
    assert fit_chroma_gain(_crops(1.0), 0.85)[0] == 1.0


class Constant(nn.Module):
    def forward(self, light: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return torch.full((len(light), 2, *light.shape[-2:]), 0.75)


def test_predict_ab_applies_the_gain_and_clamps() -> None:
    model, light = Constant(), torch.zeros(1, 1, 4, 4)
    assert torch.allclose(predict_ab(model, light, None), torch.tensor(0.75 * AB_SCALE))
    model.chroma_gain = 1.2
    assert torch.allclose(predict_ab(model, light, None), torch.tensor(0.9 * AB_SCALE))
    model.chroma_gain = 2.0
    assert float(predict_ab(model, light, None).max()) == 127.0
