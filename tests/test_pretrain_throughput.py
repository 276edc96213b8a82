"""The pretraining throughput benchmark: its FLOP count and MFU arithmetic (not its timings)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/pretrain_throughput.py")


def test_counted_flops_cover_forward_and_backward_of_every_block(bench):
    result = bench.measure("anyecg-tiny", batch=1, steps=1, warmup=0, precision="fp32", attn_impl="dense",
                           device=torch.device("cpu"), peak=1.0)
    # Every token passes every block linear forward (2 FLOPs per weight) and backward (4): 6 N T is
    # a lower bound. The rest (attention scores, tokenizer forward, patch convolutions, code head)
    # adds about as much again for this preset (less than 1.5x); a count missing the backward would
    # be ~1/3 of 6 N T.
    assert result["tokens_per_step"] == 12 * 85
    lower = result["six_n_t_block_flops"]
    assert lower == 6 * bench.block_linear_parameters_of("anyecg-tiny") * 12 * 85
    assert lower < result["flops_per_step"] < 2.5 * lower
    # The count is the model's (structured CMA), whichever implementation is timed.
    structured = bench.measure("anyecg-tiny", batch=1, steps=1, warmup=0, precision="fp32",
                               attn_impl="structured", device=torch.device("cpu"))
    assert structured["flops_per_step"] == result["flops_per_step"]
    assert result["attn_impl"] == "dense" and structured["attn_impl"] == "structured"
    # MFU = achieved / peak, with the achieved rate from the count and the measured step time.
    achieved = result["flops_per_step"] / (result["step_ms"] / 1e3) / 1e12
    assert result["mfu"] == pytest.approx(achieved, rel=0.02)  # peak given as 1 TFLOP/s
    assert structured["mfu"] is None  # no peak known for a CPU


def test_block_linear_parameters_by_hand(bench):
    # anyecg-tiny backbone: depth 4, dim 64, MLP ratio 4; per block qkv 64x192, proj 64x64,
    # fc1 64x256, fc2 256x64 (weights only).
    assert bench.block_linear_parameters_of("anyecg-tiny") == 4 * (64 * 192 + 64 * 64 + 64 * 256 + 256 * 64)
