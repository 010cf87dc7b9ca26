"""The NYU DS1008 conditional GAN: a U-Net generator conditioned on L and built on a pretrained
encoder, and a PatchGAN discriminator on (L, a*b*).

Generator: each contracting step is conv-BN-LeakyReLU (4x4, stride 2, pix2pix style) and its
output is concatenated with the frozen ImageNet EfficientNet-Lite0 features of L at the same
stride; the expanding path mirrors it with transposed convolutions and skips. Loss:
``-log D(G(x)) + lambda * |G(x) - y|_1`` (lambda 100 on a*b*/128, as in pix2pix) for G,
binary cross entropy on real and generated pairs for D; Adam at 2e-4 with beta1 0.5 for both
(configurable). Training alternates one D step and one G step per batch and logs both losses.
Padding pixels are zeroed before D sees a pair, so it judges only the photograph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.backbones import LITE0_CHANNELS, lite0_encoder, lite0_features
from models.base import Colorizer, make_optimizer
from models.blocks import conv_bn_lrelu, resize, up_bn_relu
from models.losses import adversarial_bce, masked_loss


@dataclass(frozen=True)
class GANConfig:
    width: int = 32
    l1_weight: float = 100.0
    lr: float = 2e-4
    beta1: float = 0.5
    pretrained: bool = True


class Generator(nn.Module):
    """L in [0, 1] -> a*b*/128; four contracting steps (strides 2 to 16) fused with the
    pretrained encoder's features at the same strides, four expanding steps."""

    def __init__(self, width: int, pretrained: bool) -> None:
        super().__init__()
        w = width
        chans = (w, 2 * w, 4 * w, 8 * w)
        downs, cin = [], 1
        for cout, feat in zip(chans, LITE0_CHANNELS, strict=False):
            downs.append(conv_bn_lrelu(cin, cout))
            cin = cout + feat
        self.downs = nn.ModuleList(downs)
        # the frozen features' scales vary a lot: normalise them before they join the path
        self.adapters = nn.ModuleList(nn.BatchNorm2d(c) for c in LITE0_CHANNELS[: len(chans)])
        ups = []
        for i in reversed(range(1, len(chans))):  # 16 -> 8 -> 4 -> 2, with skips
            skip = chans[i - 1] + LITE0_CHANNELS[i - 1]
            ups.append(up_bn_relu(cin, chans[i - 1]))
            cin = chans[i - 1] + skip
        self.ups = nn.ModuleList(ups)
        self.head = nn.ConvTranspose2d(cin, 2, 4, 2, 1)
        self.apply(_pix2pix_init)
        self.encoder = lite0_encoder(pretrained)  # after the initialisation: keeps ImageNet's

    def forward(self, light: torch.Tensor) -> torch.Tensor:
        pretrained = lite0_features(self.encoder, light, stages=len(self.downs))
        x, skips = light * 2.0 - 1.0, []
        for down, adapt, feat in zip(self.downs, self.adapters, pretrained, strict=True):
            x = down(x)
            x = torch.cat([x, adapt(resize(feat, x.shape[-2:]))], 1)
            skips.append(x)
        for up, skip in zip(self.ups, reversed(skips[:-1]), strict=True):
            x = up(x)
            x = torch.cat([resize(x, skip.shape[-2:]), skip], 1)
        return resize(torch.tanh(self.head(x)), light.shape[-2:])


class Discriminator(nn.Module):
    """PatchGAN: (L, a*b*/128) -> a grid of real/fake logits."""

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            conv_bn_lrelu(3, w, norm=False),
            conv_bn_lrelu(w, 2 * w),
            conv_bn_lrelu(2 * w, 4 * w),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1, bias=False),
            nn.BatchNorm2d(8 * w),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * w, 1, 4, 1, 1),
        )
        self.apply(_pix2pix_init)

    def forward(self, light: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([light * 2.0 - 1.0, ab], 1))


def _pix2pix_init(m: nn.Module) -> None:
    """pix2pix's initialisation: convolutions N(0, 0.02), batch norm scales N(1, 0.02)."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class GAN(Colorizer):
    """``forward(light, embedding=None)``: the generator's a*b*/128."""

    uses_embedding = False
    loss = "l1"
    frozen_encoder_statistics = True

    def __init__(self, config: GANConfig = GANConfig()) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config.width, config.pretrained)
        self.discriminator = Discriminator(config.width)
        for p in self.generator.encoder.parameters():
            p.requires_grad_(False)

    @property
    def encoder(self) -> nn.Module:
        return self.generator.encoder

    def forward(self, light: torch.Tensor, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(light)

    def objective(self, light, embedding, ab, mask):
        """The generator's reconstruction term, lambda * masked L1 (for validation)."""
        pred = self(light)
        return self.config.l1_weight * masked_loss("l1", pred, ab, mask), pred

    def optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """Adam for G and for D at the config's learning rate and beta1 (not the trainer's)."""
        betas = (self.config.beta1, 0.999)
        trainable = [p for p in self.generator.parameters() if p.requires_grad]
        return {
            "generator": make_optimizer("adam", trainable, self.config.lr, betas=betas),
            "discriminator": make_optimizer(
                "adam", self.discriminator.parameters(), self.config.lr, betas=betas
            ),
        }

    def discriminator_step(
        self, light: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor, opt: torch.optim.Optimizer
    ) -> float:
        """One D step on real pairs and (detached) generated ones; G is untouched."""
        with torch.no_grad():
            fake = self.generator(light)
        real_logits = self.discriminator(light, ab * mask)
        fake_logits = self.discriminator(light, fake * mask)
        loss = 0.5 * (adversarial_bce(real_logits, True) + adversarial_bce(fake_logits, False))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def generator_step(
        self, light: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor, opt: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One G step on -log D(G(x)) + lambda * L1; D's parameters get no gradient."""
        self.discriminator.requires_grad_(False)
        try:
            fake = self.generator(light)
            adversarial = adversarial_bce(self.discriminator(light, fake * mask), True)
            l1 = masked_loss("l1", fake, ab, mask)
            loss = adversarial + self.config.l1_weight * l1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        finally:
            self.discriminator.requires_grad_(True)
        return {"loss": loss.item(), "g_adversarial": adversarial.item(), "g_l1": l1.item()}

    def train_step(self, light, embedding, ab, mask, optimizers) -> dict[str, float]:
        """A D step, then a G step; logs D's loss and G's two terms."""
        d_loss = self.discriminator_step(light, ab, mask, optimizers["discriminator"])
        return {**self.generator_step(light, ab, mask, optimizers["generator"]), "d_loss": d_loss}
