"""Quantized a*b* space (Zhang, Isola and Efros, 2016): bins on a square grid restricted to the
colours the sRGB gamut can reach, soft encoding of a*b* onto them, the class-rebalancing prior
and annealed-mean decoding.

The in-gamut bins are computed, not shipped: every sRGB colour of a dense cube (97 levels per
channel) is converted to CIE Lab (D65, scikit-image) and its a*b* rounded to the nearest grid
centre (multiples of the grid size). For a grid of 10 this gives 261 bins spanning
a* in [-90, 100] and b* in [-110, 90], the same extent as the paper's 313; the paper does not say
how its extra bins were chosen (see docs/architecture.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

#: levels per sRGB channel sampled to find the reachable a*b*
CUBE_LEVELS = 97


@lru_cache(maxsize=1)
def _srgb_ab() -> np.ndarray:
    """a*b* of a dense sample of the sRGB cube (N, 2)."""
    from skimage.color import rgb2lab

    s = np.linspace(0.0, 1.0, CUBE_LEVELS)
    rgb = np.stack(np.meshgrid(s, s, s, indexing="ij"), -1).reshape(-1, 1, 3)
    return rgb2lab(rgb).reshape(-1, 3)[:, 1:]


@lru_cache(maxsize=64)
def _gamut(grid: float) -> np.ndarray:
    cells = np.round(_srgb_ab() / grid).astype(np.int64) + 4096  # non-negative cell indices
    keys = np.unique(cells[:, 0] * 8192 + cells[:, 1])  # sorted by a*, then b*
    return (np.stack([keys // 8192, keys % 8192], 1) - 4096).astype(np.float32) * grid


def gamut_bins(grid: float = 10.0) -> torch.Tensor:
    """Centres (Q, 2) of the grid cells (size ``grid`` in a*b* units) that sRGB colours reach."""
    if grid <= 0:
        raise ValueError(f"a*b* grid size must be positive, got {grid}")
    return torch.from_numpy(_gamut(float(grid)).copy())


def grid_for_bins(bins: int) -> float:
    """The grid size (to 0.5 a*b* units) whose gamut has the number of bins closest to ``bins``
    (e.g. 50 bins, the Pune paper's setting, is a grid of about 23)."""
    if bins < 2:
        raise ValueError(f"need at least 2 a*b* bins, got {bins}")
    low, high = 2.0, 80.0  # bisection: the count falls as the grid grows
    while high - low > 0.5:
        mid = round((low + high) / 2 * 2) / 2
        low, high = (mid, high) if len(_gamut(mid)) > bins else (low, mid)
    return min((low, high), key=lambda g: (abs(len(_gamut(g)) - bins), g))


def _pixels(ab: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) -> (B*H*W, 2)."""
    return ab.permute(0, 2, 3, 1).reshape(-1, 2).float()


def nearest_bins(ab: torch.Tensor, centres: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest bin of every pixel of a*b* (B, 2, H, W), as (B, H, W)."""
    b, _, h, w = ab.shape
    flat = _pixels(ab)
    out = torch.cat(
        [torch.cdist(flat[i : i + chunk], centres).argmin(1) for i in range(0, len(flat), chunk)]
    )
    return out.view(b, h, w)


def soft_encode(
    ab: torch.Tensor, centres: torch.Tensor, neighbours: int = 5, sigma: float = 5.0
) -> torch.Tensor:
    """Soft targets (B, Q, H, W): each pixel's ``neighbours`` nearest bins weighted by a Gaussian
    (``sigma`` in a*b* units) of their distance, summing to one."""
    b, _, h, w = ab.shape
    dist, idx = torch.cdist(_pixels(ab), centres).topk(neighbours, dim=1, largest=False)
    weights = torch.softmax(-(dist**2) / (2 * sigma**2), dim=1)  # normalised Gaussian
    target = torch.zeros(len(dist), len(centres), device=ab.device)
    target.scatter_(1, idx, weights)
    return target.view(b, h, w, -1).permute(0, 3, 1, 2)


#: a*b* values the candidate table covers: every integer of [-128, 127] on each axis
TABLE_RANGE = 256
#: candidates kept per integer a*b* beyond the neighbours asked for: a pixel lies within 0.71
#: of its integer point, so its true nearest bins are among the point's few nearest
SPARE_CANDIDATES = 4


def candidate_table(centres: torch.Tensor, neighbours: int = 5) -> torch.Tensor:
    """For every integer a*b* in [-128, 127]^2, its ``neighbours`` + :data:`SPARE_CANDIDATES`
    nearest bins: (256 * 256, K) indices, so that :func:`soft_targets` measures a pixel's
    distance to a handful of bins instead of to every bin."""
    axis = torch.arange(TABLE_RANGE, dtype=torch.float32) - TABLE_RANGE // 2
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    k = min(neighbours + SPARE_CANDIDATES, len(centres))
    return torch.cdist(grid, centres.float().cpu()).topk(k, dim=1, largest=False).indices


def soft_targets(
    ab: torch.Tensor,
    centres: torch.Tensor,
    table: torch.Tensor,
    neighbours: int = 5,
    sigma: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_encode` in sparse form: each pixel's ``neighbours`` nearest bins (B, K, H, W,
    nearest first) and their Gaussian weights (B, K, H, W), found among the candidates that
    ``table`` (:func:`candidate_table`) keeps for the pixel's integer a*b*."""
    half = TABLE_RANGE // 2
    q = ab.detach().round().long().clamp(-half, half - 1) + half
    cell = (q[:, 0] * TABLE_RANGE + q[:, 1]).reshape(-1)
    cand = table.to(ab.device)[cell]  # (N, C)
    pixels = _pixels(ab)
    dist2 = ((centres[cand] - pixels[:, None, :]) ** 2).sum(-1)  # (N, C)
    d2, pick = dist2.topk(neighbours, dim=1, largest=False)
    idx = cand.gather(1, pick)
    weights = torch.softmax(-d2 / (2 * sigma**2), dim=1)
    b, _, h, w = ab.shape
    shape = lambda t: t.view(b, h, w, -1).permute(0, 3, 1, 2)  # noqa: E731
    return shape(idx), shape(weights)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Decode class logits (B, Q, H, W) to a*b* (B, 2, H, W): the mean of the distribution
    sharpened by ``temperature`` (1 = the mean, towards 0 = the mode)."""
    scores = logits.float().movedim(1, -1)  # (B, H, W, Q): a free view of channels-last logits
    if temperature != 1.0:
        scores = scores / temperature
    probs = torch.softmax(scores, dim=-1)
    return (probs @ centres.to(probs)).movedim(-1, 1)


def bin_counts(ab: torch.Tensor, mask: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Histogram (Q,) of the nearest bins of the pixels where ``mask`` (B, 1, H, W) is set."""
    idx = nearest_bins(ab, centres)[mask[:, 0] > 0.5]
    return torch.bincount(idx, minlength=len(centres))


def rebalancing_weights(
    counts: torch.Tensor, centres: torch.Tensor, lam: float = 0.5, sigma: float = 5.0
) -> torch.Tensor:
    """Zhang et al.'s class rebalancing: w ~ 1 / ((1 - lam) p~ + lam / Q) with p~ the empirical
    bin distribution smoothed by a Gaussian (``sigma`` in a*b* units), normalised so that the
    expected weight under p~ is one."""
    smooth = smoothed_prior(counts, centres, sigma).double()
    w = 1.0 / ((1 - lam) * smooth + lam / len(centres))
    return (w / (smooth * w).sum()).float()


def smoothed_prior(counts: torch.Tensor, centres: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """The empirical bin distribution smoothed by a Gaussian (``sigma`` in a*b* units)."""
    p = counts.double() / counts.sum().clamp_min(1)
    kernel = torch.exp(-(torch.cdist(centres.double(), centres.double()) ** 2) / (2 * sigma**2))
    smooth = kernel @ (p / kernel.sum(0))  # every bin spreads its mass over its neighbours
    return (smooth / smooth.sum()).float()


def downsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Area-average ``x`` (B, C, H, W) to ``size`` (targets and masks at the logits' grid)."""
    return F.interpolate(x.float(), size=size, mode="area")
