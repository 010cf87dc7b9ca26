"""Prediction in a*b* units, and the chroma calibration that counters regression to the mean.

A model trained on a per-pixel loss predicts the conditional mean of a*b*. When a hue is
uncertain that mean is closer to gray than any real colour, so outputs look washed out. The
calibration is one scalar per model, ``chroma_gain``: the smallest gain on the predicted a*b*
for which the colourfulness (Hasler and Suesstrunk) of the val split's outputs reaches a chosen
fraction of the ground truth's. It is fitted after training, stored in the model's card, and
applied wherever the model predicts (evaluation, colorization) through :func:`predict_ab`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from koala.colour import colourfulness, lab_to_rgb
from models.blocks import AB_SCALE

#: the gain is searched in [1, MAX_GAIN] to within GAIN_STEP
MAX_GAIN = 2.0
GAIN_STEP = 0.01


def predict_ab(model: nn.Module, light: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """a*b* in CIE units (B, 2, H, W), float32, with the model's ``chroma_gain`` applied."""
    return _with_gain(model, model(light, embedding))


def _with_gain(model: nn.Module, ab: torch.Tensor) -> torch.Tensor:
    """A prediction (a*b*/128) in CIE units, float32, times the model's ``chroma_gain``."""
    ab = ab.float() * AB_SCALE
    gain = float(getattr(model, "chroma_gain", 1.0))
    return (ab * gain).clamp(-128.0, 127.0) if gain != 1.0 else ab


def takes_hints(model: nn.Module) -> bool:
    """Whether ``model`` was built to take colour hints as input."""
    return bool(getattr(getattr(model, "config", None), "hints", False))


def predict_with_confidence(
    model: nn.Module,
    light: torch.Tensor,
    embedding: torch.Tensor,
    boxes: list[tuple[int, int, int, int]],
    hints: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[float | None]]:
    """:func:`predict_ab`, and each image's colour confidence: the mean over its real pixels
    (``boxes``) of the model's per-pixel confidence map (1 - normalised entropy of the
    predicted colour distribution); None for models that predict no distribution. ``hints``
    (models/chroma_unet.py hint_maps) go to a model that takes them."""
    if not hasattr(model, "predict"):
        return predict_ab(model, light, embedding), [None] * len(light)
    if hints is not None and takes_hints(model):
        ab, conf = model.predict(light, embedding, hints)
    else:
        ab, conf = model.predict(light, embedding)
    conf = F.interpolate(conf.float(), size=light.shape[-2:], mode="bilinear", align_corners=False)
    scores = [float(conf[i, 0, y0:y1, x0:x1].mean()) for i, (x0, y0, x1, y1) in enumerate(boxes)]
    return _with_gain(model, ab), scores


def view_rgb(light: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """RGB of L in [0, 1] (H, W) and a*b* (2, H, W)."""
    return lab_to_rgb(np.concatenate([light[..., None] * 100.0, ab.transpose(1, 2, 0)], -1))


def colourfulness_ratio(
    crops: list[tuple[np.ndarray, np.ndarray, np.ndarray]], gain: float
) -> float:
    """Mean colourfulness of the outputs with ``gain`` over that of the ground truth, for
    (L, predicted ab, true ab) crops of the real image box."""
    out = [colourfulness(view_rgb(lum, np.clip(p * gain, -128, 127))) for lum, p, _ in crops]
    true = [colourfulness(view_rgb(lum, t)) for lum, _, t in crops]
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
    ratio = lambda g: colourfulness_ratio(crops, g)  # noqa: E731
    return smallest_reaching(ratio, 1.0, MAX_GAIN, target, GAIN_STEP)


def smallest_reaching(
    ratio: Callable[[float], float], low: float, high: float, target: float, step: float = 0.01
) -> tuple[float, float, float]:
    """The smallest setting in [low, high] (to ``step``, by bisection: ``ratio`` grows with
    it) whose ratio reaches ``target``; ``high`` if none does. Returns (setting, ratio at
    ``low``, ratio at the setting)."""
    before = ratio(low)
    if before >= target:
        return low, before, before
    high_ratio = ratio(high)
    if high_ratio < target:
        return high, before, high_ratio
    while high - low > step:
        mid = round((low + high) / 2, 4)
        value = ratio(mid)
        low, high, high_ratio = (low, mid, value) if value >= target else (mid, high, high_ratio)
    return round(high, 3), before, high_ratio


#: the prior correction is searched in [0, MAX_PRIOR_CORRECTION]
MAX_PRIOR_CORRECTION = 2.0
#: val samples whose logits are kept for the search
DECODING_SAMPLES = 256


def collect_logits(model: nn.Module, batches: Iterable[dict], device: torch.device) -> list:
    """(L, logits, true ab, box) of up to :data:`DECODING_SAMPLES` val samples."""
    kept, n = [], 0
    model.eval()
    with torch.inference_mode():
        for b in batches:
            logits = model.logits(b["light"].to(device), b["embedding"].to(device)).float().cpu()
            for i in range(len(logits)):
                kept.append((b["light"][i : i + 1], logits[i : i + 1], b["ab"][i], b["box"][i]))
            n += len(logits)
            if n >= DECODING_SAMPLES:
                break
    return kept


def crops_at(model: nn.Module, kept: list, prior_correction: float) -> list:
    crops = []
    with torch.inference_mode():
        for light, logits, ab, box in kept:
            pred = model.decode(logits, light, prior_correction)[0].numpy() * AB_SCALE
            x0, y0, x1, y1 = box.tolist()
            crops.append(
                (
                    light[0, 0, y0:y1, x0:x1].numpy(),
                    pred[:, y0:y1, x0:x1],
                    ab[:, y0:y1, x0:x1].numpy() * AB_SCALE,
                )
            )
    return crops


def fit_prior_correction(
    model: nn.Module, batches: Iterable[dict], device: torch.device, target: float
) -> tuple[float, float, float]:
    """The smallest prior correction (to 0.01, by bisection: colour grows with it) whose val
    colourfulness ratio reaches ``target``, for a model that predicts a colour distribution;
    :data:`MAX_PRIOR_CORRECTION` if none does. Returns (alpha, ratio at 0, ratio at alpha)."""
    kept = collect_logits(model, batches, device)
    model.cpu()
    return smallest_reaching(
        lambda a: colourfulness_ratio(crops_at(model, kept, a), 1.0),
        0.0,
        MAX_PRIOR_CORRECTION,
        target,
    )
