"""Prediction in a*b* units, and the chroma calibration that counters regression to the mean.

A model trained on a per-pixel loss predicts the conditional mean of a*b*. When a hue is
uncertain that mean is closer to gray than any real colour, so outputs look washed out. The
calibration is one scalar per model, ``chroma_gain``: the smallest gain on the predicted a*b*
for which the colourfulness (Hasler and Suesstrunk) of the val split's outputs reaches a chosen
fraction of the ground truth's. It is fitted after training, stored in the model's card, and
applied wherever the model predicts (evaluation, colorization) through :func:`predict_ab`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from models.blocks import AB_SCALE
from tasks.colour import colourfulness, lab_to_rgb

#: gains tried, in order; the first that reaches the target wins
GAINS = tuple(round(1.0 + 0.05 * i, 2) for i in range(21))


def predict_ab(model: nn.Module, light: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """a*b* in CIE units (B, 2, H, W), float32, with the model's ``chroma_gain`` applied."""
    ab = model(light, embedding).float() * AB_SCALE
    gain = float(getattr(model, "chroma_gain", 1.0))
    return (ab * gain).clamp(-128.0, 127.0) if gain != 1.0 else ab


def _rgb(light: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """RGB of L in [0, 1] (H, W) and a*b* (2, H, W)."""
    return lab_to_rgb(np.concatenate([light[..., None] * 100.0, ab.transpose(1, 2, 0)], -1))


def colourfulness_ratio(
    crops: list[tuple[np.ndarray, np.ndarray, np.ndarray]], gain: float
) -> float:
    """Mean colourfulness of the outputs with ``gain`` over that of the ground truth, for
    (L, predicted ab, true ab) crops of the real image box."""
    out = [colourfulness(_rgb(lum, np.clip(p * gain, -128, 127))) for lum, p, _ in crops]
    true = [colourfulness(_rgb(lum, t)) for lum, _, t in crops]
    return float(np.mean(out) / max(np.mean(true), 1e-6))


def collect_crops(
    model: nn.Module, batches: Iterable[dict], device: torch.device
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(L, predicted ab, true ab) of every sample's real image box, without any gain."""
    crops = []
    model.eval()
    with torch.inference_mode():
        for b in batches:
            pred = model(b["light"].to(device), b["embedding"].to(device)).float().cpu()
            for i in range(len(pred)):
                x0, y0, x1, y1 = b["box"][i].tolist()
                crops.append(
                    (
                        b["light"][i, 0, y0:y1, x0:x1].numpy(),
                        pred[i, :, y0:y1, x0:x1].numpy() * AB_SCALE,
                        b["ab"][i, :, y0:y1, x0:x1].numpy() * AB_SCALE,
                    )
                )
    return crops


def fit_chroma_gain(
    crops: list[tuple[np.ndarray, np.ndarray, np.ndarray]], target: float
) -> tuple[float, float, float]:
    """The smallest gain in :data:`GAINS` whose colourfulness ratio reaches ``target`` (the
    largest if none does); returns (gain, ratio without gain, ratio with it)."""
    before = colourfulness_ratio(crops, 1.0)
    for gain in GAINS:
        ratio = before if gain == 1.0 else colourfulness_ratio(crops, gain)
        if ratio >= target:
            return gain, before, ratio
    return GAINS[-1], before, ratio
