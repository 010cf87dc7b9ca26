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

from koala.colour import colourfulness, lab_to_rgb
from models.blocks import AB_SCALE

#: the gain is searched in [1, MAX_GAIN] to within GAIN_STEP
MAX_GAIN = 2.0
GAIN_STEP = 0.01


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
    """The smallest gain in [1, MAX_GAIN] (to GAIN_STEP, by bisection: colourfulness grows
    with the gain) whose colourfulness ratio reaches ``target``; MAX_GAIN if none does.
    Returns (gain, ratio without gain, ratio with it)."""
    before = colourfulness_ratio(crops, 1.0)
    if before >= target:
        return 1.0, before, before
    low, high = 1.0, MAX_GAIN
    high_ratio = colourfulness_ratio(crops, high)
    if high_ratio < target:
        return high, before, high_ratio
    while high - low > GAIN_STEP:
        mid = round((low + high) / 2, 4)
        ratio = colourfulness_ratio(crops, mid)
        low, high, high_ratio = (low, mid, ratio) if ratio >= target else (mid, high, high_ratio)
    return round(high, 3), before, high_ratio
