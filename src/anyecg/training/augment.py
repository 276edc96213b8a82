"""ECG augmentations for fine-tuning, applied to a collated batch of windows (random crops are the
dataset's job): amplitude scaling, Gaussian noise, baseline wander and lead dropout.

Signals in the store are normalised per lead (z-score by default), so amplitudes here are in units of
the lead's spread. Both input forms are handled:
- `x [B, C, T]` with `lead_mask [B, C]` (fixed-window models);
- AnyECG tokens `patches [B, L, P, S]` with `pad_mask [B, L, P]`; padding tokens stay zero.
Every draw comes from `generator`, so a seeded run (and a resumed one) sees the same augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Augmentations:
    scale: tuple[float, float] = (0.8, 1.25)  # per-lead amplitude factor, drawn log-uniformly
    noise_std: float = 0.05  # Gaussian noise, at most this many lead spreads
    wander_amplitude: float = 0.2  # baseline wander (a slow sinusoid), at most this many lead spreads
    wander_hz: tuple[float, float] = (0.05, 0.5)
    lead_dropout: float = 0.2  # chance that each lead of a multi-lead window is hidden (one always stays)


def _lead_dropout(present: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """bool [B, C]: `present` with each lead hidden with chance `p`, keeping at least one per window."""
    keep = torch.rand(present.shape, generator=generator) >= p  # [B, C]
    kept = present & keep
    empty = ~kept.any(dim=1)  # [B]: every present lead dropped: keep them all instead
    return torch.where(empty[:, None], present, kept)


def _perturb(x: Tensor, fs: float, aug: Augmentations, generator: torch.Generator) -> Tensor:
    """x [B, C, T] scaled, with noise and baseline wander added."""
    batch, channels, length = x.shape
    low, high = math.log(aug.scale[0]), math.log(aug.scale[1])
    scale = torch.exp(low + (high - low) * torch.rand(batch, channels, 1, generator=generator))  # [B, C, 1]
    noise_std = aug.noise_std * torch.rand(batch, 1, 1, generator=generator)  # [B, 1, 1]
    noise = noise_std * torch.randn(x.shape, generator=generator)  # [B, C, T]
    hz = aug.wander_hz[0] + (aug.wander_hz[1] - aug.wander_hz[0]) * torch.rand(batch, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(batch, channels, 1, generator=generator)  # [B, C, 1]
    amplitude = aug.wander_amplitude * torch.rand(batch, 1, 1, generator=generator)
    t = torch.arange(length, dtype=x.dtype) / fs  # [T] seconds
    wander = amplitude * torch.sin(2 * math.pi * hz * t + phase)  # [B, C, T]
    return x * scale + noise + wander


def augment_batch(batch: dict, fs: float, aug: Augmentations, generator: torch.Generator) -> dict:
    """A copy of `batch` with its signal augmented (the original tensors are left untouched)."""
    out = dict(batch)
    if "patches" in batch:
        patches, pad = batch["patches"], batch["pad_mask"]  # [B, L, P, S], [B, L, P]
        b, leads, n_patches, size = patches.shape
        x = _perturb(patches.reshape(b, leads, n_patches * size), fs, aug, generator).reshape(patches.shape)
        present = ~pad.all(dim=2)  # [B, L]
        hidden = present & ~_lead_dropout(present, aug.lead_dropout, generator)  # [B, L]
        out["pad_mask"] = pad | hidden[:, :, None]
        out["patches"] = x.masked_fill(out["pad_mask"][..., None], 0.0)
        return out
    x, mask = batch["x"], batch["lead_mask"]  # [B, C, T], [B, C]
    mask = _lead_dropout(mask, aug.lead_dropout, generator)
    out["lead_mask"] = mask
    out["x"] = _perturb(x, fs, aug, generator) * mask[:, :, None].to(x.dtype)
    return out
