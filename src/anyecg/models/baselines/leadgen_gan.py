"""Adversarial lead generation: a 1-D U-Net generator maps the present leads to the target leads; a
convolutional critic judges (input, output) pairs. The CGAN and WGAN baselines of the AnyECG paper.

- CGAN (Mirza & Osindero 2014) in the pix2pix form (Isola et al. 2017): the discriminator sees the
  input leads beside real or generated targets and scores overlapping patches (non-saturating
  binary cross-entropy); the generator adds an L1 term that ties it to the real leads.
- WGAN-GP (Gulrajani et al. 2017): the critic scores the mean over patches without a sigmoid and is
  kept 1-Lipschitz by a gradient penalty on random interpolates of real and generated targets;
  the same L1 term is added for the generator.

    generator      x [B, C_in, T] --U-Net (len(widths) levels, skips)--> y_hat [B, C_out, T]
    discriminator  [x | y] [B, C_in + C_out, T] --strided convs--> patch scores [B, T']

GroupNorm (per sample) rather than BatchNorm in both: the gradient penalty is defined per sample.

Training alternates two optimisers, so it does not go through `anyecg.training.loop` (one loss,
one optimiser per step): `GanTrainer` is its own short loop. `training_step(x, y)` runs
`n_critic` discriminator updates then one generator update and returns both losses; `fit` repeats it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import LeadGenConfig
from anyecg.models.contract import checked_input

LOSSES = ("cgan", "wgan_gp")


@dataclass
class LeadGenGANConfig(LeadGenConfig):
    widths: tuple[int, ...] = (32, 64, 128)  # generator channels per U-Net level (the last is the bottleneck)
    disc_widths: tuple[int, ...] = (32, 64, 128)  # discriminator channels per stride-2 conv
    kernel_size: int = 9
    loss: str = "wgan_gp"  # "cgan" or "wgan_gp"
    l1_weight: float = 100.0  # weight of the L1 term in the generator loss (pix2pix's 100)
    gp_weight: float = 10.0  # gradient penalty weight (WGAN-GP's 10)

    def __post_init__(self):
        super().__post_init__()
        self.widths, self.disc_widths = tuple(self.widths), tuple(self.disc_widths)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.kernel_size % 2 == 0 or not self.widths or not self.disc_widths:
            raise ValueError(
                f"need an odd kernel_size and non-empty widths, got kernel_size {self.kernel_size}, "
                f"widths {self.widths}, disc_widths {self.disc_widths}"
            )


def conv_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """Conv1d + GroupNorm + LeakyReLU(0.2); length ceil(T / stride)."""
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2),
        nn.GroupNorm(math.gcd(8, out_channels), out_channels),
        nn.LeakyReLU(0.2),
    )


class UNetGenerator(nn.Module):
    """Encoder halves the length at each level, decoder doubles it back and concatenates the skip."""

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...], kernel_size: int):
        super().__init__()
        k = kernel_size
        self.stem = nn.Sequential(conv_block(in_channels, widths[0], k), conv_block(widths[0], widths[0], k))
        self.down, self.up, self.merge = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(len(widths) - 1):  # level i -> i + 1: half the length, widths[i + 1] channels
            self.down.append(nn.Sequential(
                conv_block(widths[i], widths[i + 1], k, stride=2), conv_block(widths[i + 1], widths[i + 1], k)
            ))
        for i in reversed(range(len(widths) - 1)):  # level i + 1 -> i: double the length, merge the skip
            self.up.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), conv_block(widths[i + 1], widths[i], k)
            ))
            self.merge.append(conv_block(2 * widths[i], widths[i], k))
        self.out = nn.Conv1d(widths[0], out_channels, 1)
        self.factor = 2 ** (len(widths) - 1)  # total downsampling

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[-1]
        x = F.pad(x, (0, -T % self.factor))  # [B, C_in, T'], T' a multiple of the downsampling
        skips = [self.stem(x)]  # [B, widths[0], T']
        for down in self.down:
            skips.append(down(skips[-1]))  # [B, widths[i + 1], T' / 2^(i + 1)]
        h = skips.pop()  # bottleneck
        for up, merge in zip(self.up, self.merge):
            h = up(h)  # [B, widths[i], 2 x length]
            h = merge(torch.cat([h, skips.pop()], dim=1))  # [B, widths[i], length of the skip]
        return self.out(h)[..., :T]  # [B, C_out, T]


class PatchDiscriminator(nn.Module):
    """Scores each receptive-field patch of the (input, target) pair: [B, C, T] -> [B, T / 2^len(widths)]."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernel_size: int):
        super().__init__()
        channels = (in_channels,) + widths
        self.convs = nn.Sequential(
            *[conv_block(channels[i], channels[i + 1], kernel_size, stride=2) for i in range(len(widths))]
        )
        self.score = nn.Conv1d(widths[-1], 1, kernel_size, padding=kernel_size // 2)

    def forward(self, pair: Tensor) -> Tensor:
        return self.score(self.convs(pair)).squeeze(1)  # [B, T'']


class LeadGenGAN(nn.Module):
    def __init__(self, config: LeadGenGANConfig):
        super().__init__()
        c = config
        self.config = config
        self.contract = c.contract
        self.generator = UNetGenerator(len(c.leads), len(c.target_leads), c.widths, c.kernel_size)
        self.discriminator = PatchDiscriminator(len(c.leads) + len(c.target_leads), c.disc_widths, c.kernel_size)

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """x [B, C_in, T] -> generated target leads [B, C_out, T]."""
        return self.generator(checked_input(x, lead_mask, self.contract))

    def discriminate(self, x: Tensor, y: Tensor) -> Tensor:
        """Patch scores [B, T''] (logits for CGAN, critic values for WGAN-GP) of targets y given inputs x."""
        return self.discriminator(torch.cat([x, y], dim=1))

    def check_target(self, y: Tensor, x: Tensor) -> None:
        expected = (x.shape[0], len(self.config.target_leads), x.shape[-1])
        if tuple(y.shape) != expected:
            raise ValueError(
                f"target shape {tuple(y.shape)} does not match {list(expected)} "
                f"({len(self.config.target_leads)} target leads {list(self.config.target_leads)})"
            )


def gradient_penalty(model: LeadGenGAN, x: Tensor, real: Tensor, fake: Tensor) -> Tensor:
    """E[(||grad_y critic(x, y)||_2 - 1)^2] at y = eps * real + (1 - eps) * fake, eps ~ U(0, 1) per sample."""
    eps = torch.rand(real.shape[0], 1, 1, device=real.device, dtype=real.dtype)  # [B, 1, 1]
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)  # [B, C_out, T]
    score = model.discriminate(x, mixed).mean(dim=1)  # [B]
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)  # [B, C_out, T]
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def discriminator_loss(model: LeadGenGAN, x: Tensor, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, gradient penalty or 0) for one discriminator update; fake must be detached."""
    real_score, fake_score = model.discriminate(x, real), model.discriminate(x, fake)  # [B, T''] each
    if model.config.loss == "cgan":
        loss = (F.binary_cross_entropy_with_logits(real_score, torch.ones_like(real_score))
                + F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score)))
        return loss, torch.zeros((), device=x.device)
    penalty = gradient_penalty(model, x, real, fake)
    return fake_score.mean() - real_score.mean() + model.config.gp_weight * penalty, penalty.detach()


def generator_loss(model: LeadGenGAN, x: Tensor, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(total, adversarial, L1) for one generator update; fake carries the generator's graph."""
    fake_score = model.discriminate(x, fake)  # [B, T'']
    if model.config.loss == "cgan":
        adversarial = F.binary_cross_entropy_with_logits(fake_score, torch.ones_like(fake_score))
    else:
        adversarial = -fake_score.mean()
    l1 = F.l1_loss(fake, real)
    return adversarial + model.config.l1_weight * l1, adversarial, l1


@dataclass
class GanTrainConfig:
    lr: float = 2e-4
    betas: tuple[float, float] | None = None  # None: WGAN-GP's (0.0, 0.9), or pix2pix's (0.5, 0.999) for CGAN
    n_critic: int | None = None  # discriminator updates per generator update; None: 5 for WGAN-GP, 1 for CGAN

    def resolved(self, loss: str) -> "GanTrainConfig":
        """This config with the reference settings of `loss` ("cgan" or "wgan_gp") filled in."""
        wgan = loss == "wgan_gp"
        return GanTrainConfig(
            lr=self.lr,
            betas=self.betas if self.betas is not None else ((0.0, 0.9) if wgan else (0.5, 0.999)),
            n_critic=self.n_critic if self.n_critic is not None else (5 if wgan else 1),
        )


@dataclass
class GanStepOutput:
    d_loss: float
    g_loss: float
    g_adversarial: float
    l1: float
    gradient_penalty: float


class GanTrainer:
    """Alternating updates with one Adam optimiser per network, on the model's device."""

    def __init__(self, model: LeadGenGAN, config: GanTrainConfig | None = None):
        self.model = model
        self.config = config = (config or GanTrainConfig()).resolved(model.config.loss)
        self.opt_g = torch.optim.Adam(model.generator.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=config.lr, betas=config.betas)

    def training_step(self, x: Tensor, y: Tensor, lead_mask: Tensor | None = None) -> GanStepOutput:
        """n_critic discriminator updates, then one generator update.

        x [B, C_in, T]: input leads; y [B, C_out, T]: the real target leads; lead_mask [B, C_in] optional.
        """
        model = self.model
        device = next(model.parameters()).device
        x, y = x.to(device), y.to(device)
        x = checked_input(x, None if lead_mask is None else lead_mask.to(device), model.contract)
        model.check_target(y, x)
        model.train()

        model.discriminator.requires_grad_(True)
        for _ in range(self.config.n_critic):
            with torch.no_grad():
                fake = model.generator(x)  # [B, C_out, T]
            d_loss, penalty = discriminator_loss(model, x, y, fake)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

        model.discriminator.requires_grad_(False)  # the generator's loss backpropagates through D without updating it
        fake = model.generator(x)
        g_loss, adversarial, l1 = generator_loss(model, x, y, fake)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        model.discriminator.requires_grad_(True)
        return GanStepOutput(d_loss.item(), g_loss.item(), adversarial.item(), l1.item(), penalty.item())

    def fit(self, batches: Iterable[tuple[Tensor, Tensor]], max_steps: int) -> list[GanStepOutput]:
        """Run training_step on (x, y) batches until max_steps or the iterable ends; returns every step's losses."""
        return [self.training_step(x, y) for _, (x, y) in zip(range(max_steps), batches)]
