"""Colorization metrics, each from a well-kept implementation where one exists.

PSNR and SSIM on RGB (scikit-image), a*b* mean absolute error (the GAN paper's MAE), a*b*
accuracy within thresholds and its area under the curve over 0..150 (Zhang et al.),
colourfulness (Hasler and Süsstrunk) and its gap to the ground truth, the saturation difference
of the Pune paper (mean HSV saturation), and FD-lite0: a Fréchet distance between ground-truth
and colorized EfficientNet-Lite0 pooled features (not Inception FID).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from skimage.color import rgb2hsv
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from koala.colour import colourfulness

AUC_THRESHOLDS = np.arange(0, 151)  # a*b* distance thresholds, Zhang et al.
REPORT_THRESHOLDS = (2, 5, 10, 20)
#: higher is better for these; lower for the rest (gaps and differences as absolute values)
HIGHER_IS_BETTER = {"psnr", "ssim", "ab_auc", "ab_acc_2", "ab_acc_5", "ab_acc_10", "ab_acc_20"}


def image_metrics(
    pred_rgb: np.ndarray, true_rgb: np.ndarray, pred_ab: np.ndarray, true_ab: np.ndarray
) -> dict[str, float]:
    """Per-image metrics: RGB uint8 (H, W, 3) and a*b* (H, W, 2) of prediction and truth."""
    dist = np.hypot(*(pred_ab - true_ab).transpose(2, 0, 1)).ravel()
    # share of pixels with distance <= t, for every integer t: a cumulative histogram
    counts = np.bincount(
        np.minimum(np.ceil(dist - 1e-6), 151).clip(0).astype(np.int64), minlength=152
    )
    within = np.cumsum(counts)[: len(AUC_THRESHOLDS)] / dist.size
    c_pred, c_true = colourfulness(pred_rgb), colourfulness(true_rgb)
    out = {
        "psnr": float(peak_signal_noise_ratio(true_rgb, pred_rgb, data_range=255)),
        "ssim": float(structural_similarity(true_rgb, pred_rgb, channel_axis=2, data_range=255)),
        "ab_mae": float(np.abs(pred_ab - true_ab).mean()),
        "ab_auc": float(within.mean()),
        "colourfulness": c_pred,
        "colourfulness_true": c_true,
        "colourfulness_gap": c_pred - c_true,
        "saturation_diff": float(
            abs(rgb2hsv(pred_rgb)[..., 1].mean() - rgb2hsv(true_rgb)[..., 1].mean())
        ),
    }
    for t in REPORT_THRESHOLDS:
        out[f"ab_acc_{t}"] = float(within[t])
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (N, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # singular when there are fewer images than dimensions
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
        if not np.isfinite(covmean).all():  # as FID implementations do: regularise and retry
            offset = np.eye(len(cov_a)) * 1e-6
            covmean, _ = linalg.sqrtm((cov_a + offset) @ (cov_b + offset), disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
