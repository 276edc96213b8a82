"""Building blocks shared by the AnyECG tokenizer and backbone.

Both stages see the same input contract: `patches` [B, L, P, S] of 1-second patches (S = 300
samples at 300 Hz), `lead_ids` [B, L] indexing `anyecg.signal.leads.CANONICAL_LEADS`, and
`pad_mask` [B, L, P] with True for padding (an absent lead or a second past the record's end).
Tokens are the (lead j, second k) grid flattened lead-major, token n = j * P + k, N = L * P.

- `TemporalConvEncoder`: one patch -> one d-dim vector (Conv1d + GroupNorm + GELU stack, paper).
- `PatchEmbedding`: the temporal encoder plus learnable temporal (tau_k) and lead (sigma_j)
  embeddings, h = h' + tau_k + sigma_j; optionally each patch's amplitude (log-RMS and mean), which
  the temporal encoder's per-patch GroupNorm removes.
- `Block`: pre-norm transformer block with Cross-Mask Attention and an MLP, optionally with
  stochastic depth (each recording skips the block's branches at random while training).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from anyecg.models.attention import CrossMaskAttention
from anyecg.signal.leads import CANONICAL_LEADS

PATCH_SIZE = 300  # samples per patch: 1 s at the 300 Hz the preprocessing resamples to
MAX_TOKENS = 1024  # token budget of one sequence (paper)
N_LEADS = len(CANONICAL_LEADS)


def check_inputs(
    patches: Tensor, lead_ids: Tensor, pad_mask: Tensor, patch_size: int, max_tokens: int
) -> tuple[int, int]:
    """Validate the model input contract; returns the grid (L, P).

    Raises ValueError naming the offending shapes or values, so a batch prepared with another
    recipe (another patch length, too many tokens, unknown lead ids) fails loudly.
    """
    if patches.dim() != 4:
        raise ValueError(f"patches must be [B, L, P, {patch_size}], got shape {tuple(patches.shape)}")
    B, L, P, S = patches.shape
    if S != patch_size:
        raise ValueError(
            f"patches have {S} samples, the model expects {patch_size} (1 s at 300 Hz); "
            "resample and re-patch with the model's preprocessing recipe"
        )
    if L * P > max_tokens:
        raise ValueError(f"{L} leads x {P} patches = {L * P} tokens exceeds the model's budget of {max_tokens}")
    if tuple(lead_ids.shape) != (B, L):
        raise ValueError(f"lead_ids must have shape {(B, L)}, got {tuple(lead_ids.shape)}")
    if lead_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"lead_ids must be an integer tensor, got {lead_ids.dtype}")
    if lead_ids.numel() and lead_ids.device.type != "meta":
        low, high = int(lead_ids.min()), int(lead_ids.max())
        if low < 0 or high >= N_LEADS:
            raise ValueError(f"lead_ids must lie in [0, {N_LEADS}) (CANONICAL_LEADS), got values in [{low}, {high}]")
    if tuple(pad_mask.shape) != (B, L, P) or pad_mask.dtype != torch.bool:
        raise ValueError(
            f"pad_mask must be a bool tensor of shape {(B, L, P)} (True = padding), "
            f"got {pad_mask.dtype} {tuple(pad_mask.shape)}"
        )
    return L, P


def batch_field(batch: Mapping[str, Any] | Any, name: str) -> Any:
    """batch[name] for a dict batch (what `collate_windows` returns), batch.name otherwise; None if absent."""
    if isinstance(batch, Mapping):
        return batch.get(name)
    return getattr(batch, name, None)


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x [B, N, D] over the tokens where valid [B, N] is True -> [B, D] (zeros if none)."""
    weights = valid.to(x.dtype).unsqueeze(-1)  # [B, N, 1]
    total = (x * weights).sum(dim=1)  # [B, D]
    return total / weights.sum(dim=1).clamp(min=1.0)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear and conv weights, zero biases, unit norms (ViT/BEiT style)."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)


class TemporalConvEncoder(nn.Module):
    """Encode each patch on its own: [M, S] -> [M, D].

    A strided Conv1d (kernel 15, stride 8 by default) then `n_convs - 1` kernel-3 convolutions,
    each followed by GroupNorm + GELU; the [C, S'] feature map is flattened and projected to D.
    GroupNorm normalises within one patch, so patches never mix (BatchNorm would let padding
    patches leak into real ones).
    """

    def __init__(
        self,
        patch_size: int,
        dim: int,
        channels: int = 8,
        n_convs: int = 3,
        kernel: int = 15,
        stride: int = 8,
        groups: int = 4,
    ):
        super().__init__()
        if channels % groups != 0:
            raise ValueError(f"conv channels ({channels}) must be divisible by GroupNorm groups ({groups})")
        layers: list[nn.Module] = [
            nn.Conv1d(1, channels, kernel, stride=stride, padding=kernel // 2),
            nn.GroupNorm(groups, channels),
            nn.GELU(),
        ]
        for _ in range(n_convs - 1):
            layers += [nn.Conv1d(channels, channels, 3, padding=1), nn.GroupNorm(groups, channels), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.out_length = (patch_size + 2 * (kernel // 2) - kernel) // stride + 1
        self.proj = nn.Linear(channels * self.out_length, dim)

    def forward(self, patches: Tensor) -> Tensor:
        features = self.convs(patches.unsqueeze(1))  # [M, C, S']
        return self.proj(features.flatten(1))  # [M, D]


def patch_amplitude(patches: Tensor) -> Tensor:
    """Per-patch amplitude features [..., S] -> [..., 2]: log RMS and mean (the RMS floored at
    1e-3 so that all-zero padding patches stay finite)."""
    rms = patches.float().pow(2).mean(dim=-1).sqrt()  # [...]
    return torch.stack([rms.clamp(min=1e-3).log(), patches.float().mean(dim=-1)], dim=-1)


class PatchEmbedding(nn.Module):
    """patches [B, L, P, S] + lead_ids [B, L] -> tokens [B, L * P, D] (lead-major).

    Token (j, k) = temporal_encoder(x_jk) + tau_k + sigma_{lead_ids[j]}. `max_patches` temporal
    positions (default 1024 s) cover any window within the 1024-token budget, even a single lead.
    With `token_mask` [B, L, P] (True = masked) and `mask_token` [D], masked tokens take the mask
    token in place of the temporal encoding, before tau and sigma are added (paper: the masked
    embedding is h~ = (1 - m) h' + m h_M, then h~ + tau_k + sigma_j), so a masked token still
    knows its lead and second.
    """

    def __init__(self, patch_size: int, dim: int, conv_channels: int = 8, max_patches: int = MAX_TOKENS,
                 amplitude_inputs: bool = False):
        super().__init__()
        self.patch_size = patch_size
        self.max_patches = max_patches
        self.temporal = TemporalConvEncoder(patch_size, dim, channels=conv_channels)
        # GroupNorm inside the temporal encoder makes x and 2x embed identically; beat amplitude
        # matters in ECG (hypertrophy, low voltage), so it can enter as two scalars per patch.
        self.amplitude = nn.Linear(2, dim) if amplitude_inputs else None
        self.time_embed = nn.Parameter(torch.zeros(max_patches, dim))  # tau_k
        self.lead_embed = nn.Embedding(N_LEADS, dim)  # sigma_j
        nn.init.trunc_normal_(self.time_embed, std=0.02)

    def forward(
        self, patches: Tensor, lead_ids: Tensor, token_mask: Tensor | None = None, mask_token: Tensor | None = None
    ) -> Tensor:
        B, L, P, S = patches.shape
        if P > self.max_patches:
            raise ValueError(f"{P} patches per lead exceeds the {self.max_patches} temporal positions")
        x = self.temporal(patches.reshape(B * L * P, S)).view(B, L, P, -1)  # [B, L, P, D]
        if self.amplitude is not None:
            x = x + self.amplitude(patch_amplitude(patches).to(x.dtype))  # [B, L, P, D]
        if token_mask is not None:
            x = torch.where(token_mask[..., None], mask_token.to(x.dtype), x)  # [B, L, P, D]
        x = x + self.time_embed[:P][None, None] + self.lead_embed(lead_ids)[:, :, None, :]  # [B, L, P, D]
        return x.reshape(B, L * P, -1)  # [B, N, D]


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def drop_path(branch: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: while training, zero a residual branch [B, ...] for a random `rate` of the
    recordings and scale the rest by 1 / (1 - rate), so its expected value is unchanged."""
    if rate == 0.0 or not training:
        return branch
    keep = torch.rand((branch.shape[0],) + (1,) * (branch.dim() - 1), device=branch.device) >= rate  # [B, 1, ...]
    return branch * keep.to(branch.dtype) / (1.0 - rate)


class Block(nn.Module):
    """Pre-norm transformer block: x + CMA(LN(x)), then x + MLP(LN(x)).

    The attention applies its own QK-norm (LayerNorm of Q and K per head, none on V, paper).
    Padding tokens are never attended as keys; every other operation is per token, so padding
    cannot reach a real token's output. `drop_path` is the stochastic-depth rate of both branches.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_ratio: float = 4.0,
        tolerance: int = 1,
        dropout: float = 0.0,
        attn_impl: str = "auto",
    ):
        super().__init__()
        self.drop_path = 0.0  # set for fine-tuning by `Backbone.set_drop_path`
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossMaskAttention(dim, n_heads, tolerance=tolerance, qk_norm=True, dropout=dropout, impl=attn_impl)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: Tensor, grid: tuple[int, int], pad_mask: Tensor | None) -> Tensor:
        x = x + drop_path(self.attn(self.norm1(x), grid=grid, pad_mask=pad_mask), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)  # [B, N, D]
