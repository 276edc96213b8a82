"""Inception1d: InceptionTime (Ismail Fawaz et al. 2020, "InceptionTime: finding AlexNet for time
series classification") as benchmarked on PTB-XL by Strodthoff et al. 2020 (macro AUROC .925).

One inception module: a 1x1 bottleneck, then three convolutions of decreasing length on the
bottleneck output and a max-pool + 1x1 branch on the module input, concatenated (4 x n_filters
channels), BatchNorm, ReLU. Every third module adds a residual shortcut (1x1 conv + BatchNorm) from
the input of its group of three. No downsampling in time.

    x [B, C, T] --average over `input_pool` samples--> [B, C, T'] (300 Hz -> 100 Hz by default)
        --depth inception modules--> [B, 4 * n_filters, T']
        --mean and max pool over time--> features [B, 8 * n_filters]

The benchmark ran at 100 Hz: averaging three samples of the 300 Hz contract input restores that
rate, so the default kernels (40 -> 39, 19, 9 samples) span the same 0.4, 0.2 and 0.1 s as there,
at a third of the cost. `input_pool = 1` runs at the full rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import BaselineClassifier, BaselineConfig, concat_pool
from anyecg.models.contract import checked_input


@dataclass
class Inception1dConfig(BaselineConfig):
    depth: int = 6  # inception modules
    n_filters: int = 32  # channels per branch
    bottleneck: int = 32  # channels of the 1x1 bottleneck
    kernel_size: int = 40  # longest branch; the others are kernel_size // 2 and // 4 (all made odd)
    residual_every: int = 3
    input_pool: int = 3  # average this many samples first (1 = full rate)

    def __post_init__(self):
        super().__post_init__()
        if self.kernel_size < 4 or min(self.depth, self.residual_every, self.input_pool) < 1:
            raise ValueError(
                f"need kernel_size >= 4 and depth, residual_every, input_pool >= 1, got kernel_size "
                f"{self.kernel_size}, depth {self.depth}, residual_every {self.residual_every}, "
                f"input_pool {self.input_pool}"
            )

    @property
    def kernel_sizes(self) -> tuple[int, ...]:
        lengths = (self.kernel_size, self.kernel_size // 2, self.kernel_size // 4)
        return tuple(k - 1 if k % 2 == 0 else k for k in lengths)


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, n_filters: int, bottleneck: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        self.bottleneck = nn.Conv1d(in_channels, bottleneck, 1, bias=False)
        self.convs = nn.ModuleList(
            [nn.Conv1d(bottleneck, n_filters, k, padding=k // 2, bias=False) for k in kernel_sizes]
        )
        self.pool_branch = nn.Sequential(
            nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(in_channels, n_filters, 1, bias=False)
        )
        self.norm = nn.BatchNorm1d(n_filters * (len(kernel_sizes) + 1))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        squeezed = self.bottleneck(x)  # [B, bottleneck, T]
        branches = [conv(squeezed) for conv in self.convs] + [self.pool_branch(x)]  # each [B, n_filters, T]
        return self.act(self.norm(torch.cat(branches, dim=1)))  # [B, 4 * n_filters, T]


class Inception1d(BaselineClassifier):
    def __init__(self, config: Inception1dConfig):
        c = config
        channels = c.n_filters * (len(c.kernel_sizes) + 1)
        super().__init__(config, num_features=2 * channels)
        self.blocks = nn.ModuleList(
            [InceptionModule(len(c.leads) if i == 0 else channels, c.n_filters, c.bottleneck, c.kernel_sizes)
             for i in range(c.depth)]
        )
        n_shortcuts = c.depth // c.residual_every
        self.shortcuts = nn.ModuleList(
            [nn.Sequential(
                nn.Conv1d(len(c.leads) if i == 0 else channels, channels, 1, bias=False), nn.BatchNorm1d(channels)
            ) for i in range(n_shortcuts)]
        )
        self.act = nn.ReLU()

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        x = F.avg_pool1d(x, self.config.input_pool, ceil_mode=True)  # [B, C, T']
        group_input = x
        for i, block in enumerate(self.blocks):
            x = block(x)  # [B, 4 * n_filters, T']
            if (i + 1) % self.config.residual_every == 0:
                x = self.act(x + self.shortcuts[i // self.config.residual_every](group_input))
                group_input = x
        return concat_pool(x)  # [B, 8 * n_filters]
