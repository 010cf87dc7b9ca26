"""What every colorization network shares, so that one training loop, the evaluation, the
calibration and ``colorize-archive`` drive them all.

A :class:`Colorizer` maps L in [0, 1] (B, 1, H, W) and the global embedding (B, D) to a*b*/128
(B, 2, H, W) at the input's size. Training calls :meth:`Colorizer.train_step`, which by default
minimises :meth:`Colorizer.objective` with one optimizer; a model with its own scheme (the GAN's
alternating D and G steps) overrides both. Models whose objective needs statistics of the
training set (class rebalancing) compute them in :meth:`Colorizer.fit_prior`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models.losses import masked_loss

OPTIMIZERS = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "rmsprop": torch.optim.RMSprop,
}


#: the optimizers built fused (PyTorch's fused CPU and CUDA implementations)
FUSED = ("adam", "adamw")


def make_optimizer(
    name: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0, **kwargs
) -> torch.optim.Optimizer:
    """One of :data:`OPTIMIZERS` by name; Adam and AdamW in their fused form (one kernel for
    every parameter instead of a dozen small operations each: a tenth of a CPU step)."""
    if name in FUSED:
        kwargs.setdefault("fused", True)
    return OPTIMIZERS[name](list(params), lr=lr, weight_decay=weight_decay, **kwargs)


class Colorizer(nn.Module):
    """Base of the colorization networks (see the module docstring)."""

    #: whether forward uses the global embedding (without it, training may use random crops)
    uses_embedding = True
    #: the per-pixel loss of :meth:`objective` (a name in ``models.losses.LOSSES``)
    loss = "mse"
    #: optimizer of :meth:`optimizers` (a name in :data:`OPTIMIZERS`)
    optimizer = "adamw"
    #: a pretrained encoder (``self.encoder``) keeps its ImageNet batch-norm statistics
    frozen_encoder_statistics = False
    #: the chroma gain fitted by models/calibration.py (set from the card when loaded)
    chroma_gain = 1.0

    def objective(
        self,
        light: torch.Tensor,
        embedding: torch.Tensor,
        ab: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to minimise, predicted a*b*/128) on a batch; ``mask`` marks the real pixels."""
        pred = self(light, embedding)
        return masked_loss(self.loss, pred, ab, mask), pred

    def fit_prior(self, batches: Iterable[dict]) -> None:
        """Compute statistics of the training split that the objective needs (none here)."""

    def optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """The optimizers :meth:`train_step` uses, by name."""
        params = [p for p in self.parameters() if p.requires_grad]
        return {"model": make_optimizer(self.optimizer, params, lr, weight_decay)}

    def train_step(
        self,
        light: torch.Tensor,
        embedding: torch.Tensor,
        ab: torch.Tensor,
        mask: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> dict[str, float]:
        """One optimisation step; returns the losses to log (``loss`` is the one tracked)."""
        loss, _ = self.objective(light, embedding, ab, mask)
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The pretrained encoder's parameters that fine-tuning trains (all, by default)."""
        return list(self.encoder.parameters())

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze the pretrained encoder, or unfreeze its :meth:`encoder_parameters`."""
        self.encoder_trainable = trainable
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for p in self.encoder_parameters():
            p.requires_grad_(trainable)

    def train(self, mode: bool = True) -> Colorizer:
        super().train(mode)
        if self.frozen_encoder_statistics:  # ImageNet's batch-norm statistics, even when
            for m in self.encoder.modules():  # fine-tuning: our batches are small
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self
