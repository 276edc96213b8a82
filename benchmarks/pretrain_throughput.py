"""Stage-2 pretraining throughput and model FLOPs utilisation (MFU) of an AnyECG preset.

    python benchmarks/pretrain_throughput.py --preset anyecg-b --batch 8 --precision bf16
    python benchmarks/pretrain_throughput.py --preset anyecg-tiny --batch 4 --steps 3   # CPU smoke run

One step is what `anyecg pretrain` does per batch: the frozen tokenizer encodes the batch (forward,
no gradients), the backbone computes the masked-code loss (forward + backward) and AdamW updates
it. Each recording fills the 1024-token budget: 12 leads x 85 s = 1020 tokens of random patches
(throughput does not depend on the signal).

FLOPs per step are counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` over one
step sums the FLOPs of every matrix multiply and convolution, forward and backward. The count runs
with the structured CMA whatever `--attn-impl` times, so it holds the model's FLOPs (the scores
CMA allows), not masked-out work (and PyTorch's fused CPU attention kernel, which the counter does
not see, cannot hide any). MFU = model FLOPs per step / measured seconds per step / the device's
peak FLOP/s: `--peak-tflops`, else the dense bf16 tensor-core
peak of a known GPU (table below); none is assumed for a CPU. Time: mean of `--steps` steps after
`--warmup` steps, synchronised. On a GPU the peak memory allocated is reported too.

`--attn-impl dense` runs CMA through the dense mask and PyTorch's fused attention kernels,
`structured` through the structured path; the default is the model's own, "auto" (dense on a GPU,
structured on CPU for this 12 x 85 grid). `attn_impl` in the result is the path that ran. The last line printed is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from anyecg.models.attention import CrossMaskAttention, resolve_impl
from anyecg.models.presets import build_backbone, build_tokenizer
from anyecg.training.pretrain import MaskedCodeModel

N_LEADS, N_SECONDS, PATCH = 12, 85, 300

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0, "L4": 121.0}


def synthetic_batch(batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full-budget batch: patches [B, 12, 85, 300], lead_ids [B, 12], pad_mask [B, 12, 85] (no padding)."""
    gen = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, N_LEADS, N_SECONDS, PATCH, generator=gen)
    lead_ids = torch.arange(N_LEADS).expand(batch, N_LEADS)
    pad_mask = torch.zeros(batch, N_LEADS, N_SECONDS, dtype=torch.bool)
    return {"patches": patches.to(device), "lead_ids": lead_ids.to(device), "pad_mask": pad_mask.to(device)}


def block_linear_parameters_of(preset: str) -> int:
    """Weights of the preset backbone's transformer-block linear layers: every token passes each of them."""
    with torch.device("meta"):
        blocks = build_backbone(preset).blocks
    return sum(module.weight.numel() for module in blocks.modules() if isinstance(module, torch.nn.Linear))


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def measure(preset: str, batch: int, steps: int, warmup: int, precision: str, attn_impl: str | None,
            device: torch.device, peak: float | None = None) -> dict:
    torch.manual_seed(0)
    overrides = {} if attn_impl is None else {"attn_impl": attn_impl}
    model = MaskedCodeModel(build_tokenizer(preset, **overrides), build_backbone(preset, **overrides)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.backbone.parameters(), lr=1e-4)
    data = synthetic_batch(batch, device)
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> float:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = model(data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    attention = [m for m in model.modules() if isinstance(m, CrossMaskAttention)]
    timed_impl = attention[0].impl
    counter = FlopCounterMode(display=False)
    for module in attention:
        module.impl = "structured"
    with counter:
        step()
    for module in attention:
        module.impl = timed_impl
    flops_per_step = counter.get_total_flops()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    seconds = (time.perf_counter() - start) / steps

    tokens = batch * N_LEADS * N_SECONDS
    achieved = flops_per_step / seconds / 1e12
    peak = peak_tflops(device, peak)
    return {
        "preset": preset,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision,
        "attn_impl": resolve_impl(timed_impl, (N_LEADS, N_SECONDS), attention[0].tolerance, device),
        "batch": batch,
        "tokens_per_step": tokens,
        "backbone_parameters": sum(p.numel() for p in model.backbone.parameters()),
        "step_ms": round(seconds * 1e3, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "flops_per_step": flops_per_step,
        "six_n_t_block_flops": 6 * block_linear_parameters_of(preset) * tokens,  # a lower bound, for comparison
        "achieved_tflops": round(achieved, 3),
        "peak_tflops": peak,
        "mfu": None if peak is None else round(achieved / peak, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="anyecg-b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--attn-impl", choices=["auto", "structured", "dense"], default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = measure(args.preset, args.batch, args.steps, args.warmup, args.precision, args.attn_impl,
                     torch.device(args.device), args.peak_tflops)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
