"""Cross-Mask Attention: structured vs dense, forward + backward on CPU in float32.

    python benchmarks/cma_attention.py [--repeats N] [--tolerance W] [--threads T]

Three token grids (leads x seconds): 12 x 10 (N = 120, a 10 s 12-lead ECG), 12 x 85 (N = 1024, the
longest 12-lead window; at batch 4 and 16), 16 x 256 (N = 4096), 8 heads of 32 (dim 256). Batches
have ragged ends (element b loses its last b % 4 seconds on every lead), as a collated training
batch does.

Three exact implementations of the same attention, on the same q, k, v:
- `dense`: the module's reference path, the N x N mask from `cross_mask` through
  `F.scaled_dot_product_attention` (PyTorch picks its fused CPU kernel, which never stores the
  B x H x N x N scores but does expand the bool mask to a float [B, 1, N, N] one);
- `dense_math`: the same call pinned to SDPA's math backend, i.e. the textbook
  softmax(q k^T + M) v that materialises the scores (what the reference costs without a fused
  kernel);
- `structured`: `structured_attention`, never N x N.

Time: best of `--repeats` wall-clock forward + backward runs, implementations interleaved.
Memory: peak bytes allocated (and not yet freed) during one forward + backward, summed from the
profiler's allocator events (`torch.profiler` with `profile_memory=True`); q, k, v already exist,
their gradients and the output are counted (`qkv_grads_and_output_mib`, the same for every
implementation, says how much of each peak that is). `attention_memory_ratio_vs_dense` compares
what is left, the attention's own working memory (mask, scores, buffers). The whole module
(projections included) is timed too.
Ratios are against `dense` and `dense_math` timed in the same run. Timings are wall-clock on a
shared 2-core machine: other processes running at the same time lower and blur them, and with
more than one intra-op thread a busy machine slows the structured path (many small ops, each a
thread barrier) far more than the dense one; `--threads 1` gives steadier figures there.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from anyecg.models.attention import CrossMaskAttention, dense_attention, structured_attention

DIM, HEADS = 256, 8
GRIDS = {
    "n120_12x10": (12, 10, 32),
    "n1024_12x85": (12, 85, 4),
    "n1024_12x85_batch16": (12, 85, 16),  # the dense mask grows with the batch, the structured buffers do not
    "n4096_16x256": (16, 256, 1),
}


def ragged_pad_mask(batch: int, n_leads: int, n_patches: int) -> torch.Tensor:
    """bool [B, N]: element b has its last b % 4 seconds padded on every lead."""
    pad = torch.zeros(batch, n_leads, n_patches, dtype=torch.bool)
    for b in range(batch):
        missing = min(b % 4, n_patches - 1)
        if missing:
            pad[b, :, n_patches - missing :] = True
    return pad.view(batch, n_leads * n_patches)


def attention_step(impl: str, q, k, v, grid, tolerance, pad_mask, grad_out):
    """One forward + backward of the attention core, gradients on q, k, v cleared first."""
    for t in (q, k, v):
        t.grad = None
    if impl == "structured":
        out = structured_attention(q, k, v, grid, tolerance, pad_mask)
    elif impl == "dense":
        out = dense_attention(q, k, v, grid, tolerance, pad_mask)
    else:
        with sdpa_kernel(SDPBackend.MATH):
            out = dense_attention(q, k, v, grid, tolerance, pad_mask)
    out.backward(grad_out)


def peak_bytes(fn, before=None) -> int:
    """Peak of live bytes allocated while fn runs, from the profiler's allocator events.

    `before` runs first, outside the profile: freeing there what fn would free (old gradients) keeps
    frees of blocks the profiler never saw allocated out of the count.
    """
    if before is not None:
        before()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def best_ms(fns: dict, repeats: int) -> dict:
    """Best wall-clock time of each function, the functions interleaved so load hits all alike."""
    best = {name: float("inf") for name in fns}
    for name, fn in fns.items():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: round(t * 1e3, 2) for name, t in best.items()}


def measure(n_leads: int, n_patches: int, batch: int, tolerance: int, repeats: int) -> dict:
    torch.manual_seed(0)
    grid, n_tokens, head_dim = (n_leads, n_patches), n_leads * n_patches, DIM // HEADS
    pad_mask = ragged_pad_mask(batch, n_leads, n_patches)
    q, k, v = (torch.randn(batch, HEADS, n_tokens, head_dim, requires_grad=True) for _ in range(3))
    grad_out = torch.randn(batch, HEADS, n_tokens, head_dim)
    impls = ("dense", "dense_math", "structured")
    steps = {
        impl: (lambda impl=impl: attention_step(impl, q, k, v, grid, tolerance, pad_mask, grad_out)) for impl in impls
    }
    time_ms = best_ms(steps, repeats)

    def clear_grads() -> None:
        for t in (q, k, v):
            t.grad = None

    peak_mib = {impl: round(peak_bytes(steps[impl], before=clear_grads) / 2**20, 2) for impl in impls}
    shared_mib = 4 * q.numel() * q.element_size() / 2**20  # q, k, v gradients and the output

    module = CrossMaskAttention(DIM, HEADS, tolerance=tolerance)
    x = torch.randn(batch, n_tokens, DIM, requires_grad=True)

    def module_step(impl: str) -> None:
        module.impl = impl
        module.zero_grad(set_to_none=True)
        module(x, grid, pad_mask).square().mean().backward()

    module_ms = best_ms({impl: (lambda impl=impl: module_step(impl)) for impl in ("dense", "structured")}, repeats)
    return {
        "grid": [n_leads, n_patches],
        "tokens": n_tokens,
        "batch": batch,
        "time_ms": time_ms,
        "peak_mib": peak_mib,
        "qkv_grads_and_output_mib": round(shared_mib, 2),
        "module_time_ms": module_ms,
        "speedup_vs_dense": round(time_ms["dense"] / time_ms["structured"], 2),
        "speedup_vs_dense_math": round(time_ms["dense_math"] / time_ms["structured"], 2),
        "memory_ratio_vs_dense": round(peak_mib["dense"] / peak_mib["structured"], 2),
        "memory_ratio_vs_dense_math": round(peak_mib["dense_math"] / peak_mib["structured"], 2),
        "attention_memory_ratio_vs_dense": round(
            (peak_mib["dense"] - shared_mib) / (peak_mib["structured"] - shared_mib), 2
        ),
        "module_speedup_vs_dense": round(module_ms["dense"] / module_ms["structured"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tolerance", type=int, default=1, help="CMA mask width w")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    results = {}
    for name, (n_leads, n_patches, batch) in GRIDS.items():
        results[name] = measure(n_leads, n_patches, batch, args.tolerance, args.repeats)
        print(name, results[name], file=sys.stderr)
    results.update(
        tolerance=args.tolerance,
        dim=DIM,
        heads=HEADS,
        threads=torch.get_num_threads(),
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
