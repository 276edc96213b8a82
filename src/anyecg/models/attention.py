"""Cross-Mask Attention (CMA), the attention of every AnyECG transformer block.

Tokens form a grid (lead j, second k) flattened lead-major to N = L * P, token n = j * P + k.
Token (j, k) may attend to (j', k') iff j' == j (same lead, any time) or |k - k'| <= w (same moment
within a tolerance w, the paper's "mask width", any lead). Padding keys (absent leads, seconds past
a record's end) are never attended, except that every token may attend to itself: a padded query
then still has one allowed key, so its (ignored) output is finite instead of NaN.

Two exact implementations share one set of weights:

- `"dense"`: builds the N x N boolean mask (`cross_mask`) and calls
  `F.scaled_dot_product_attention`. Readable reference; memory and time grow with N^2.
- `"structured"`: never forms N x N. On the grid view it scores each query against its own lead's
  P keys and against the other leads' keys within +/- w seconds (L * (2w + 1) slots), takes one
  softmax over both sets and sums the values. That is N * (P + L(2w+1)) scores instead of N^2, a
  large saving for many leads (12 leads x 85 s, w = 1: 8.4x fewer). It runs in chunks of
  (batch, head) rows with a hand-written backward that recomputes each chunk's probabilities, so
  its working memory stays small. It computes in the dtype of q, k, v; the softmax runs in
  float32 (float64 for float64 inputs).

`benchmarks/cma_attention.py` times both on CPU. The structured path wins there where it saves many
scores: N / (P + (2w+1) L) is 8.4 for 12 leads x 85 s (2.3x faster) but 2.6 for 12 x 10 s and
below 2 for one or two leads, where PyTorch's fused dense kernel is faster. `"auto"` (the module's
default) takes the structured path on CPU from a saving of `AUTO_MIN_SAVING` on, the dense one
below, and the dense one on every accelerator: on an H200 (AnyECG-B, bf16, 12 x 85 s, batch 8,
`benchmarks/pretrain_throughput.py`) a training step took 97 ms dense and 1,868 ms structured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMPLS = ("auto", "structured", "dense")

# Score saving N / (P + (2w+1) L) from which "auto" runs the structured path. Measured on CPU (1 and
# 2 threads, whole module forward + backward, ~4k tokens a batch): dense faster up to a saving of
# ~4.4 (12 x 20 s, 6 x 50 s), structured faster from ~5.5 (12 x 30 s: 1.04-1.08x; 12 x 85 s: 1.7x).
AUTO_MIN_SAVING = 5.0


def resolve_impl(impl: str, grid: tuple[int, int], tolerance: int, device: torch.device | str = "cpu") -> str:
    """The implementation that runs for `impl` on an (L, P) grid on `device`: "auto" picks dense
    on accelerators (fused kernels) and, on CPU, by the score saving."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    if torch.device(device).type != "cpu":
        return "dense"
    n_leads, n_patches = grid
    saving = n_leads * n_patches / (n_patches + (2 * tolerance + 1) * n_leads)
    return "structured" if saving >= AUTO_MIN_SAVING else "dense"


def _check_grid(n_tokens: int, grid: tuple[int, int], pad_mask: Tensor | None, batch: int | None) -> None:
    n_leads, n_patches = grid
    if n_leads < 1 or n_patches < 1 or n_leads * n_patches != n_tokens:
        raise ValueError(
            f"grid (leads={n_leads}, patches={n_patches}) does not match {n_tokens} tokens "
            f"(need leads * patches == tokens, both >= 1)"
        )
    if pad_mask is not None:
        expected = (batch, n_tokens) if batch is not None else (pad_mask.shape[0], n_tokens)
        if pad_mask.dim() != 2 or tuple(pad_mask.shape) != expected or pad_mask.dtype != torch.bool:
            raise ValueError(
                f"pad_mask must be a bool tensor of shape {expected} (True = padding), "
                f"got {pad_mask.dtype} {tuple(pad_mask.shape)}"
            )


def _check_tolerance(tolerance: int) -> None:
    if tolerance < 0:
        raise ValueError(f"tolerance (mask width) must be >= 0, got {tolerance}")


def _check_qkv(q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int], tolerance: int, pad_mask: Tensor | None):
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape or not q.dtype == k.dtype == v.dtype:
        raise ValueError(
            f"q, k, v must be [B, H, N, head_dim] of one shape and dtype, got "
            f"{tuple(q.shape)} {q.dtype}, {tuple(k.shape)} {k.dtype}, {tuple(v.shape)} {v.dtype}"
        )
    _check_tolerance(tolerance)
    _check_grid(q.shape[2], grid, pad_mask, q.shape[0])


def cross_mask(
    n_leads: int,
    n_patches: int,
    tolerance: int,
    pad_mask: Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Dense CMA mask, True where query token n may attend key token m.

    pad_mask: bool [B, N], True = padding token (N = n_leads * n_patches, lead-major).
    Returns bool [B, N, N], or [1, N, N] when pad_mask is None, on pad_mask's device (else
    `device`). Padded keys are masked except on the diagonal, so no row is ever fully masked.
    """
    _check_tolerance(tolerance)
    n_tokens = n_leads * n_patches
    _check_grid(n_tokens, (n_leads, n_patches), pad_mask, None)
    device = pad_mask.device if pad_mask is not None else device
    # Lead and second of each lead-major token, by broadcasting rather than // and % (which the
    # ONNX exporter cannot translate for a dynamic number of patches).
    lead = torch.arange(n_leads, device=device)[:, None].expand(n_leads, n_patches).reshape(-1)  # [N]
    second = torch.arange(n_patches, device=device)[None, :].expand(n_leads, n_patches).reshape(-1)  # [N]
    same_lead = lead[:, None] == lead[None, :]  # [N, N]
    same_time = (second[:, None] - second[None, :]).abs() <= tolerance  # [N, N]
    allowed = (same_lead | same_time)[None]  # [1, N, N]
    if pad_mask is None:
        return allowed
    self_pair = torch.eye(n_tokens, dtype=torch.bool, device=device)[None]  # [1, N, N]
    key_ok = ~pad_mask[:, None, :] | self_pair  # [B, N, N]
    return allowed & key_ok


def _structured_key_bias(
    n_leads: int, n_patches: int, tolerance: int, pad_mask: Tensor | None, device: torch.device
) -> Tensor:
    """Additive score bias of the structured layout: float32 [B|1, L, P, P + (2w+1) * L], 0 or -inf.

    pad_mask: bool [B, N] of the elements concerned (None: no padding, batch axis 1).
    Last axis: the P keys of the query's own lead, then for each window offset o in [-w, w] the key
    (j', k + o) of every lead j'. The own lead is excluded from the window part (it is in the
    same-lead part already), as are seconds outside [0, P) and padded keys. A query may always
    attend to itself. (A float bias, not a bool mask: adding it is ~10x cheaper than masked_fill.)
    """
    L, P, w = n_leads, n_patches, tolerance
    width = 2 * w + 1
    if pad_mask is None:
        valid = torch.ones(1, L, P, dtype=torch.bool, device=device)  # [1, L, P]
    else:
        valid = ~pad_mask.view(-1, L, P)  # [B, L, P]
    batch = valid.shape[0]
    self_pair = torch.eye(P, dtype=torch.bool, device=device)  # [P, P']
    same_lead = valid[:, :, None, :] | self_pair  # [B, L, P, P']
    # Time-major validity padded with False by w seconds, then one window per second.
    valid_t = F.pad(valid.transpose(1, 2), (0, 0, w, w), value=False)  # [B, P + 2w, L]
    window = valid_t.unfold(1, width, 1).permute(0, 1, 3, 2)  # [B, P, W, L(j')]
    other_lead = ~torch.eye(L, dtype=torch.bool, device=device)  # [L(j), L(j')]
    window = window[:, None] & other_lead[None, :, None, None, :]  # [B, L(j), P, W, L(j')]
    allowed = torch.cat([same_lead, window.reshape(batch, L, P, width * L)], dim=-1)  # [B, L, P, S]
    return torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, float("-inf"))


def _windows(t: Tensor, tolerance: int) -> Tensor:
    """Keys or values of the +/- w seconds around each second, all leads, zero outside the record.

    t: [R, L, P, hd] -> [R, P, (2w+1) * L, hd]; slot o * L + j' at second k holds t[:, j', k + o - w].
    """
    R, L, P, hd = t.shape
    width = 2 * tolerance + 1
    padded = F.pad(t, (0, 0, tolerance, tolerance))  # [R, L, P + 2w, hd]
    win = padded.unfold(2, width, 1)  # [R, L, P, hd, W]
    win = win.permute(0, 2, 4, 1, 3)  # [R, P, W, L, hd]
    return win.reshape(R, P, width * L, hd)


def _unwindow(g: Tensor, n_leads: int, tolerance: int) -> Tensor:
    """Adjoint of `_windows`: add each window slot back onto the key it was read from.

    g: [R, P, (2w+1) * L, hd] -> time-major [R, P, L, hd].
    """
    R, P, _, hd = g.shape
    width = 2 * tolerance + 1
    g = g.view(R, P, width, n_leads, hd)
    acc = g.new_zeros(R, P + 2 * tolerance, n_leads, hd)  # padded by w seconds
    for offset in range(width):
        acc[:, offset : offset + P] += g[:, :, offset]
    return acc[:, tolerance : tolerance + P]


def _softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax and its backward run in float32, or float64 when the inputs are float64."""
    return torch.promote_types(dtype, torch.float32)


def _matmul_into(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    """out = a @ b for 4-D operands, written straight into `out` (a contiguous slice)."""
    torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), out=out.view(-1, *out.shape[-2:]))
    return out


# Score elements per chunk of (batch, head) rows: bounds the structured path's working memory to a
# few float32 buffers of 1 MiB whatever N is (small enough to stay in cache, which on CPU is as
# fast as larger chunks), at the cost of a Python loop over chunks.
_CHUNK_SCORES = 2**18


class _StructuredCMA(torch.autograd.Function):
    """Exact CMA on the grid view, chunked over (batch, head) rows.

    Each query scores its own lead (lead-major [c, L, P, P']) and the other leads within +/- w
    seconds (computed time-major [c, P, L, W*L]); one softmax runs over both sets side by side
    ([c, L, P, S], S = P + W*L). Only q, k, v and the output are kept for the backward, which
    recomputes each chunk's probabilities (as flash attention does), so no chunk's S-sized buffers
    outlive it.
    """

    @staticmethod
    def _probs(q, k, q_t, k_win, bias):
        """Attention probabilities [c, L, P, S] of one chunk (float32, float64 for float64 inputs).

        bias: [n, L, P, S] with c = n * rows: each bias entry serves c / n consecutive rows.
        """
        s_lead = q @ k.transpose(-1, -2)  # [c, L, P, P']
        s_win = q_t @ k_win.transpose(-1, -2)  # [c, P, L, W*L]
        scores = torch.cat([s_lead, s_win.transpose(1, 2)], dim=-1).to(_softmax_dtype(q.dtype))  # [c, L, P, S]
        scores.view(bias.shape[0], -1, *scores.shape[1:]).add_(bias[:, None])  # [n, c / n, L, P, S]
        return torch.softmax(scores, dim=-1)

    @staticmethod
    def _chunks(ctx):
        """(first row, last row + 1, score bias of its batch elements) of every chunk.

        Row r belongs to batch element r // heads; a chunk holds either whole batch elements or
        some heads of one element. The bias is built per chunk, or once per element shared by its
        chunks, so it never outgrows a chunk's scores (a whole batch's would be B x L x P x S).
        """
        rows, L, P, _ = ctx.shape
        pad, heads, w = ctx.pad_mask, ctx.heads, ctx.tolerance
        device = ctx.device
        size = max(1, _CHUNK_SCORES // (L * P * (P + L * (2 * w + 1))))
        if pad is None:
            bias = _structured_key_bias(L, P, w, None, device)  # [1, L, P, S], shared by every row
            for r0 in range(0, rows, size):
                yield r0, min(rows, r0 + size), bias
        elif size >= heads:
            size -= size % heads
            for r0 in range(0, rows, size):
                r1 = min(rows, r0 + size)
                yield r0, r1, _structured_key_bias(L, P, w, pad[r0 // heads : r1 // heads], device)
        else:
            for b in range(pad.shape[0]):
                bias = _structured_key_bias(L, P, w, pad[b : b + 1], device)  # [1, L, P, S]
                for h0 in range(0, heads, size):
                    yield b * heads + h0, b * heads + min(heads, h0 + size), bias

    @staticmethod
    def _dropout_keep(ctx, r0, shape, device):
        """The same keep-mask in forward and backward, regenerated from a per-chunk seed."""
        gen = torch.Generator(device=device).manual_seed(ctx.seed + r0)
        return torch.rand(shape, generator=gen, device=device) >= ctx.dropout_p

    @staticmethod
    def forward(ctx, q, k, v, pad_mask, heads, tolerance, dropout_p):
        # q, k, v: [R, L, P, hd], R = B * heads; pad_mask: bool [B, N] or None
        ctx.shape, ctx.heads, ctx.tolerance, ctx.dropout_p = q.shape, heads, tolerance, dropout_p
        ctx.scale = q.shape[-1] ** -0.5
        ctx.pad_mask, ctx.device = pad_mask, q.device
        ctx.seed = int(torch.randint(0, 2**62, ())) if dropout_p > 0 else 0
        out = torch.empty(v.shape, dtype=v.dtype, device=v.device)  # [R, L, P, hd]
        with torch.autocast(q.device.type, enabled=False):  # compute in the inputs' dtype
            for r0, r1, chunk_bias in _StructuredCMA._chunks(ctx):
                _StructuredCMA._forward_chunk(ctx, r0, q[r0:r1], k[r0:r1], v[r0:r1], chunk_bias, out[r0:r1])
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out = ctx.saved_tensors
        grad_out = grad_out.to(v.dtype)
        grads = [torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3)]  # dq, dk, dv
        with torch.autocast(q.device.type, enabled=False):  # compute in the inputs' dtype
            for r0, r1, chunk_bias in _StructuredCMA._chunks(ctx):
                rows = slice(r0, r1)
                _StructuredCMA._backward_chunk(
                    ctx, r0, q[rows], k[rows], v[rows], out[rows], grad_out[rows], chunk_bias, *(g[rows] for g in grads)
                )
        return *grads, None, None, None, None

    # One chunk per call, so its buffers are freed on return rather than living on into the next.
    @staticmethod
    def _forward_chunk(ctx, r0, q, k, v, bias, out):
        """Writes the chunk's output into `out`; q, k, v, out: [c, L, P, hd]."""
        P, w = q.shape[2], ctx.tolerance
        q = q * ctx.scale
        probs = _StructuredCMA._probs(q, k, q.transpose(1, 2).contiguous(), _windows(k, w), bias)  # [c, L, P, S]
        if ctx.dropout_p > 0:
            keep = _StructuredCMA._dropout_keep(ctx, r0, probs.shape, probs.device)
            probs = probs.mul_(keep).div_(1.0 - ctx.dropout_p)
        probs = probs.to(v.dtype)
        p_win = probs[..., P:].transpose(1, 2).contiguous()  # [c, P, L, W*L]
        out_win = p_win @ _windows(v, w)  # [c, P, L, hd]
        _matmul_into(probs[..., :P], v, out).add_(out_win.transpose(1, 2))

    @staticmethod
    def _backward_chunk(ctx, r0, q, k, v, out, grad_out, bias, grad_q, grad_k, grad_v):
        """Writes the chunk's gradients into grad_q, grad_k, grad_v; every tensor [c, L, P, hd]."""
        L, P, w, p_drop = q.shape[1], q.shape[2], ctx.tolerance, ctx.dropout_p
        acc = _softmax_dtype(q.dtype)
        q = q * ctx.scale
        q_t = q.transpose(1, 2).contiguous()  # [c, P, L, hd]
        go_t = grad_out.transpose(1, 2).contiguous()  # [c, P, L, hd]
        k_win, v_win = _windows(k, w), _windows(v, w)  # [c, P, W*L, hd]
        probs = _StructuredCMA._probs(q, k, q_t, k_win, bias)  # [c, L, P, S], acc dtype

        # Values: gradient through the (dropped-out) probabilities.
        dp_lead = grad_out @ v.transpose(-1, -2)  # [c, L, P, P']
        dp_win = go_t @ v_win.transpose(-1, -2)  # [c, P, L, W*L]
        grad_p = torch.cat([dp_lead, dp_win.transpose(1, 2)], dim=-1).to(acc)  # [c, L, P, S]
        del dp_lead, dp_win
        used = probs
        if p_drop > 0:
            keep = _StructuredCMA._dropout_keep(ctx, r0, probs.shape, probs.device)
            used = probs * keep / (1.0 - p_drop)
            grad_p = grad_p.mul_(keep).div_(1.0 - p_drop)
        used = used.to(v.dtype)
        used_win = used[..., P:].transpose(1, 2).contiguous()  # [c, P, L, W*L]
        grad_v_win = _unwindow(used_win.transpose(-1, -2) @ go_t, L, w)  # [c, P, L, hd]
        _matmul_into(used[..., :P].transpose(-1, -2), grad_out, grad_v).add_(grad_v_win.transpose(1, 2))
        del used, used_win, grad_v_win

        # Softmax backward: ds = p * (dp - sum_m p_m dp_m), and that sum equals dO . O (flash attention).
        delta = (grad_out.to(acc) * out.to(acc)).sum(-1, keepdim=True)  # [c, L, P, 1]
        grad_s = probs.mul_(grad_p.sub_(delta)).to(q.dtype)  # [c, L, P, S]
        del grad_p
        grad_s_lead = grad_s[..., :P]  # [c, L, P, P']
        grad_s_win = grad_s[..., P:].transpose(1, 2).contiguous()  # [c, P, L, W*L]
        grad_q_win = grad_s_win @ k_win  # [c, P, L, hd]
        _matmul_into(grad_s_lead, k, grad_q).add_(grad_q_win.transpose(1, 2)).mul_(ctx.scale)
        grad_k_win = _unwindow(grad_s_win.transpose(-1, -2) @ q_t, L, w)  # [c, P, L, hd]
        _matmul_into(grad_s_lead.transpose(-1, -2), q, grad_k).add_(grad_k_win.transpose(1, 2))


def dense_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    grid: tuple[int, int],
    tolerance: int,
    pad_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Reference CMA: the N x N mask from `cross_mask` through `F.scaled_dot_product_attention`.

    q, k, v: [B, H, N, hd] with N = L * P lead-major; pad_mask: bool [B, N] (True = padding).
    Returns [B, H, N, hd].
    """
    _check_qkv(q, k, v, grid, tolerance, pad_mask)
    mask = cross_mask(grid[0], grid[1], tolerance, pad_mask, device=q.device)  # [B|1, N, N]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=dropout_p)


def structured_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    grid: tuple[int, int],
    tolerance: int,
    pad_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Exact CMA without an N x N mask.

    q, k, v: [B, H, N, hd] with N = L * P lead-major; pad_mask: bool [B, N] (True = padding).
    Returns [B, H, N, hd], equal to softmax(q k^T / sqrt(hd) + M) v with M from `cross_mask`.
    """
    _check_qkv(q, k, v, grid, tolerance, pad_mask)
    B, H, N, hd = q.shape
    L, P = grid
    q, k, v = (t.reshape(B * H, L, P, hd).contiguous() for t in (q, k, v))
    out = _StructuredCMA.apply(q, k, v, pad_mask, H, tolerance, dropout_p)  # [B*H, L, P, hd]
    return out.reshape(B, H, N, hd)


class CrossMaskAttention(nn.Module):
    """Multi-head Cross-Mask Attention.

    Q, K and V are bias-free projections (the paper's W_Q, W_K, W_V). Q and K then get a LayerNorm
    over each head's dimension (QK-norm, as in LaBraM and ViT-22B; it bounds the attention logits),
    V does not (paper). Scores are scaled by 1 / sqrt(head_dim). `dropout` drops attention weights
    during training. `impl` picks "structured", the "dense" reference, or "auto" (default: whichever
    is faster for the call's grid, see `resolve_impl`); all use the same parameters and give the
    same result, and may be switched by assigning `module.impl`.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        tolerance: int = 1,
        qk_norm: bool = True,
        dropout: float = 0.0,
        impl: str = "auto",
    ):
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        _check_tolerance(tolerance)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.dim = dim
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.tolerance = tolerance
        self.dropout = dropout
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, grid: tuple[int, int], pad_mask: Tensor | None = None) -> Tensor:
        """x: [B, N, D] lead-major tokens of an (L, P) grid; pad_mask: bool [B, N], True = padding."""
        B, N, D = x.shape
        if D != self.dim:
            raise ValueError(f"expected token dim {self.dim}, got x of shape {tuple(x.shape)}")
        _check_grid(N, grid, pad_mask, B)
        impl = resolve_impl(self.impl, grid, self.tolerance, x.device)
        qkv = self.qkv(x).view(B, N, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, hd]
        q, k = self.q_norm(q), self.k_norm(k)
        dropout_p = self.dropout if self.training else 0.0
        q, k = q.to(v.dtype), k.to(v.dtype)  # QK-norm runs in float32 under autocast
        attend = dense_attention if impl == "dense" else structured_attention
        out = attend(q, k, v, grid, self.tolerance, pad_mask, dropout_p)  # [B, H, N, hd]
        out = out.transpose(1, 2).reshape(B, N, D)  # [B, N, D]
        return self.proj(out)
