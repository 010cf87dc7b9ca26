"""Koala's flagship: colour as a distribution, predicted at a quarter of the resolution and
brought back up along the picture's own edges.

- Encoder: EfficientNet-Lite0 (ImageNet weights), frozen for ``finetune_after`` epochs and then
  fine-tuned (blocks from ``finetune_from`` on) at a tenth of the learning rate; the global
  embedding of the 299 view is fused in at stride 32.
- Decoder: a light U-Net that stops at stride 4 and classifies every pixel of that grid over the
  in-gamut a*b* bins (models/ab_bins.py), trained with the cross entropy against soft-encoded
  targets (optionally rebalanced); the entropy of the distribution is the per-pixel confidence.
- Decoding: the annealed mean (``temperature`` 1: the mean, the PSNR-optimal point) of the
  distribution with ``prior_correction`` x log(training prior) taken from its logits (0: the
  model's own posterior; calibration fits it on val to a colourfulness target), then a fast
  guided filter (He and Sun, 2015) that upsamples the quarter-resolution a*b* guided by the
  input's own L, so colour stops at edges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models import ab_bins
from models.backbones import LITE0_CHANNELS, LITE0_INFO, lite0_encoder, lite0_features
from models.base import Colorizer, make_optimizer
from models.blocks import AB_SCALE, FusionLayer, conv_bn_lrelu
from models.losses import adversarial_bce, box_mask, chroma_loss
from models.unet import UpBlock

#: training samples whose a*b* make the prior of the prior correction
PRIOR_SAMPLES = 4000
#: decoder widths at strides 32 (after fusion), 16, 8 and 4, by decoder design
DECODER_CHANNELS = {"classic": (256, 160, 128, 128), "lite": (256, 160, 96, 64)}
#: the decoder stages (counted from stride 16) built of depthwise-separable blocks, by design
SEPARABLE_FROM = {"classic": 3, "lite": 1}
#: the encoder stages used: strides 4 to 32 (the stride-2 features are left to the guided filter)
ENCODER_STAGES = LITE0_CHANNELS[1:]


@dataclass(frozen=True)
class ChromaUNetConfig:
    embedding_dim: int = LITE0_INFO.embedding_dim
    pretrained: bool = True
    #: the decoder's design: ``lite`` (strides 8 and 4 in depthwise-separable blocks, 96 and
    #: 64 channels: about a fifth of ``classic``'s training step there) or ``classic`` (3x3
    #: convolutions at 128 channels, the design of the models shipped before 2026-12-06)
    decoder: str = "lite"
    freeze_encoder: bool = True
    #: unfreeze the encoder (at a tenth of the learning rate) after this many epochs
    finetune_after: int | None = 1
    #: fine-tune the encoder's blocks from this one on (5: the stride-16 and -32 stages; 0: all)
    finetune_from: int = 5
    #: a*b* grid size of the bins
    grid: float = 10.0
    #: annealed-mean temperature of decoding (1: the mean of the distribution)
    temperature: float = 1.0
    #: prior correction (logit adjustment) of decoding: alpha * log(training prior) is taken
    #: from the logits, so colours the training set makes common (near-neutral ones) no
    #: longer win where the model is unsure; 0: the model's own posterior. Calibration fits it.
    prior_correction: float = 0.0
    #: lambda of Zhang's class rebalancing (1 = none; 0.5 = the paper's)
    rebalance: float = 1.0
    #: weight of the chroma term (models/losses.py chroma_loss) on the distribution's mean:
    #: it asks the decoded colour to be as vivid as the truth, so the model commits to a hue
    #: where it can instead of averaging to gray (0: cross entropy alone)
    colour_weight: float = 0.0
    #: weight of the adversarial term (a PatchGAN on the quarter grid judging L with the
    #: distribution's mean a*b*: the decoded colour itself must look like a photograph's,
    #: which the cross entropy's mean, averaging over plausible hues, does not ask); 0: none
    adversarial_weight: float = 0.0
    #: the discriminator's width and its Adam learning rate (beta1 0.5, as in pix2pix)
    discriminator_width: int = 32
    discriminator_lr: float = 2e-4
    #: take colour hints (Zhang et al. 2017): their a*b* and mask enter every decoder stage
    #: through a 1x1 projection initialised to zero (so a model started from one without them
    #: predicts exactly as it did); training samples hints from the truth
    hints: bool = False
    #: share of training samples given no hints (the model stays the automatic one without)
    hint_free: float = 0.5
    #: the others get a geometric number of hints (mean 1 / hint_p), each the truth's mean
    #: a*b* over a square of 1 to 5 pixels at a random real pixel
    hint_p: float = 0.125
    #: train the hint inputs alone: everything else stays as the model started, so without
    #: hints it predicts exactly as the automatic model it was started from
    hints_only: bool = False
    neighbours: int = 5
    sigma: float = 5.0
    #: guided upsampling: window radius (pixels of the quarter grid) and regulariser (L in [0, 1])
    guide_radius: int = 1
    guide_eps: float = 1e-3


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2 radius + 1)^2 windows, windows clipped at the borders."""
    k = 2 * radius + 1
    return F.avg_pool2d(x, k, stride=1, padding=radius, count_include_pad=False)


def guided_upsample(
    light: torch.Tensor, ab_low: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """Fast guided filter: a*b* (B, 2, h, w) to the size of L (B, 1, H, W), as a local linear
    function of L fitted on the low grid (so chroma edges follow L's edges)."""
    low = F.interpolate(light, size=ab_low.shape[-2:], mode="area")
    mean_l, mean_ab = box_mean(low, radius), box_mean(ab_low, radius)
    cov = box_mean(low * ab_low, radius) - mean_l * mean_ab
    var = box_mean(low * low, radius) - mean_l * mean_l
    a = cov / (var + eps)
    b = mean_ab - a * mean_l
    size = light.shape[-2:]
    a_up = F.interpolate(box_mean(a, radius), size=size, mode="bilinear", align_corners=False)
    b_up = F.interpolate(box_mean(b, radius), size=size, mode="bilinear", align_corners=False)
    return a_up * light + b_up


class SeparableUpBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, mix to ``cout`` with a 1x1
    convolution, then two residual depthwise-separable 3x3 steps (MobileNet's): the large grids
    of the decoder at a small fraction of two full 3x3 convolutions' cost."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.mix = pointwise(cin + skip, cout)
        self.steps = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cout, cout, 3, padding=1, groups=cout, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                pointwise(cout, cout),
            )
            for _ in range(2)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.mix(torch.cat([x, skip], 1))
        for step in self.steps:
            x = x + step(x)
        return x


def pointwise(cin: int, cout: int) -> nn.Sequential:
    """1x1 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ChromaUNet(Colorizer):
    """``forward(light, embedding)``: L in [0, 1] (B, 1, H, W) -> a*b*/128 (B, 2, H, W);
    :meth:`logits` gives the bin scores at a quarter of the size."""

    uses_embedding = True
    loss = "cross_entropy"
    frozen_encoder_statistics = True

    def __init__(self, config: ChromaUNetConfig = ChromaUNetConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder = lite0_encoder(config.pretrained)
        centres = ab_bins.gamut_bins(config.grid)
        self.register_buffer("centres", centres)
        self.register_buffer("class_weights", torch.ones(len(centres)))
        #: log of the training split's smoothed bin distribution (set by fit_prior)
        self.register_buffer("log_prior", torch.zeros(len(centres)))
        if config.decoder not in DECODER_CHANNELS:
            raise ValueError(f"decoder {config.decoder!r}: choose from {sorted(DECODER_CHANNELS)}")
        widths = DECODER_CHANNELS[config.decoder]
        self.fusion = FusionLayer(ENCODER_STAGES[-1], config.embedding_dim, widths[0])
        ups, cin = [], widths[0]
        skips = reversed(ENCODER_STAGES[:-1])
        for i, (skip, cout) in enumerate(zip(skips, widths[1:], strict=True)):
            block = SeparableUpBlock if i >= SEPARABLE_FROM[config.decoder] else UpBlock
            ups.append(block(cin, skip, cout))
            cin = cout
        self.ups = nn.ModuleList(ups)
        self.classify = nn.Conv2d(cin, len(centres), 1)
        if config.hints:
            self.hint_inputs = nn.ModuleList(HintInput(w) for w in widths)
        if config.adversarial_weight:
            self.discriminator = QuarterDiscriminator(config.discriminator_width)
        self.temperature = config.temperature
        self.prior_correction = config.prior_correction
        self.set_encoder_trainable(not config.freeze_encoder)
        if config.hints and config.hints_only:
            for name, p in self.named_parameters():
                p.requires_grad_(name.startswith("hint_inputs."))

    def train(self, mode: bool = True) -> ChromaUNet:
        super().train(mode)
        if self.config.hints and self.config.hints_only:  # nothing but the hint inputs moves:
            for name, child in self.named_children():  # no batch-norm statistics either
                if name != "hint_inputs":
                    child.eval()
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder blocks from ``finetune_from`` on (the cheap, semantic, low-resolution
        ones: backpropagation stops there, so fine-tuning costs little on a CPU); none when
        only the hint inputs train."""
        if self.config.hints and self.config.hints_only:
            return []
        blocks = self.encoder._blocks[self.config.finetune_from :]
        return [p for block in blocks for p in block.parameters()]

    def logits(
        self, light: torch.Tensor, embedding: torch.Tensor, hints: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Bin scores (B, Q, H/4, W/4); ``hints`` (B, 3, H, W: a*b*/128 times the mask, and
        the mask) reach a model built to take them (:func:`hint_maps`). Such a model given
        none reads empty maps, as its hint-free training samples did."""
        skips = lite0_features(self.encoder, light)[1:]
        x = self.fusion(skips[-1], embedding)
        take = self.config.hints
        if take and hints is None:
            hints = light.new_zeros(light.shape[0], 3, *light.shape[-2:])
        if take:
            x = self.hint_inputs[0](x, hints)
        for i, (up, skip) in enumerate(zip(self.ups, reversed(skips[:-1]), strict=True)):
            x = up(x, skip)
            if take:
                x = self.hint_inputs[i + 1](x, hints)
        return self.classify(x)

    def decode(
        self, logits: torch.Tensor, light: torch.Tensor, prior_correction: float | None = None
    ) -> torch.Tensor:
        """Annealed-mean a*b*/128 of the prior-corrected distribution, guided-upsampled to the
        size of ``light``."""
        alpha = self.prior_correction if prior_correction is None else prior_correction
        adjusted = logits.float() - alpha * self.log_prior.view(1, -1, 1, 1)
        ab = ab_bins.annealed_mean(adjusted, self.centres, self.temperature) / AB_SCALE
        cfg = self.config
        return guided_upsample(light.float(), ab, cfg.guide_radius, cfg.guide_eps).clamp(-1, 1)

    def forward(
        self, light: torch.Tensor, embedding: torch.Tensor, hints: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.decode(self.logits(light, embedding, hints), light)

    def predict(
        self, light: torch.Tensor, embedding: torch.Tensor, hints: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """a*b*/128 and the per-pixel confidence map (B, 1, H/4, W/4) of
        :func:`confidence_map`; the caller averages it over each image's real pixels."""
        logits = self.logits(light, embedding, hints).float()  # once, for both
        return self.decode(logits, light), confidence_map(logits)

    def fit_prior(self, batches: Iterable[dict]) -> None:
        """The training split's smoothed a*b* bin distribution (from up to
        :data:`PRIOR_SAMPLES` samples, on the stride-4 grid), and the rebalancing weights when
        rebalancing; none of it when only the hint inputs train (the model stays as it
        started)."""
        if self.config.hints and self.config.hints_only:
            return
        counts = torch.zeros(len(self.centres), dtype=torch.long)
        centres, n = self.centres.cpu(), 0
        for b in batches:
            size = (b["ab"].shape[-2] // 4, b["ab"].shape[-1] // 4)
            mask = ab_bins.downsample(box_mask(b["box"], b["ab"].shape[-2:]), size) > 0.5
            ab = ab_bins.downsample(b["ab"], size) * AB_SCALE
            counts += ab_bins.bin_counts(ab, mask.float(), centres)
            n += len(ab)
            if n >= PRIOR_SAMPLES:
                break
        prior = ab_bins.smoothed_prior(counts, centres)
        self.log_prior.copy_(prior.clamp_min(1e-8).log().to(self.log_prior))
        if self.config.rebalance < 1.0:
            weights = ab_bins.rebalancing_weights(counts, centres, self.config.rebalance)
            self.class_weights.copy_(weights.to(self.class_weights))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # weights saved before the prior existed decode with the plain posterior
        state_dict.setdefault(prefix + "log_prior", torch.zeros_like(self.log_prior))
        # weights of a model without hints: its hint inputs start at zero (the same model)
        if self.config.hints:
            for name, value in self.hint_inputs.state_dict().items():
                state_dict.setdefault(f"{prefix}hint_inputs.{name}", value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """The network's optimizer, and the discriminator's (Adam, beta1 0.5) when adversarial."""
        if not self.config.adversarial_weight:
            return super().optimizers(lr, weight_decay)
        own = [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("discriminator.")
        ]
        d_lr = self.config.discriminator_lr
        return {
            "model": make_optimizer(self.optimizer, own, lr, weight_decay),
            "discriminator": make_optimizer(
                "adam", self.discriminator.parameters(), d_lr, betas=(0.5, 0.999)
            ),
        }

    def _terms(self, light, embedding, ab, mask) -> _Terms:
        """Logits, the soft-target (rebalanced) cross entropy and the quarter-grid truth;
        in training, a hint-taking model gets hints sampled from the truth."""
        cfg = self.config
        hints = None
        if cfg.hints and self.training:
            hints = sample_hints(ab, mask, cfg.hint_free, cfg.hint_p)
        logits = self.logits(light, embedding, hints)
        size = logits.shape[-2:]
        target_ab = ab_bins.downsample(ab, size) * AB_SCALE
        real = ab_bins.downsample(mask, size)[:, 0]
        idx, weights = ab_bins.soft_targets(
            target_ab, self.centres, self._candidates(), cfg.neighbours, cfg.sigma
        )
        ce = -(weights * torch.log_softmax(logits.float(), dim=1).gather(1, idx)).sum(1)
        weight = real * self.class_weights[idx[:, 0]] if cfg.rebalance < 1.0 else real
        loss = (ce * weight).sum() / real.sum().clamp_min(1.0)
        return _Terms(logits, loss, target_ab / AB_SCALE, real[:, None])

    def _candidates(self) -> torch.Tensor:
        """The bins' candidate table for soft encoding (built once; not part of the weights)."""
        if getattr(self, "_table", None) is None:
            self._table = ab_bins.candidate_table(self.centres, self.config.neighbours)
        return self._table

    def _mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The (uncorrected) distribution's mean a*b*/128 on the quarter grid."""
        return ab_bins.annealed_mean(logits.float(), self.centres, 1.0) / AB_SCALE

    def objective(self, light, embedding, ab, mask):
        """(Rebalanced) cross entropy against soft-encoded targets on the quarter grid, plus
        ``colour_weight`` x the chroma term on the mean of the (uncorrected) distribution."""
        t = self._terms(light, embedding, ab, mask)
        loss = t.ce
        if self.config.colour_weight:
            term = chroma_loss(self._mean(t.logits), t.target_ab, t.real)
            loss = loss + self.config.colour_weight * term
        return loss, None if self.training else self.decode(t.logits, light)  # train_step drops it

    def train_step(self, light, embedding, ab, mask, optimizers) -> dict[str, float]:
        """One step; with an adversarial weight, a discriminator step on the quarter grid
        (true a*b* against the detached mean) and then the network's step with its term."""
        if not self.config.adversarial_weight:
            return super().train_step(light, embedding, ab, mask, optimizers)
        t = self._terms(light, embedding, ab, mask)
        mean = self._mean(t.logits) * t.real
        light_low = ab_bins.downsample(light, mean.shape[-2:])
        d_loss = self.discriminator_step(light_low, t.target_ab * t.real, mean.detach(), optimizers)
        self.discriminator.requires_grad_(False)
        try:
            adversarial = adversarial_bce(self.discriminator(light_low, mean), True)
        finally:
            self.discriminator.requires_grad_(True)
        loss = t.ce + self.config.adversarial_weight * adversarial
        if self.config.colour_weight:
            loss = loss + self.config.colour_weight * chroma_loss(mean, t.target_ab, t.real)
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {
            "loss": loss.item(),
            "ce": t.ce.item(),
            "g_adversarial": adversarial.item(),
            "d_loss": d_loss,
        }

    def discriminator_step(self, light_low, real_ab, fake_ab, optimizers) -> float:
        """One step of the discriminator on true and generated (detached) quarter-grid pairs."""
        real = self.discriminator(light_low, real_ab)
        fake = self.discriminator(light_low, fake_ab)
        loss = 0.5 * (adversarial_bce(real, True) + adversarial_bce(fake, False))
        opt = optimizers["discriminator"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()


@dataclass
class _Terms:
    logits: torch.Tensor
    ce: torch.Tensor
    #: the truth's a*b*/128 and the real-pixel mask (B, 1, h, w) on the quarter grid
    target_ab: torch.Tensor
    real: torch.Tensor


class QuarterDiscriminator(nn.Module):
    """PatchGAN on the quarter grid: (L, a*b*/128) at the logits' size -> real/fake logits
    over patches about a third of the picture wide (cheap: the grid is 1/16 of the pixels)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            conv_bn_lrelu(w, 2 * w),
            conv_bn_lrelu(2 * w, 4 * w),
            nn.Conv2d(4 * w, 1, 3, 1, 1),
        )

    def forward(self, light: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([light * 2.0 - 1.0, ab], 1).to(light.dtype))


def confidence_map(logits: torch.Tensor) -> torch.Tensor:
    """1 - entropy / log(Q) of the predicted distribution, per pixel (B, 1, h, w) in [0, 1]."""
    logp = torch.log_softmax(logits.float().movedim(1, -1), dim=-1)  # channels-last: no copy
    entropy = -(logp.exp() * logp).sum(-1).unsqueeze(1)
    return 1.0 - entropy / torch.log(torch.tensor(float(logits.shape[1])))


class HintInput(nn.Module):
    """Colour hints at one decoder stage: on its grid, each cell's hinted share and the mean
    hinted a*b*/128 there, projected to the stage's channels and added. The projection has no
    biases, so a cell without a hint gets exactly nothing (the hinted flag is the bias where
    there is one), and its last convolution starts at zero, so the stage starts as it was."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(3, width, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 1, bias=False),
        )
        nn.init.zeros_(self.project[-1].weight)

    def forward(self, x: torch.Tensor, hints: torch.Tensor) -> torch.Tensor:
        cells = F.interpolate(hints.float(), size=x.shape[-2:], mode="area")
        share = cells[:, 2:]
        hinted = (share > 0).float()
        colour = cells[:, :2] / share.clamp_min(1e-6) * hinted
        return x + self.project(torch.cat([colour, hinted], 1).to(x.dtype))


def hint_maps(
    boxes: list[list[tuple[int, int, int, int]]],
    colours: list[list[tuple[float, float]]],
    size: int,
) -> torch.Tensor:
    """Hints drawn as the model takes them: (B, 3, size, size) of a*b*/128 times the mask,
    and the mask, from each image's ``boxes`` (view pixels, right and bottom exclusive) and
    their a*b* ``colours`` (CIE units); later hints win where they overlap."""
    maps = torch.zeros(len(boxes), 3, size, size)
    for i, (image_boxes, image_colours) in enumerate(zip(boxes, colours, strict=True)):
        for (left, top, right, bottom), (a, b) in zip(image_boxes, image_colours, strict=True):
            maps[i, 0, top:bottom, left:right] = a / AB_SCALE
            maps[i, 1, top:bottom, left:right] = b / AB_SCALE
            maps[i, 2, top:bottom, left:right] = 1.0
    return maps


def sample_hints(
    ab: torch.Tensor, mask: torch.Tensor, free: float, p: float, generator=None
) -> torch.Tensor:
    """Training hints from the truth ``ab`` (B, 2, H, W, a*b*/128) on its real pixels
    ``mask`` (B, 1, H, W), as :func:`hint_maps` draws them: none for a ``free`` share of the
    images; for the others a geometric number (parameter ``p``) of squares of 1 to 5 pixels,
    each holding the truth's mean a*b* over it (Zhang et al. 2017)."""
    b, _, h, w = ab.shape
    maps = torch.zeros(b, 3, h, w, device=ab.device)
    draw = torch.rand(b, generator=generator)
    counts = torch.distributions.Geometric(probs=torch.tensor(p)).sample((b,)).long() + 1
    for i in range(b):
        real = mask[i, 0].nonzero()
        if draw[i] < free or len(real) == 0:
            continue
        picks = real[torch.randint(len(real), (int(counts[i]),), generator=generator)]
        halves = torch.randint(0, 3, (len(picks),), generator=generator)
        for (y, x), half in zip(picks.tolist(), halves.tolist(), strict=True):
            top, left = max(0, y - half), max(0, x - half)
            bottom, right = min(h, y + half + 1), min(w, x + half + 1)
            maps[i, :2, top:bottom, left:right] = ab[i, :, top:bottom, left:right].mean((1, 2))[
                :, None, None
            ]
            maps[i, 2, top:bottom, left:right] = 1.0
    return maps
