"""Stage 1 of AnyECG: the ECG tokenizer (rhythm codebook + multi-view decoder).

    patches [B, L, P, 300] --PatchEmbedding--> [B, N, D]         temporal conv + tau_k + sigma_j
        --spatial encoder: `depth` CMA blocks (paper: 4)--> [B, N, D]
        --LayerNorm + Linear--> h [B, N, d_c] --RhythmCodebook--> quantized [B, N, d_c], z [B, L, P]
        --decoder trunk: Linear + own tau/sigma + `decoder_depth` CMA blocks--> y [B, N, D]
            morphology head: y -> the 300-sample patch                 (MSE)
            frequency head:  y -> DWT coefficients of L_w levels [cA_Lw, cD_Lw, ..., cD_1], each
                             array z-scored per patch (`anyecg.signal.wavelet.dwt_targets`) (MSE);
                             optionally their magnitudes, without the finest detail bands
            demography head: mean of y over real tokens -> age, sex   (MSE on standardised age +
                             binary cross-entropy on sex, each only over records that have it)

    loss = morphology + frequency + demography + codebook + commitment     (paper, L_T)

Every term is averaged over non-padding tokens (or over records with a known attribute); a batch
with no known age contributes an age term of exactly 0. The three heads share one decoder trunk.
Indices at padding tokens are -1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.codebook import RhythmCodebook
from anyecg.models.layers import (
    MAX_TOKENS,
    N_LEADS,
    PATCH_SIZE,
    Block,
    PatchEmbedding,
    batch_field,
    check_inputs,
    init_weights,
    masked_mean,
)
from anyecg.signal.wavelet import dwt_targets


@dataclass
class TokenizerConfig:
    dim: int = 64  # d: token width of the encoder and the decoder trunk
    depth: int = 4  # spatial encoder blocks (paper: 4)
    n_heads: int = 4
    mlp_ratio: float = 4.0
    tolerance: int = 1  # CMA mask width w, in seconds
    conv_channels: int = 8  # temporal conv encoder channels
    code_dim: int = 32  # d_c
    num_codes: int = 512  # K
    beta: float = 0.25  # commitment weight
    kmeans_init: bool = True  # seed the codes by k-means on the first training tokens
    kmeans_pool: int = 0  # tokens to gather before that k-means (0: the first batch alone)
    restart_after: int = 100  # re-seed codes unused for this many steps (0: never)
    ema_decay: float = 0.0  # > 0: codes follow an EMA of their tokens instead of the optimiser
    beta_warmup_steps: int = 0  # commitment weight ramps linearly from 0 to beta over these steps
    amplitude_inputs: bool = False  # patch log-RMS and mean enter the patch embedding
    decoder_depth: int = 2
    wavelet: str = "db6"
    wavelet_level: int = 4  # L_w; 4 is the deepest useful db6 level for 300 samples
    frequency_magnitude: bool = False  # regress z-scored |DWT coefficients| (paper) instead of signed ones
    frequency_drop_finest: int = 0  # leave out the finest detail arrays cD_1, ... (noise at 300 Hz)
    age_mean: float = 50.0  # age is regressed as (age - mean) / std
    age_std: float = 20.0
    dropout: float = 0.0
    attn_impl: str = "auto"  # CMA implementation: "auto", "structured" or "dense" (same result)
    patch_size: int = PATCH_SIZE
    max_tokens: int = MAX_TOKENS


@dataclass
class TokenizerOutput:
    loss: Tensor  # scalar, the sum of the five terms below
    morphology: Tensor
    frequency: Tensor
    demography: Tensor
    codebook: Tensor
    commitment: Tensor
    indices: Tensor  # [B, L, P] long code ids, -1 at padding
    usage: Tensor  # fraction of codes used by this batch's real tokens
    perplexity: Tensor
    restarted: int  # dead codes re-seeded at the start of this step
    reconstruction: Tensor  # [B, L, P, S] morphology decoder output
    encoded: Tensor  # [B, N, d_c] pre-quantisation encoder output h
    age: Tensor  # [B] predicted age, years
    sex_logit: Tensor  # [B] predicted sex, logit of code 1


def frequency_targets(patches: Tensor, wavelet: str, level: int, magnitude: bool = False, drop_finest: int = 0) -> Tensor:
    """z-scored DWT coefficients of every patch, concatenated: [..., S] -> [..., C] float32.

    `anyecg.signal.wavelet.dwt_targets` (PyWavelets, on the CPU) in its order [cA_Lw, cD_Lw, ...,
    cD_1]; a data pipeline may instead precompute them and pass `freq_targets` in the batch.
    """
    levels = dwt_targets(patches.detach().float().cpu().numpy(), wavelet=wavelet, level=level, magnitude=magnitude,
                         drop_finest=drop_finest)
    return torch.from_numpy(np.concatenate(levels, axis=-1)).to(patches.device)  # [..., C]


def frequency_size(patch_size: int, wavelet: str, level: int, drop_finest: int = 0) -> int:
    """C, the number of coefficients `frequency_targets` gives per patch."""
    zeros = np.zeros((1, patch_size), np.float32)
    return sum(c.shape[-1] for c in dwt_targets(zeros, wavelet, level, drop_finest=drop_finest))


def _token_mse(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid tokens of the per-token mean squared error; pred/target [B, N, C], valid [B, N]."""
    per_token = ((pred[valid] - target[valid]) ** 2).mean(dim=-1)  # [n_valid]
    return per_token.sum() / valid.sum().clamp(min=1)


class Tokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        c = config
        self.config = config
        self.patch_embed = PatchEmbedding(c.patch_size, c.dim, c.conv_channels, max_patches=c.max_tokens,
                                          amplitude_inputs=c.amplitude_inputs)
        self.encoder = nn.ModuleList(
            [Block(c.dim, c.n_heads, c.mlp_ratio, c.tolerance, c.dropout, c.attn_impl) for _ in range(c.depth)]
        )
        self.encoder_norm = nn.LayerNorm(c.dim)
        self.to_code = nn.Linear(c.dim, c.code_dim)
        self.codebook = RhythmCodebook(
            c.num_codes, c.code_dim, beta=c.beta, kmeans_init=c.kmeans_init, restart_after=c.restart_after,
            kmeans_pool=c.kmeans_pool, ema_decay=c.ema_decay, beta_warmup_steps=c.beta_warmup_steps,
        )
        # Decoder trunk: quantised codes carry no position, so it adds its own tau and sigma.
        self.decoder_embed = nn.Linear(c.code_dim, c.dim)
        self.decoder_time = nn.Parameter(torch.zeros(c.max_tokens, c.dim))
        self.decoder_lead = nn.Embedding(N_LEADS, c.dim)
        self.decoder = nn.ModuleList(
            [Block(c.dim, c.n_heads, c.mlp_ratio, c.tolerance, c.dropout, c.attn_impl) for _ in range(c.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(c.dim)
        self.n_freq = frequency_size(c.patch_size, c.wavelet, c.wavelet_level, c.frequency_drop_finest)
        self.morphology_head = nn.Linear(c.dim, c.patch_size)
        self.frequency_head = nn.Linear(c.dim, self.n_freq)
        self.demography_head = nn.Sequential(nn.Linear(c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, 2))  # age, sex

        self.apply(init_weights)
        nn.init.trunc_normal_(self.patch_embed.time_embed, std=0.02)
        nn.init.trunc_normal_(self.decoder_time, std=0.02)
        # The code is a unit vector of d_c numbers: at std 0.02 it would add ~0.02 per dimension,
        # no more than the decoder's own position embeddings, and the decoder would learn to ignore it.
        nn.init.trunc_normal_(self.decoder_embed.weight, std=c.code_dim**-0.5)

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW must not shrink: position and lead embeddings, and the codes (BEiT)."""
        return {"patch_embed.time_embed", "patch_embed.lead_embed.weight", "decoder_time", "decoder_lead.weight",
                "codebook.codes"}

    def encode_continuous(self, patches: Tensor, lead_ids: Tensor, pad_mask: Tensor) -> Tensor:
        """Pre-quantisation tokens h: [B, L, P, S] -> [B, N, d_c]."""
        grid = check_inputs(patches, lead_ids, pad_mask, self.config.patch_size, self.config.max_tokens)
        pad = pad_mask.flatten(1)  # [B, N]
        x = self.patch_embed(patches, lead_ids)  # [B, N, D]
        for block in self.encoder:
            x = block(x, grid, pad)
        return self.to_code(self.encoder_norm(x))  # [B, N, d_c]

    @torch.no_grad()
    def encode(self, patches: Tensor, lead_ids: Tensor, pad_mask: Tensor) -> Tensor:
        """Rhythm code of every patch: [B, L, P] long, -1 at padding. Changes no state.

        Stage 2 calls this on the frozen tokenizer; put it in eval mode first (dropout, if any).
        """
        h = self.encode_continuous(patches, lead_ids, pad_mask)  # [B, N, d_c]
        indices = self.codebook.lookup(h).view(pad_mask.shape)  # [B, L, P]
        return indices.masked_fill(pad_mask, -1)

    def decode(self, quantized: Tensor, lead_ids: Tensor, pad_mask: Tensor) -> Tensor:
        """Decoder trunk: quantized [B, N, d_c] -> y [B, N, D]."""
        B, L, P = pad_mask.shape
        y = self.decoder_embed(quantized).view(B, L, P, -1)  # [B, L, P, D]
        y = y + self.decoder_time[:P][None, None] + self.decoder_lead(lead_ids)[:, :, None, :]
        y = y.reshape(B, L * P, -1)  # [B, N, D]
        pad = pad_mask.flatten(1)  # [B, N]
        for block in self.decoder:
            y = block(y, (L, P), pad)
        return self.decoder_norm(y)

    def forward(self, batch: Mapping[str, Any] | Any) -> TokenizerOutput:
        """batch: `patches` [B, L, P, S], `lead_ids` [B, L], `pad_mask` [B, L, P] (True = padding);
        optional `age` [B] (years), `sex` [B] (0/1), `has_age` / `has_sex` [B] bool, and
        `freq_targets` [B, L, P, C] (else computed here from the patches)."""
        patches, lead_ids, pad_mask = (batch_field(batch, key) for key in ("patches", "lead_ids", "pad_mask"))
        B, L, P, S = patches.shape
        valid = ~pad_mask.flatten(1)  # [B, N]

        h = self.encode_continuous(patches, lead_ids, pad_mask)  # [B, N, d_c]
        q = self.codebook(h, valid)
        y = self.decode(q.quantized, lead_ids, pad_mask)  # [B, N, D]

        reconstruction = self.morphology_head(y)  # [B, N, S]
        morphology = _token_mse(reconstruction, patches.reshape(B, L * P, S), valid)

        freq_targets = batch_field(batch, "freq_targets")
        if freq_targets is None:
            c = self.config
            freq_targets = frequency_targets(patches, c.wavelet, c.wavelet_level, c.frequency_magnitude,
                                             c.frequency_drop_finest)
        if freq_targets.shape[-1] != self.n_freq:
            raise ValueError(
                f"freq_targets have {freq_targets.shape[-1]} coefficients per patch, the frequency head "
                f"predicts {self.n_freq} ({self.config.wavelet}, level {self.config.wavelet_level})"
            )
        frequency = _token_mse(self.frequency_head(y), freq_targets.reshape(B, L * P, -1).to(y.dtype), valid)

        demography_pred = self.demography_head(masked_mean(y, valid))  # [B, 2]: standardised age, sex logit
        demography = self._demography_loss(demography_pred, batch)

        loss = morphology + frequency + demography + q.codebook_loss + q.commitment_loss
        return TokenizerOutput(
            loss=loss,
            morphology=morphology,
            frequency=frequency,
            demography=demography,
            codebook=q.codebook_loss,
            commitment=q.commitment_loss,
            indices=q.indices.view(B, L, P),
            usage=q.usage,
            perplexity=q.perplexity,
            restarted=q.restarted,
            reconstruction=reconstruction.view(B, L, P, S),
            encoded=h,
            age=demography_pred[:, 0].detach() * self.config.age_std + self.config.age_mean,
            sex_logit=demography_pred[:, 1].detach(),
        )

    def _demography_loss(self, pred: Tensor, batch: Mapping[str, Any] | Any) -> Tensor:
        """Standardised-age MSE + sex BCE, each over the records that have the attribute.

        A term with no record to score is `0 * pred.sum()`: exactly zero, yet still attached to the
        graph so every parameter gets a (zero) gradient, as distributed training requires.
        """
        zero = 0.0 * pred.sum()
        age, sex = batch_field(batch, "age"), batch_field(batch, "sex")
        age_term = sex_term = zero
        if age is not None:
            has_age = batch_field(batch, "has_age")
            has_age = torch.isfinite(age) if has_age is None else has_age & torch.isfinite(age)
            if bool(has_age.any()):
                target = (age[has_age].to(pred.dtype) - self.config.age_mean) / self.config.age_std
                age_term = F.mse_loss(pred[has_age, 0], target)
        if sex is not None:
            has_sex = batch_field(batch, "has_sex")
            has_sex = torch.ones_like(sex, dtype=torch.bool) if has_sex is None else has_sex
            if bool(has_sex.any()):
                sex_term = F.binary_cross_entropy_with_logits(pred[has_sex, 1], sex[has_sex].to(pred.dtype))
        return age_term + sex_term
