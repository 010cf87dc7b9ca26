"""Losses on a*b* (scaled to [-1, 1]) that ignore the white padding around the real image."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = {
    "mse": lambda p, t, **_: F.mse_loss(p, t, reduction="none"),
    "huber": lambda p, t, delta=0.1, **_: F.huber_loss(p, t, reduction="none", delta=delta),
    "l1": lambda p, t, **_: F.l1_loss(p, t, reduction="none"),
    "smooth_l1": lambda p, t, beta=0.05, **_: F.smooth_l1_loss(p, t, reduction="none", beta=beta),
}


def masked_loss(
    name: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, **kwargs: float
) -> torch.Tensor:
    """Mean of the element-wise loss over the pixels where ``mask`` (B, 1, H, W) is 1; a
    fractional mask weights pixels (class rebalancing), normalised by the mask's sum."""
    per_pixel = LOSSES[name](pred.float(), target.float(), **kwargs)
    weight = mask.expand_as(per_pixel).float()
    return (per_pixel * weight).sum() / mask.expand_as(per_pixel).float().sum().clamp_min(1.0)


def chroma_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of | |ab_pred| - |ab_true| |: penalises washed-out (sepia) predictions
    without forcing a hue, so vividness can be pushed up where regression losses shrink it."""
    diff = (pred.float().norm(dim=1, keepdim=True) - target.float().norm(dim=1, keepdim=True)).abs()
    return (diff * mask).sum() / mask.sum().clamp_min(1.0)


def adversarial_bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross entropy of a discriminator's logits against "real" (1) or "generated" (0)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def box_mask(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) float mask, 1 inside each (x0, y0, x1, y1) box (x1, y1 exclusive)."""
    h, w = size
    ys = torch.arange(h, device=boxes.device).view(1, h, 1)
    xs = torch.arange(w, device=boxes.device).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return inside.unsqueeze(1).float()
