"""ST-Transformer (Song et al. 2021, "Transformer-based spatial-temporal feature learning for EEG
decoding", arXiv 2106.11170): attention across channels (spatial) first, then across time
(temporal), on patch tokens.

Every lead is cut into patches of `patch_size` samples; each (lead, patch) is one token.

    x [B, C, T] --patches, Linear(patch_size, D) + lead embedding--> [B, N, C, D]   (N = T / patch_size)
        --spatial encoder: per patch, attention over its C leads (absent leads are not attended)--> [B, N, C, D]
        --mean over present leads, + sinusoidal time positions--> [B, N, D]
        --temporal encoder: attention over the N patches--> [B, N, D] --mean--> features [B, D]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    sinusoidal_positions,
    transformer_encoder,
)
from anyecg.models.contract import checked_input


@dataclass
class STTransformerConfig(BaselineConfig):
    patch_size: int = 50  # samples per patch: 1/6 s at 300 Hz
    dim: int = 128
    n_heads: int = 4
    spatial_depth: int = 1
    temporal_depth: int = 3
    mlp_ratio: float = 2.0
    dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.n_heads != 0 or self.patch_size < 1:
            raise ValueError(
                f"dim must be divisible by n_heads and patch_size >= 1, got dim {self.dim}, "
                f"n_heads {self.n_heads}, patch_size {self.patch_size}"
            )

    @property
    def n_patches(self) -> int:
        return -(-self.contract.n_samples // self.patch_size)  # the last patch is zero-padded


class STTransformer(BaselineClassifier):
    def __init__(self, config: STTransformerConfig):
        c = config
        super().__init__(config, num_features=c.dim)
        self.patch_embed = nn.Linear(c.patch_size, c.dim)
        self.lead_embed = nn.Parameter(torch.zeros(len(c.leads), c.dim))
        nn.init.trunc_normal_(self.lead_embed, std=0.02)
        self.register_buffer("positions", sinusoidal_positions(c.n_patches, c.dim), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.spatial = transformer_encoder(c.dim, c.n_heads, c.spatial_depth, c.mlp_ratio, c.dropout)
        self.temporal = transformer_encoder(c.dim, c.n_heads, c.temporal_depth, c.mlp_ratio, c.dropout)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        B, C, T = x.shape
        N, P = self.config.n_patches, self.config.patch_size
        present = lead_mask if lead_mask is not None else torch.ones(B, C, dtype=torch.bool, device=x.device)
        # A recording with no present lead attends over all (zero) slots rather than over none (NaN).
        present = present | ~present.any(dim=1, keepdim=True)  # [B, C]

        patches = F.pad(x, (0, N * P - T)).view(B, C, N, P).transpose(1, 2)  # [B, N, C, P]
        tokens = self.patch_embed(patches) + self.lead_embed  # [B, N, C, D]
        D = tokens.shape[-1]
        ignore = (~present)[:, None, :].expand(B, N, C).reshape(B * N, C)  # [B * N, C]
        tokens = self.spatial(self.drop(tokens.reshape(B * N, C, D)), src_key_padding_mask=ignore)  # [B * N, C, D]

        weights = present.to(tokens.dtype)[:, None, :, None]  # [B, 1, C, 1]
        tokens = (tokens.view(B, N, C, D) * weights).sum(dim=2) / weights.sum(dim=2)  # [B, N, D]
        tokens = self.temporal(self.drop(tokens + self.positions))  # [B, N, D]
        return tokens.mean(dim=1)  # [B, D]
