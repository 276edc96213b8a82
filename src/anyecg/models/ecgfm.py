"""ECG-FM: a wav2vec 2.0 encoder for 12-lead ECGs, pretrained by W2V + CMSC + RLM (McKeen et al. 2024).

    x [B, 12, 2500] (5 s at 500 Hz; absent leads zero, lead_mask [B, 12])
      --ConvFeatureEncoder--> latents [B, E, N]          4 x Conv1d(kernel 2, stride 2): N = 156 frames
      --LayerNorm, Linear(E, D)--> [B, N, D]
      --Transformer: + PositionalConv(x), 12 post-norm layers--> tokens [B, N, D]   (forward_tokens)
      --mean over frames--> [B, D]                                                   (forward_features)
      --Linear(D, num_classes)--> logits                                             (forward_head)

Feature encoder. wav2vec 2.0 for 16 kHz audio uses 7 convolutions of 512 channels (total stride
320); on 2500 samples that would leave 7 frames. ECG-FM (fairseq-signals `conv_feature_layers`)
uses four (256 channels, kernel 2, stride 2) convolutions over the 12 leads as input channels,
total stride 16, i.e. one latent frame per 32 ms; the first has a per-channel GroupNorm, none has a
bias. We use that stack. With it the `ecgfm-base` preset (12 layers, 768 wide, 12 heads, FFN 3072,
positional convolution of width 128 in 16 groups, final_dim 256, 2 x 320 latent codes) has exactly
the 90,883,072 parameters of the public ECG-FM base checkpoints, and `ecgfm-large` (24 layers,
1024 wide) the 311,940,352 of the paper's model (counts include the pretraining modules).

Pretraining (`ECGFMPretrainer`, `forward(batch) -> ECGFMPretrainOutput`), per ECG-FM's WCR recipe:

- W2V: spans of 10 latent frames are masked (start probability 0.65, wav2vec 2.0 defaults) and
  replaced by a learnt vector; the unmasked latents of masked frames are quantised by a
  Gumbel-softmax product quantiser (G groups x V entries, straight-through); InfoNCE with cosine
  similarity / 0.1 picks the true code among 100 distractors drawn from the other masked frames
  of the same segment; plus the codebook diversity penalty (V*G - perplexity) / (V*G) and an L2
  penalty on the convolutional latents (fairseq's weights 0.1 and 10).
- CMSC: two adjacent 5 s segments of one recording are positives, segments of other recordings in
  the batch negatives (InfoNCE on l2-normalised mean-pooled embeddings of an unmasked pass,
  temperature 0.1, averaged over both directions).
- RLM: at train time every present lead is zeroed with probability 0.5 (at least one is kept).

Batch format: `x` float [B, S, C, T] with S = 2 segments per recording (S = 1 skips CMSC),
optional `lead_mask` bool [B, C] or [B, S, C] (True = lead present), optional `patient_ids` long
[B] (segments of one patient are all positives; default: each recording its own patient).
`SegmentPairs` + `collate_pairs` build such batches from recordings (a `Store` or a list of
`Recording`s) for `anyecg.training.loop.train`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from anyecg.models.contract import SignalContract, checked_input, convert_rate, fit_window, place_leads, segments
from anyecg.models.layers import batch_field
from anyecg.signal.leads import STANDARD_12, canonical_leads


@dataclass
class ECGFMConfig:
    # signal contract
    fs: float = 500.0
    window_s: float = 5.0
    leads: tuple[str, ...] = STANDARD_12
    # convolutional feature encoder: (channels, kernel, stride) per layer (ECG-FM's stack)
    conv_layers: tuple[tuple[int, int, int], ...] = ((256, 2, 2),) * 4
    conv_bias: bool = False
    # transformer
    dim: int = 768
    depth: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    norm_first: bool = False  # pre-norm layers (wav2vec 2.0 large) instead of post-norm (base)
    pos_conv_kernel: int = 128  # frames spanned by the convolutional positional embedding
    pos_conv_groups: int = 16
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1  # on the projected latents entering the transformer
    # downstream head
    num_classes: int = 0  # 0: no head, forward returns the pooled embedding
    head_dropout: float = 0.0
    # pretraining (ECGFMPretrainer)
    dropout_features: float = 0.1  # on the latents the quantiser sees
    feature_grad_mult: float = 0.1  # scales gradients into the conv encoder during pretraining
    final_dim: int = 256  # space where predictions and quantised targets are compared
    latent_groups: int = 2  # G
    latent_entries: int = 320  # V per group
    latent_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # Gumbel tau: start, end, decay per update
    mask_prob: float = 0.65
    mask_length: int = 10
    num_negatives: int = 100
    logit_temperature: float = 0.1
    cmsc_temperature: float = 0.1
    lead_mask_prob: float = 0.5  # RLM
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    cmsc_weight: float = 1.0

    def __post_init__(self) -> None:
        # JSON gives lists back; lead names are canonicalised so "avr" finds the aVR slot
        self.leads = tuple(canonical_leads(list(self.leads)))
        self.conv_layers = tuple(tuple(int(v) for v in layer) for layer in self.conv_layers)
        self.latent_temperature = tuple(float(v) for v in self.latent_temperature)
        problems = []
        if "unknown" in self.leads or len(set(self.leads)) != len(self.leads):
            problems.append(f"leads must be distinct canonical lead names, got {self.leads}")
        if self.dim % self.n_heads:
            problems.append(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.final_dim % self.latent_groups:
            problems.append(f"final_dim {self.final_dim} is not divisible by latent_groups {self.latent_groups}")
        if any(len(layer) != 3 for layer in self.conv_layers):
            problems.append(f"conv_layers must be (channels, kernel, stride) triples, got {self.conv_layers}")
        if self.n_frames < 2:
            problems.append(f"the conv stack leaves {self.n_frames} frames of {self.contract.n_samples} samples")
        if problems:
            raise ValueError("invalid ECGFMConfig: " + "; ".join(problems))

    @property
    def contract(self) -> SignalContract:
        return SignalContract(fs=self.fs, window_s=self.window_s, leads=self.leads)

    @property
    def n_frames(self) -> int:
        """Latent frames per window: each convolution maps n samples to (n - kernel) // stride + 1."""
        n = self.contract.n_samples
        for _, kernel, stride in self.conv_layers:
            n = (n - kernel) // stride + 1
        return n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ECGFMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ECGFMConfig fields {unknown}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# Encoder


class ConvFeatureEncoder(nn.Module):
    """x [B, C, T] -> latents [B, E, N]: strided convolutions over all leads at once (wav2vec 2.0).

    The first block normalises each channel over time (GroupNorm with one group per channel);
    blocks are Conv1d -> (GroupNorm) -> GELU.
    """

    def __init__(self, in_channels: int, layers: tuple[tuple[int, int, int], ...], bias: bool = False):
        super().__init__()
        blocks = []
        for i, (channels, kernel, stride) in enumerate(layers):
            conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=bias)
            nn.init.kaiming_normal_(conv.weight)
            norm = nn.GroupNorm(channels, channels) if i == 0 else nn.Identity()
            blocks.append(nn.Sequential(conv, norm, nn.GELU()))
            in_channels = channels
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)  # [B, E, N]


class PositionalConv(nn.Module):
    """Relative positions from a wide grouped convolution over time: [B, N, D] -> [B, N, D].

    Weight-normalised over the kernel axis and GELU-activated, as in wav2vec 2.0; an even kernel
    with `kernel // 2` padding yields one extra frame, which is dropped.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
        nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(4.0 / (kernel * dim)))
        nn.init.zeros_(conv.bias)
        self.conv = weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))  # [B, D, N + trim]
        y = y[..., : y.shape[-1] - self.trim]  # [B, D, N]
        return F.gelu(y).transpose(1, 2)  # [B, N, D]


def attention_weights(q: Tensor, k: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) over keys: q, k [B, H, N, d] -> [B, H, N, N] (the readable path)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, N, N]
    return scores.softmax(dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention; fused (`scaled_dot_product_attention`) unless weights are asked for."""

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def split_heads(self, t: Tensor) -> Tensor:
        B, N, D = t.shape
        return t.view(B, N, self.n_heads, D // self.n_heads).transpose(1, 2)  # [B, H, N, d]

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        B, N, D = x.shape
        q, k, v = (self.split_heads(proj(x)) for proj in (self.q_proj, self.k_proj, self.v_proj))  # [B, H, N, d]
        p_drop = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = attention_weights(q, k)  # [B, H, N, N]
            out = F.dropout(weights, p_drop, self.training) @ v  # [B, H, N, d]
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop)  # [B, H, N, d]
        out = out.transpose(1, 2).reshape(B, N, D)  # [B, N, D]
        return self.out_proj(out), weights


class EncoderLayer(nn.Module):
    """Transformer layer: self-attention then GELU MLP, each with dropout and a residual.

    Post-norm (LayerNorm after each residual sum, wav2vec 2.0 base) or pre-norm with `norm_first`.
    """

    def __init__(self, config: ECGFMConfig):
        super().__init__()
        c = config
        self.norm_first = c.norm_first
        self.attn = SelfAttention(c.dim, c.n_heads, c.attention_dropout)
        self.attn_norm = nn.LayerNorm(c.dim)
        self.fc1 = nn.Linear(c.dim, c.ffn_dim)
        self.fc2 = nn.Linear(c.ffn_dim, c.dim)
        self.ffn_norm = nn.LayerNorm(c.dim)
        self.dropout = nn.Dropout(c.dropout)
        self.activation_dropout = nn.Dropout(c.activation_dropout)

    def ffn(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(F.gelu(self.fc1(x)))))  # [B, N, D]

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        if self.norm_first:
            h, weights = self.attn(self.attn_norm(x), need_weights)
            x = x + self.dropout(h)
            x = x + self.ffn(self.ffn_norm(x))
        else:
            h, weights = self.attn(x, need_weights)
            x = self.attn_norm(x + self.dropout(h))
            x = self.ffn_norm(x + self.ffn(x))
        return x, weights  # [B, N, D], [B, H, N, N] or None


class Transformer(nn.Module):
    """[B, N, D] -> [B, N, D]: positional convolution added, then the layers."""

    def __init__(self, config: ECGFMConfig):
        super().__init__()
        c = config
        self.norm_first = c.norm_first
        self.pos_conv = PositionalConv(c.dim, c.pos_conv_kernel, c.pos_conv_groups)
        self.norm = nn.LayerNorm(c.dim)  # after the positional sum (post-norm) or after the last layer (pre-norm)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList([EncoderLayer(c) for _ in range(c.depth)])
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):  # BERT initialisation, as fairseq's encoder
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        x = x + self.pos_conv(x)  # [B, N, D]
        if not self.norm_first:
            x = self.norm(x)
        x = self.dropout(x)
        maps = []
        for layer in self.layers:
            x, weights = layer(x, need_weights)
            if need_weights:
                maps.append(weights)
        if self.norm_first:
            x = self.norm(x)
        return x, maps


class ECGFM(nn.Module):
    """The ECG-FM encoder with an optional classification head (see the module docstring)."""

    def __init__(self, config: ECGFMConfig):
        super().__init__()
        c = config
        self.config = config
        latent_dim = c.conv_layers[-1][0]
        self.feature_encoder = ConvFeatureEncoder(len(c.leads), c.conv_layers, c.conv_bias)
        self.feature_norm = nn.LayerNorm(latent_dim)
        self.feature_proj = nn.Linear(latent_dim, c.dim)
        self.dropout_input = nn.Dropout(c.dropout_input)
        self.transformer = Transformer(c)
        self.head_dropout = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(c.dim, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.n_outputs = c.num_classes if c.num_classes > 0 else c.dim

    def latents(self, x: Tensor) -> Tensor:
        """Normalised convolutional latents [B, N, E] of a checked input x [B, C, T]."""
        return self.feature_norm(self.feature_encoder(x).transpose(1, 2))  # [B, N, E]

    def encode(self, x: Tensor, lead_mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """(tokens [B, N, D], per-layer attention [B, H, N, N] when need_weights)."""
        x = checked_input(x, lead_mask, self.config.contract)  # [B, C, T]
        tokens = self.dropout_input(self.feature_proj(self.latents(x)))  # [B, N, D]
        return self.transformer(tokens, need_weights)

    def forward_tokens(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Contextual frame features [B, N, D], one per 32 ms at the published rate."""
        return self.encode(x, lead_mask)[0]

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Pooled embedding [B, D]: the mean of the frame features (ECG-FM's fine-tuning pooling)."""
        return self.forward_tokens(x, lead_mask).mean(dim=1)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        features = self.head_dropout(features)
        return features if pre_logits else self.head(features)  # [B, n_outputs]

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, lead_mask))

    def embed(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        return self.forward_features(x, lead_mask)

    def attention_maps(self, x: Tensor, lead_mask: Tensor | None = None) -> list[Tensor]:
        """Attention weights of every layer, [B, H, N, N] each (rows: query frames, sum to 1)."""
        return self.encode(x, lead_mask, need_weights=True)[1]


def encode_recording(
    model: ECGFM, signal: np.ndarray, fs: float, leads: list[str], *, features: bool = True, batch_size: int = 32
) -> Tensor:
    """Score a recording of any length, rate and lead set window by window: [S, D] embeddings
    (features=True) or [S, K] logits, for S consecutive windows; aggregate as the task needs
    (e.g. the mean). Runs without gradients in the model's current mode and device."""
    windows, lead_mask = segments(signal, fs, leads, model.config.contract)  # [S, C, T], [C]
    device = next(model.parameters()).device
    mask = torch.from_numpy(lead_mask).to(device)
    outputs = []
    with torch.no_grad():
        for chunk in torch.from_numpy(windows).split(batch_size):
            chunk = chunk.to(device)  # [b, C, T]
            chunk_mask = mask.expand(len(chunk), -1)  # [b, C]
            outputs.append(model.forward_features(chunk, chunk_mask) if features else model(chunk, chunk_mask))
    return torch.cat(outputs)


# ---------------------------------------------------------------------------------------------
# Pretraining: masking, quantisation, losses


def span_mask(
    batch: int, length: int, prob: float, span: int, *, min_spans: int = 2,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> Tensor:
    """bool [batch, length]: wav2vec 2.0 span masking of latent frames.

    Each row draws n = floor(prob * length / span + u), u ~ U[0, 1), at least `min_spans`, distinct
    start frames and masks `span` frames from each; spans may overlap, so with prob 0.65 and span
    10 about half the frames end up masked. Rows then keep the same number of masked frames (the
    smallest count in the batch, a random subset), so the masked frames form a [batch, M] grid.
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"mask probability must lie in (0, 1), got {prob}")
    if not 1 <= span <= length:
        raise ValueError(f"mask span {span} must lie in [1, {length}] (the number of frames)")
    n_starts = length - span + 1
    u = torch.rand(batch, generator=generator, device=device)
    n_spans = (prob * length / span + u).floor().long().clamp(min=min_spans, max=n_starts)  # [B]
    order = torch.rand(batch, n_starts, generator=generator, device=device).argsort(dim=1)  # random start order
    chosen = torch.arange(n_starts, device=device)[None] < n_spans[:, None]  # [B, n_starts] the first n_spans
    is_start = torch.zeros(batch, n_starts, dtype=torch.bool, device=device).scatter(1, order, chosen)
    mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
    for offset in range(span):  # frame t is masked when a span starts at t - offset
        mask[:, offset : offset + n_starts] |= is_start
    keep = int(mask.sum(dim=1).min())
    noise = torch.rand(batch, length, generator=generator, device=device).masked_fill(~mask, 2.0)
    rank = noise.argsort(dim=1).argsort(dim=1)  # [B, N] masked frames first, in random order
    return mask & (rank < keep)


def sample_negatives(y: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """y [B, M, F] -> distractors [B, M, n, F]: for each target, n targets drawn uniformly (with
    replacement) from the other M - 1 targets of the same row."""
    B, M, F_ = y.shape
    if M < 2:
        raise ValueError(f"need at least 2 masked frames per segment to draw distractors, got {M}")
    index = torch.randint(0, M - 1, (B, M, n), generator=generator, device=y.device)  # [B, M, n]
    index = index + (index >= torch.arange(M, device=y.device)[None, :, None]).long()  # skip the target itself
    picked = y.gather(1, index.view(B, M * n, 1).expand(-1, -1, F_))  # [B, M * n, F]
    return picked.view(B, M, n, F_)


def contrastive_logits(pred: Tensor, target: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """[B, M, 1 + n] cosine similarities / temperature of pred [B, M, F] to its target [B, M, F]
    (column 0) and distractors [B, M, n, F]; a distractor equal to the target is excluded (-inf)."""
    candidates = torch.cat([target[:, :, None], negatives], dim=2)  # [B, M, 1 + n, F]
    logits = F.cosine_similarity(pred.float()[:, :, None], candidates.float(), dim=-1) / temperature  # [B, M, 1 + n]
    same = (negatives == target[:, :, None]).all(dim=-1)  # [B, M, n]
    return torch.cat([logits[..., :1], logits[..., 1:].masked_fill(same, float("-inf"))], dim=-1)


def perplexity(probs: Tensor) -> Tensor:
    """Sum over groups of exp(entropy) of each group's code distribution probs [G, V]."""
    return torch.exp(-(probs * torch.log(probs + 1e-7)).sum(dim=-1)).sum()


@dataclass
class QuantizerOutput:
    x: Tensor  # [B, M, vq_dim] quantised vectors
    indices: Tensor  # [B, M, G] chosen entry per group (argmax, also when sampling)
    code_perplexity: Tensor  # perplexity of the hard choices in the batch
    prob_perplexity: Tensor  # perplexity of the mean softmax (what the diversity penalty raises)
    temperature: float


class GumbelQuantizer(nn.Module):
    """Product quantiser: G groups of V learnt entries; one entry per group, concatenated.

    Training picks entries by hard Gumbel-softmax with a straight-through gradient, the temperature
    annealed per training forward from `start` to `end` by `decay`; evaluation takes the argmax.
    """

    def __init__(self, in_dim: int, groups: int, entries: int, out_dim: int, temperature: tuple[float, float, float]):
        super().__init__()
        if out_dim % groups:
            raise ValueError(f"quantiser output dim {out_dim} is not divisible by {groups} groups")
        self.groups, self.entries = groups, entries
        self.schedule = temperature
        self.weight_proj = nn.Linear(in_dim, groups * entries)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.codebook = nn.Parameter(torch.empty(groups, entries, out_dim // groups).uniform_())  # [G, V, d]
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @property
    def num_vars(self) -> int:
        return self.groups * self.entries

    def temperature(self) -> float:
        start, end, decay = self.schedule
        return max(start * decay ** int(self.num_updates), end)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        B, M, _ = x.shape
        logits = self.weight_proj(x).float().view(B * M, self.groups, self.entries)  # [BM, G, V]
        indices = logits.argmax(dim=-1)  # [BM, G]
        hard = F.one_hot(indices, self.entries).to(logits.dtype)  # [BM, G, V]
        code_ppl = perplexity(hard.mean(dim=0))
        prob_ppl = perplexity(logits.softmax(dim=-1).mean(dim=0))
        tau = self.temperature()
        if self.training:
            gumbel = -torch.empty_like(logits).exponential_(generator=generator).log()  # [BM, G, V]
            soft = ((logits + gumbel) / tau).softmax(dim=-1)
            sampled = F.one_hot(soft.argmax(dim=-1), self.entries).to(soft.dtype)
            choice = sampled - soft.detach() + soft  # straight-through: hard forward, soft gradient
            self.num_updates += 1
        else:
            choice = hard
        codes = torch.einsum("ngv,gvd->ngd", choice.to(self.codebook.dtype), self.codebook)  # [BM, G, d]
        return QuantizerOutput(
            x=codes.reshape(B, M, -1), indices=indices.view(B, M, self.groups),
            code_perplexity=code_ppl, prob_perplexity=prob_ppl, temperature=tau,
        )


def random_lead_mask(lead_mask: Tensor, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """RLM: bool [..., C], each present lead dropped with probability `prob`; a row that would lose
    all its leads keeps one of them, chosen at random. Absent leads stay absent."""
    drop = torch.rand(lead_mask.shape, generator=generator, device=lead_mask.device) < prob
    kept = lead_mask & ~drop
    emptied = lead_mask.any(dim=-1) & ~kept.any(dim=-1)  # [...]
    rescue = torch.rand(lead_mask.shape, generator=generator, device=lead_mask.device).masked_fill(~lead_mask, -1.0)
    rescue = F.one_hot(rescue.argmax(dim=-1), lead_mask.shape[-1]).bool()  # [..., C] one random present lead
    return kept | (rescue & emptied[..., None])


def cmsc_loss(
    first: Tensor, second: Tensor, patient_ids: Tensor | None = None, temperature: float = 0.1
) -> tuple[Tensor, Tensor]:
    """(loss, accuracy) of contrastive multi-segment coding on embeddings first, second [B, D].

    Row i of `first` is positive with every row j of `second` of the same patient (by default the
    same recording only), negative with the rest. Each direction averages -log softmax over a
    row's positives, then over rows; the loss is the mean of both directions. Accuracy: rows whose
    most similar counterpart is a positive.
    """
    z1, z2 = F.normalize(first.float(), dim=-1), F.normalize(second.float(), dim=-1)
    logits = z1 @ z2.T / temperature  # [B, B]
    ids = torch.arange(len(z1), device=z1.device) if patient_ids is None else patient_ids
    positive = ids[:, None] == ids[None, :]  # [B, B]

    def one_direction(logits: Tensor, positive: Tensor) -> Tensor:
        log_p = logits.log_softmax(dim=-1)
        return (-(log_p * positive).sum(dim=-1) / positive.sum(dim=-1)).mean()

    loss = 0.5 * (one_direction(logits, positive) + one_direction(logits.T, positive.T))
    accuracy = positive.gather(1, logits.argmax(dim=1, keepdim=True)).float().mean()
    return loss, accuracy


@dataclass
class ECGFMPretrainOutput:
    loss: Tensor  # weighted sum of the terms below
    contrastive: Tensor  # W2V InfoNCE over masked frames
    diversity: Tensor  # (G V - prob_perplexity) / (G V)
    feature_penalty: Tensor  # mean squared conv latent
    cmsc: Tensor  # CMSC InfoNCE (0 with one segment per recording)
    accuracy: Tensor  # masked frames whose true code beats every distractor
    cmsc_accuracy: Tensor
    code_perplexity: Tensor
    prob_perplexity: Tensor
    temperature: float  # Gumbel tau of this step
    mask_fraction: float  # latent frames masked
    leads_kept: float  # present leads left after RLM


class ECGFMPretrainer(nn.Module):
    """ECG-FM encoder plus the modules only pretraining needs (mask vector, quantiser, projections).

    `forward(batch) -> ECGFMPretrainOutput` with `.loss`, for `anyecg.training.loop.train`; the
    batch format is in the module docstring. `self.encoder` is the downstream `ECGFM` (no head).
    """

    def __init__(self, config: ECGFMConfig):
        super().__init__()
        c = dataclasses.replace(config, num_classes=0)  # a head would get no gradient here
        self.config = c
        latent_dim = c.conv_layers[-1][0]
        self.encoder = ECGFM(c)
        self.mask_emb = nn.Parameter(torch.empty(c.dim).uniform_())
        self.dropout_features = nn.Dropout(c.dropout_features)
        self.quantizer = GumbelQuantizer(latent_dim, c.latent_groups, c.latent_entries, c.final_dim, c.latent_temperature)
        self.project_q = nn.Linear(c.final_dim, c.final_dim)
        self.final_proj = nn.Linear(c.dim, c.final_dim)

    def _inputs(self, batch: Mapping[str, Any] | Any) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x [B, S, C, T], lead_mask [B, S, C], patient_ids [B] or None), checked."""
        x = batch_field(batch, "x")
        if x is None or x.dim() != 4:
            raise ValueError(
                "pretraining batch needs x [B, S, C, T] (S = 2 adjacent segments per recording), "
                f"got {None if x is None else tuple(x.shape)}"
            )
        B, S, C, T = x.shape
        self.config.contract.check((B * S, C, T))
        lead_mask = batch_field(batch, "lead_mask")
        if lead_mask is None:
            lead_mask = torch.ones(B, S, C, dtype=torch.bool, device=x.device)
        elif tuple(lead_mask.shape) == (B, C):
            lead_mask = lead_mask[:, None].expand(B, S, C)
        if tuple(lead_mask.shape) != (B, S, C) or lead_mask.dtype != torch.bool:
            raise ValueError(
                f"lead_mask must be bool [B, C] = {(B, C)} or [B, S, C] = {(B, S, C)}, "
                f"got {lead_mask.dtype} {tuple(lead_mask.shape)}"
            )
        patient_ids = batch_field(batch, "patient_ids")
        if patient_ids is not None and tuple(patient_ids.shape) != (B,):
            raise ValueError(f"patient_ids must have shape {(B,)}, got {tuple(patient_ids.shape)}")
        return x, lead_mask, patient_ids

    def forward(self, batch: Mapping[str, Any] | Any, generator: torch.Generator | None = None) -> ECGFMPretrainOutput:
        c, enc = self.config, self.encoder
        x, lead_mask, patient_ids = self._inputs(batch)
        B, S, C, T = x.shape
        present = lead_mask
        if self.training:
            lead_mask = random_lead_mask(lead_mask, c.lead_mask_prob, generator)  # [B, S, C]
        x = (x * lead_mask[..., None].to(x.dtype)).reshape(B * S, C, T)  # [BS, C, T]

        conv = enc.feature_encoder(x)  # [BS, E, N]
        feature_penalty = conv.float().pow(2).mean()
        g = c.feature_grad_mult
        conv = conv * g + conv.detach() * (1.0 - g)  # same values, gradient into the conv stack scaled by g
        latents = enc.feature_norm(conv.transpose(1, 2))  # [BS, N, E]
        targets_in = self.dropout_features(latents)
        tokens = enc.dropout_input(enc.feature_proj(latents))  # [BS, N, D]

        # W2V: predict the quantised latent of masked frames among distractors
        N = tokens.shape[1]
        mask = span_mask(B * S, N, c.mask_prob, c.mask_length, generator=generator, device=x.device)  # [BS, N]
        M = int(mask[0].sum())
        context, _ = enc.transformer(torch.where(mask[..., None], self.mask_emb.to(tokens.dtype), tokens))  # [BS, N, D]
        q = self.quantizer(targets_in[mask].view(B * S, M, -1), generator)  # x: [BS, M, final_dim]
        y = self.project_q(q.x)  # [BS, M, F]
        negatives = sample_negatives(y, c.num_negatives, generator)  # [BS, M, n, F]
        pred = self.final_proj(context[mask].view(B * S, M, -1))  # [BS, M, F]
        logits = contrastive_logits(pred, y, negatives, c.logit_temperature)  # [BS, M, 1 + n]
        flat = logits.reshape(B * S * M, -1)
        contrastive = F.cross_entropy(flat, torch.zeros(len(flat), dtype=torch.long, device=flat.device))
        accuracy = (flat.argmax(dim=-1) == 0).float().mean()
        diversity = (self.quantizer.num_vars - q.prob_perplexity) / self.quantizer.num_vars

        # CMSC on an unmasked pass: the embedding downstream tasks use
        if S == 2:
            pooled = enc.transformer(tokens)[0].mean(dim=1).view(B, S, -1)  # [B, 2, D]
            cmsc, cmsc_accuracy = cmsc_loss(pooled[:, 0], pooled[:, 1], patient_ids, c.cmsc_temperature)
        elif S == 1:
            cmsc, cmsc_accuracy = contrastive.new_zeros(()), contrastive.new_zeros(())
        else:
            raise ValueError(f"x must hold 1 or 2 segments per recording, got {S}")

        loss = (
            contrastive + c.diversity_weight * diversity + c.feature_penalty_weight * feature_penalty
            + c.cmsc_weight * cmsc
        )
        return ECGFMPretrainOutput(
            loss=loss, contrastive=contrastive.detach(), diversity=diversity.detach(),
            feature_penalty=feature_penalty.detach(), cmsc=cmsc.detach(), accuracy=accuracy,
            cmsc_accuracy=cmsc_accuracy, code_perplexity=q.code_perplexity, prob_perplexity=q.prob_perplexity.detach(),
            temperature=q.temperature, mask_fraction=M / N,
            leads_kept=float(lead_mask.sum()) / max(float(present.sum()), 1.0),
        )


PRETRAINING_ONLY = ("mask_emb", "quantizer.", "project_q.", "final_proj.")


def load_encoder_weights(model: ECGFM, state_dict: Mapping[str, Tensor]) -> None:
    """Load an `ECGFMPretrainer` (or `ECGFM`) state dict into `model`, leaving its head as it is.

    Pretraining-only modules are skipped; any other missing or unexpected key raises, listing them.
    """
    if any(k.startswith("encoder.") for k in state_dict):
        state_dict = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("head.",) + PRETRAINING_ONLY)}
    expected = {k for k in model.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(f"ECG-FM weights do not match the model: missing {missing}, unexpected {unexpected}")
    head = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}  # kept as it is
    model.load_state_dict({**state_dict, **head}, strict=True)


# ---------------------------------------------------------------------------------------------
# Pretraining data: two adjacent windows per recording


class SegmentPairs(torch.utils.data.Dataset):
    """Two adjacent windows of one recording per item, at the model's rate and lead slots.

    `records[i]` needs `.signal` [L, T], `.fs`, `.leads` and optionally `.patient_id`: a prepared
    `Store` (signals z-scored per lead) or a list of `Recording`s both work. The pair starts at a
    random sample, drawn from (seed, epoch, index) so a resumed run repeats it; a record shorter
    than two windows gives overlapping windows (identical when shorter than one).
    """

    def __init__(self, records: Sequence[Any], contract: SignalContract, seed: int = 0):
        self.records = records
        self.contract = contract
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        x, lead_mask = place_leads(np.asarray(record.signal), list(record.leads), self.contract)
        x = convert_rate(x, float(record.fs), self.contract.fs)  # [C, T']
        n = self.contract.n_samples
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start = int(rng.integers(0, x.shape[1] - 2 * n + 1)) if x.shape[1] >= 2 * n else 0
        second = start + n if x.shape[1] >= 2 * n else max(x.shape[1] - n, 0)
        pair = np.stack([fit_window(x[:, start:], n), fit_window(x[:, second:], n)])  # [2, C, n]
        patient = getattr(record, "patient_id", None)
        return {"x": pair, "lead_mask": lead_mask, "patient_id": str(patient) if patient else f"record-{index}"}


def collate_pairs(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """{"x": [B, 2, C, T], "lead_mask": [B, C], "patient_ids": [B]} (equal ids: same patient)."""
    codes: dict[str, int] = {}
    ids = [codes.setdefault(item["patient_id"], len(codes)) for item in items]
    return {
        "x": torch.from_numpy(np.stack([item["x"] for item in items])),
        "lead_mask": torch.from_numpy(np.stack([item["lead_mask"] for item in items])),
        "patient_ids": torch.tensor(ids, dtype=torch.long),
    }


# ---------------------------------------------------------------------------------------------
# Presets

PRESETS: dict[str, dict[str, Any]] = {
    "ecgfm-tiny": {
        "description": "test-scale ECG-FM for unit tests and CPU smoke runs",
        "paper_parameters": None,
        "config": {
            "conv_layers": ((32, 2, 2),) * 4, "dim": 64, "depth": 2, "n_heads": 4, "ffn_dim": 128,
            "pos_conv_kernel": 16, "pos_conv_groups": 4, "final_dim": 32, "latent_entries": 32, "num_negatives": 20,
        },
    },
    "ecgfm-small": {
        "description": "laptop-CPU ECG-FM: minutes of pretraining on a few hundred recordings",
        "paper_parameters": None,
        "config": {
            "conv_layers": ((128, 2, 2),) * 4, "dim": 256, "depth": 4, "n_heads": 4, "ffn_dim": 1024,
            "pos_conv_kernel": 64, "pos_conv_groups": 16, "final_dim": 128, "latent_entries": 100, "num_negatives": 50,
        },
    },
    "ecgfm-base": {
        "description": "ECG-FM base: wav2vec 2.0 base encoder, the size of the public ECG-FM checkpoints",
        "paper_parameters": 90_883_072,
        "config": {},
    },
    "ecgfm-large": {
        "description": "ECG-FM as in the paper: BERT-large sized encoder (pre-norm assumed, as wav2vec 2.0 large)",
        "paper_parameters": 311_940_352,
        "config": {"dim": 1024, "depth": 24, "n_heads": 16, "ffn_dim": 4096, "norm_first": True},
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the named preset (safe to modify)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ECG-FM preset {name!r}; known: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def ecgfm_config(name: str, **overrides: Any) -> ECGFMConfig:
    """The preset's ECGFMConfig, with any field replaced by `overrides`."""
    return ECGFMConfig(**{**get_preset(name)["config"], **overrides})


def build_ecgfm(name: str, **overrides: Any) -> ECGFM:
    return ECGFM(ecgfm_config(name, **overrides))


def build_pretrainer(name: str, **overrides: Any) -> ECGFMPretrainer:
    return ECGFMPretrainer(ecgfm_config(name, **overrides))


@lru_cache(maxsize=None)
def count_parameters(name: str) -> dict[str, int]:
    """{"pretraining": n, "encoder": n} for a preset, counted on the meta device."""
    with torch.device("meta"):
        pretrainer = build_pretrainer(name)
    return {
        "pretraining": sum(p.numel() for p in pretrainer.parameters()),
        "encoder": sum(p.numel() for p in pretrainer.encoder.parameters()),
    }


def list_presets() -> list[dict[str, Any]]:
    """One entry per preset, for `anyecg models --json`; `parameters` counts the pretraining model
    (encoder + mask vector, quantiser and projections), as ECG-FM's published counts do."""
    entries = []
    for name, preset in PRESETS.items():
        config = ecgfm_config(name)
        counts = count_parameters(name)
        entries.append({
            "name": name,
            "family": "ecgfm",
            "parameters": counts["pretraining"],
            "parameters_counted": "encoder + pretraining modules (quantiser, projections, mask vector)",
            "encoder_parameters": counts["encoder"],
            "paper_parameters": preset["paper_parameters"],
            "fs": int(config.fs),
            "window_s": int(config.window_s),
            "leads": len(config.leads),
            "dim": config.dim,
            "depth": config.depth,
            "n_heads": config.n_heads,
            "description": preset["description"],
        })
    return entries
