"""Stage 2 of AnyECG: the backbone, pretrained by masked rhythm-code modeling.

    patches [B, L, P, 300] --PatchEmbedding--> [B, N, D]          temporal conv + tau_k + sigma_j
        (a random fraction r of real tokens take a learnable mask token h_M before tau and sigma)
        --`depth` CMA blocks + LayerNorm--> features [B, N, D]    (forward_features)
        --Linear(D, K)--> logits over the frozen tokenizer's K codes   (forward_head)

    loss = cross-entropy against the tokenizer's code z at masked positions only (paper, L_mask)

Symmetric masking (LaBraM) optionally runs a second pass with the complementary mask over the real
tokens, so every real token is predicted once per step; the loss is then the mean of both passes.
Masks are drawn from a torch.Generator when one is given, so a step is reproducible from a seed.
`pool` gives a recording embedding: the mean of the features over non-padding tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.layers import (
    MAX_TOKENS,
    PATCH_SIZE,
    Block,
    PatchEmbedding,
    batch_field,
    check_inputs,
    init_weights,
    masked_mean,
)


@dataclass
class BackboneConfig:
    dim: int = 64
    depth: int = 4
    n_heads: int = 4
    mlp_ratio: float = 4.0
    tolerance: int = 1  # CMA mask width w, in seconds
    conv_channels: int = 8  # temporal conv encoder channels
    num_codes: int = 512  # K of the tokenizer whose codes are the targets
    mask_ratio: float = 0.5  # r: fraction of real tokens masked per recording
    symmetric_mask: bool = False
    dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth of the last block, rising linearly from 0 at the first (fine-tuning)
    attn_impl: str = "auto"  # CMA implementation: "auto", "structured" or "dense" (same result)
    amplitude_inputs: bool = False  # patch log-RMS and mean enter the patch embedding
    patch_size: int = PATCH_SIZE
    max_tokens: int = MAX_TOKENS


@dataclass
class BackboneOutput:
    loss: Tensor  # scalar cross-entropy at masked positions
    accuracy: Tensor  # scalar, top-1 code accuracy at masked positions
    mask: Tensor  # [B, L, P] bool, True where the first pass masked a token
    n_masked: int  # masked positions scored, over all passes


def random_token_mask(pad_mask: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Mask round(ratio * n_real) of each recording's real tokens, uniformly at random.

    pad_mask: bool [B, ...] (True = padding) -> bool of the same shape, never True at padding.
    A recording with at least one real token has at least one masked token. With a generator the
    draw is reproducible; it must live on pad_mask's device.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
    B = pad_mask.shape[0]
    pad = pad_mask.reshape(B, -1)  # [B, N]
    noise = torch.rand(pad.shape, generator=generator, device=pad.device)  # [B, N]
    noise = noise.masked_fill(pad, 2.0)  # padding sorts last
    rank = noise.argsort(dim=1).argsort(dim=1)  # [B, N] position of each token in the sorted order
    n_real = (~pad).sum(dim=1, keepdim=True)  # [B, 1]
    n_mask = (n_real * ratio).round().long().clamp(min=1)
    n_mask = torch.minimum(n_mask, n_real)
    return (rank < n_mask).view(pad_mask.shape)


class Backbone(nn.Module):
    def __init__(self, config: BackboneConfig):
        super().__init__()
        c = config
        self.config = config
        self.patch_embed = PatchEmbedding(c.patch_size, c.dim, c.conv_channels, max_patches=c.max_tokens,
                                          amplitude_inputs=c.amplitude_inputs)
        self.mask_token = nn.Parameter(torch.zeros(c.dim))  # h_M
        self.blocks = nn.ModuleList(
            [Block(c.dim, c.n_heads, c.mlp_ratio, c.tolerance, c.dropout, c.attn_impl) for _ in range(c.depth)]
        )
        self.set_drop_path(c.drop_path)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_codes)

        self.apply(init_weights)
        nn.init.trunc_normal_(self.patch_embed.time_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth for fine-tuning: block i of `depth` skips at rate * i / (depth - 1) (BEiT)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path must lie in [0, 1), got {rate}")
        self.config = replace(self.config, drop_path=rate)
        last = max(len(self.blocks) - 1, 1)
        for i, block in enumerate(self.blocks):  # plain floats: models are also built on the meta device
            block.drop_path = rate * i / last

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW must not shrink: the position and lead embeddings (BEiT)."""
        return {"patch_embed.time_embed", "patch_embed.lead_embed.weight"}

    def forward_features(
        self, patches: Tensor, lead_ids: Tensor, pad_mask: Tensor, token_mask: Tensor | None = None
    ) -> Tensor:
        """Contextual tokens [B, N, D] (after the final norm), zero at padding tokens.

        token_mask: optional bool [B, L, P]; True tokens are replaced by the mask token before the
        transformer (as in pretraining). Downstream use leaves it None.
        """
        grid = check_inputs(patches, lead_ids, pad_mask, self.config.patch_size, self.config.max_tokens)
        pad = pad_mask.flatten(1)  # [B, N]
        x = self.patch_embed(patches, lead_ids, token_mask, self.mask_token)  # [B, N, D]
        for block in self.blocks:
            x = block(x, grid, pad)
        x = self.norm(x)
        return x.masked_fill(pad[..., None], 0.0)  # [B, N, D]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """x [..., D] -> code logits [..., K], or x itself when pre_logits."""
        return x if pre_logits else self.head(x)

    @staticmethod
    def pool(features: Tensor, pad_mask: Tensor) -> Tensor:
        """Recording embedding: mean of features [B, N, D] over non-padding tokens -> [B, D]."""
        return masked_mean(features, ~pad_mask.flatten(1))

    def embed(self, patches: Tensor, lead_ids: Tensor, pad_mask: Tensor) -> Tensor:
        """Pooled embedding of unmasked input: [B, D]."""
        return self.pool(self.forward_features(patches, lead_ids, pad_mask), pad_mask)

    def forward(
        self, batch: Mapping[str, Any] | Any, codes: Tensor | None = None, generator: torch.Generator | None = None
    ) -> BackboneOutput:
        """Masked-code loss. batch: `patches`, `lead_ids`, `pad_mask` as in `forward_features`;
        codes: [B, L, P] long, the frozen tokenizer's `encode` output (-1 at padding), taken from
        `batch["codes"]` when not given (so a training loop can call `model(batch)`)."""
        patches, lead_ids, pad_mask = (batch_field(batch, key) for key in ("patches", "lead_ids", "pad_mask"))
        codes = batch_field(batch, "codes") if codes is None else codes
        if codes is None:
            raise ValueError("no target codes: pass codes= or put the tokenizer's codes in batch['codes']")
        if tuple(codes.shape) != tuple(pad_mask.shape):
            raise ValueError(f"codes must have shape {tuple(pad_mask.shape)} like pad_mask, got {tuple(codes.shape)}")
        mask = random_token_mask(pad_mask, self.config.mask_ratio, generator)  # [B, L, P]
        passes = [mask, ~mask & ~pad_mask] if self.config.symmetric_mask else [mask]

        losses, correct, n_masked = [], 0, 0
        for token_mask in passes:
            features = self.forward_features(patches, lead_ids, pad_mask, token_mask)  # [B, N, D]
            selected = token_mask.flatten(1)  # [B, N]
            logits = self.forward_head(features[selected])  # [M, K], only the scored positions
            target = codes.flatten(1)[selected]  # [M]
            if len(target) and (int(target.min()) < 0 or int(target.max()) >= self.config.num_codes):
                raise ValueError(
                    f"codes at masked positions must lie in [0, {self.config.num_codes}), got values in "
                    f"[{int(target.min())}, {int(target.max())}] (is the tokenizer's K the backbone's?)"
                )
            losses.append(F.cross_entropy(logits, target) if len(target) else 0.0 * logits.sum())
            correct += int((logits.argmax(dim=-1) == target).sum())
            n_masked += len(target)

        loss = torch.stack(losses).mean()
        accuracy = torch.tensor(correct / max(n_masked, 1))
        return BackboneOutput(loss=loss, accuracy=accuracy, mask=mask, n_masked=n_masked)
