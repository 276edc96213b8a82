"""The rhythm codebook: vector quantisation of tokenizer outputs by cosine similarity.

Lookup (paper): z = argmin_i || h / ||h|| - v_i / ||v_i|| ||^2, i.e. the code with the largest
cosine similarity. Losses on the l2-normalised vectors, averaged over non-padding tokens:

    codebook   = || sg(h) - v_z ||^2
    commitment = beta * || h - sg(v_z) ||^2

(squared l2 norm per token, so each lies in [0, 4]). The quantised output uses the
straight-through estimator: its value is v_z, its gradient goes to h unchanged.

Codebook health (the loss term the paper's ablation found most important) is reported as usage
(fraction of the K codes used by the batch's real tokens) and perplexity (exp of the entropy of
the code histogram; K when all codes are used equally). Two switchable dead-code remedies:

- `kmeans_init`: the first training tokens seed the codes by spherical k-means: the first batch,
  or with `kmeans_pool` a pool of that many tokens gathered over the first steps (one batch of a
  few hundred tokens for 1,024 codes gives jittered duplicates).
- `restart_after`: a code unused for that many training steps is re-seeded from a random recent
  encoder output (0 disables).

Two switchable training aids:

- `ema_decay` > 0: each code follows an exponential moving average of the (unit) tokens assigned to
  it, renormalised, instead of the optimiser (VQ-VAE-2 / BEiT v2 style); the codebook loss then
  trains nothing and weight decay cannot shrink the codes.
- `beta_warmup_steps`: the commitment weight ramps linearly from 0 to beta, so the commitment loss
  cannot pull the encoder outputs together before the codes have spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class CodebookOutput:
    quantized: Tensor  # [..., d_c] unit-norm code vectors, straight-through gradient to the input
    indices: Tensor  # [...] long, -1 at padding tokens
    codebook_loss: Tensor  # scalar
    commitment_loss: Tensor  # scalar, beta already applied
    usage: Tensor  # scalar in [0, 1]: fraction of codes used by the batch's non-padding tokens
    perplexity: Tensor  # scalar in [1, K]
    restarted: int  # codes re-seeded at the start of this step


def cosine_lookup(h_unit: Tensor, codes_unit: Tensor, chunk: int = 4096) -> Tensor:
    """Nearest code by cosine similarity: h_unit [M, d], codes_unit [K, d] (both unit rows) -> [M] long.

    Scores are computed `chunk` rows at a time so M x K never has to fit at once.
    """
    if len(h_unit) == 0:
        return torch.zeros(0, dtype=torch.long, device=h_unit.device)
    return torch.cat([(part @ codes_unit.T).argmax(dim=-1) for part in h_unit.split(chunk)])


def spherical_kmeans(x: Tensor, k: int, iters: int = 10) -> Tensor:
    """k unit-norm centres for the unit-norm rows of x [M, d] (Lloyd's algorithm, cosine assignment).

    With fewer rows than centres, rows are drawn with replacement and jittered so that duplicate
    centres separate. Uses the global torch RNG.
    """
    if len(x) >= k:
        centres = x[torch.randperm(len(x), device=x.device)[:k]]
    else:
        centres = x[torch.randint(len(x), (k,), device=x.device)]
        centres = F.normalize(centres + 0.01 * torch.randn_like(centres), dim=-1)
    for _ in range(iters):
        assign = cosine_lookup(x, centres)  # [M]
        sums = torch.zeros_like(centres).index_add_(0, assign, x)  # [k, d]
        counts = torch.bincount(assign, minlength=k)  # [k]
        # An empty cluster keeps its previous centre.
        centres = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), centres)
    return centres


def code_usage(counts: Tensor) -> tuple[Tensor, Tensor]:
    """(usage fraction, perplexity) of a code histogram counts [K]."""
    total = counts.sum().clamp(min=1)
    probs = counts.float() / total
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return (counts > 0).float().mean(), torch.exp(entropy)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class RhythmCodebook(nn.Module):
    """K codes of dimension d_c with cosine lookup, VQ losses and dead-code remedies.

    forward(h [..., d_c], valid [...] bool) -> CodebookOutput. In training mode the module may
    rewrite its own codes (k-means init, restarts) at the start of a step; in eval mode it never
    changes state. Under torch.distributed the code histogram is summed over ranks and rank 0's
    rewritten codes are broadcast, so every rank keeps the same codebook.
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        restart_after: int = 0,
        history: int = 4096,
        kmeans_pool: int = 0,
        ema_decay: float = 0.0,
        beta_warmup_steps: int = 0,
    ):
        super().__init__()
        if restart_after < 0:
            raise ValueError(f"restart_after must be >= 0 (0 disables restarts), got {restart_after}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) (0: codes trained by the optimiser), got {ema_decay}")
        if kmeans_pool < 0 or beta_warmup_steps < 0:
            raise ValueError(f"kmeans_pool and beta_warmup_steps must be >= 0, got {kmeans_pool}, {beta_warmup_steps}")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.beta = beta
        self.kmeans_iters = kmeans_iters
        self.kmeans_pool = kmeans_pool
        self.restart_after = restart_after
        self.ema_decay = ema_decay
        self.beta_warmup_steps = beta_warmup_steps
        codes = F.normalize(torch.randn(num_codes, code_dim), dim=-1)  # [K, d_c]
        self.codes = nn.Parameter(codes, requires_grad=ema_decay == 0.0)
        # Persistent, so a loaded checkpoint is not re-initialised by its first batch.
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))
        # Saved only where they are used, so checkpoints without these aids keep their keys.
        self.register_buffer("ema_sum", codes.clone(), persistent=ema_decay > 0)  # [K, d_c]
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long), persistent=beta_warmup_steps > 0)
        # Ring buffer of recent unit-norm encoder outputs: the pool restarts and k-means draw from.
        self.register_buffer("history", torch.zeros(max(history, kmeans_pool), code_dim), persistent=False)
        self._history_len = 0
        self._history_next = 0

    def lookup(self, h: Tensor) -> Tensor:
        """Code indices for h [..., d_c] -> [...] long; no state change, no gradient."""
        with torch.no_grad():
            codes_unit = F.normalize(self.codes.float(), dim=-1)
            flat = F.normalize(h.float().reshape(-1, self.code_dim), dim=-1)
            return cosine_lookup(flat, codes_unit).view(h.shape[:-1])

    def forward(self, h: Tensor, valid: Tensor) -> CodebookOutput:
        if h.shape[-1] != self.code_dim or tuple(h.shape[:-1]) != tuple(valid.shape):
            raise ValueError(
                f"expected h [..., {self.code_dim}] and valid [...] of matching shapes, "
                f"got h {tuple(h.shape)} and valid {tuple(valid.shape)}"
            )
        with torch.autocast(h.device.type, enabled=False):
            # float32 throughout: bf16 cosine scores would tie and flip code assignments.
            return self._quantize(h.float(), valid)

    def _quantize(self, h: Tensor, valid: Tensor) -> CodebookOutput:
        flat = F.normalize(h.reshape(-1, self.code_dim), dim=-1)  # [M, d_c]
        flat_valid = valid.reshape(-1)  # [M]
        restarted = 0
        if self.training:
            if not bool(self.initialized):
                self._kmeans_init(flat[flat_valid].detach())
            if self.restart_after > 0 and bool(self.initialized):
                restarted = self._restart_dead_codes()

        codes_unit = F.normalize(self.codes.float(), dim=-1)  # [K, d_c]
        indices = cosine_lookup(flat.detach(), codes_unit.detach())  # [M]
        chosen = codes_unit[indices]  # [M, d_c], gradient reaches self.codes
        weight = flat_valid.to(flat.dtype)  # [M]
        n_valid = weight.sum().clamp(min=1.0)
        codebook_loss = (((flat.detach() - chosen) ** 2).sum(-1) * weight).sum() / n_valid
        commitment_loss = self._beta() * (((flat - chosen.detach()) ** 2).sum(-1) * weight).sum() / n_valid
        quantized = flat + (chosen - flat).detach()  # value = code, gradient = identity to h
        quantized = quantized * weight[:, None]  # padding tokens carry zeros

        with torch.no_grad():
            counts = torch.bincount(indices[flat_valid], minlength=self.num_codes)  # [K]
            if self.training and _distributed():
                dist.all_reduce(counts)
            usage, perplexity = code_usage(counts)
            if self.training:
                self.unused_steps += 1
                self.unused_steps[counts > 0] = 0
                self.train_steps += 1
                self._remember(flat[flat_valid].detach())
                if self.ema_decay > 0 and bool(self.initialized):
                    self._ema_update(flat[flat_valid].detach(), indices[flat_valid])

        return CodebookOutput(
            quantized=quantized.view(*valid.shape, self.code_dim),
            indices=indices.masked_fill(~flat_valid, -1).view(valid.shape),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            usage=usage,
            perplexity=perplexity,
            restarted=restarted,
        )

    def _beta(self) -> float:
        if self.beta_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, int(self.train_steps) / self.beta_warmup_steps)

    @torch.no_grad()
    def _kmeans_init(self, tokens: Tensor) -> None:
        """Seed the codes from this batch, or once the pool of recent tokens is full."""
        if self.kmeans_pool > 0:
            if self._history_len + len(tokens) < self.kmeans_pool:
                return  # `_remember` adds this batch to the pool after the step
            self._remember(tokens)
            tokens = self.history[: self._history_len]
        if len(tokens) == 0:
            return  # an all-padding batch cannot seed anything; wait for the next one
        # `.data`: the codes are rewritten outside autograd (no earlier graph uses them yet).
        self.codes.data.copy_(spherical_kmeans(tokens.float(), self.num_codes, self.kmeans_iters))
        self._sync_codes()
        self.ema_sum.copy_(self.codes.data)
        self.unused_steps.zero_()  # steps before the seeding say nothing about the new codes
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, tokens: Tensor, assigned: Tensor) -> None:
        """Move each code towards the mean direction of its tokens [M, d_c] (assigned [M])."""
        sums = torch.zeros_like(self.ema_sum).index_add_(0, assigned, tokens.to(self.ema_sum.dtype))  # [K, d_c]
        if _distributed():
            dist.all_reduce(sums)
        self.ema_sum.mul_(self.ema_decay).add_(sums, alpha=1.0 - self.ema_decay)
        # a code no token reaches keeps its direction while its EMA sum decays (until it underflows)
        alive = self.ema_sum.norm(dim=-1, keepdim=True) > 1e-20  # [K, 1]
        self.codes.data.copy_(torch.where(alive, F.normalize(self.ema_sum, dim=-1), self.codes.data.float()).to(self.codes.dtype))

    @torch.no_grad()
    def _remember(self, tokens: Tensor) -> None:
        """Append unit-norm encoder outputs [M, d_c] to the ring buffer (the newest win when M is large)."""
        capacity = len(self.history)
        tokens = tokens[-capacity:]
        slots = (self._history_next + torch.arange(len(tokens), device=tokens.device)) % capacity
        self.history[slots] = tokens.to(self.history.dtype)
        self._history_next = (self._history_next + len(tokens)) % capacity
        self._history_len = min(capacity, self._history_len + len(tokens))

    @torch.no_grad()
    def _restart_dead_codes(self) -> int:
        """Re-seed codes unused for `restart_after` steps from the history; returns how many."""
        dead = (self.unused_steps >= self.restart_after).nonzero().squeeze(1)  # [n_dead]
        if len(dead) == 0 or self._history_len == 0:
            return 0
        if self._history_len >= len(dead):
            pick = torch.randperm(self._history_len, device=dead.device)[: len(dead)]
        else:
            pick = torch.randint(self._history_len, (len(dead),), device=dead.device)
        # `.data`: rewritten outside autograd. Adam moments of these rows are left as they are.
        self.codes.data[dead] = self.history[pick].to(self.codes.dtype)
        self._sync_codes()
        self.ema_sum[dead] = self.codes.data[dead].to(self.ema_sum.dtype)
        self.unused_steps[dead] = 0
        return len(dead)

    def _sync_codes(self) -> None:
        if _distributed():
            dist.broadcast(self.codes.data, src=0)
