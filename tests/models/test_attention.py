"""Cross-Mask Attention: the dense mask against the rule, the structured path against the dense one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anyecg.models import attention
from anyecg.models.attention import CrossMaskAttention, cross_mask, dense_attention, resolve_impl, structured_attention

# (leads, seconds, tolerance): every lead count 1, 2, 3, 12, 15, every patch count 1, 2, 7, 30, 85
# and every tolerance 0, 1, 2, 5 appears, with windows wider than the record among them.
GRID_CASES = [
    (1, 1, 0),
    (1, 85, 2),
    (1, 7, 1),
    (2, 2, 1),
    (2, 30, 5),
    (3, 7, 0),
    (3, 1, 5),
    (12, 30, 1),
    (12, 7, 2),
    (12, 85, 5),
    (15, 85, 1),
    (15, 2, 0),
]


def random_padding(gen: torch.Generator, n_leads: int, n_patches: int) -> torch.Tensor:
    """bool [3, N]: element 0 unpadded, element 1 an absent lead and a ragged end, element 2 all padding."""
    pad = torch.zeros(3, n_leads, n_patches, dtype=torch.bool)
    if n_leads > 1:
        pad[1, int(torch.randint(n_leads, (1,), generator=gen))] = True
    if n_patches > 1:
        cut = int(torch.randint(1, n_patches, (1,), generator=gen))  # keep at least one second
        pad[1, :, cut:] = True
    pad[2] = True
    return pad.view(3, n_leads * n_patches)


def assert_agree(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """|actual - expected| <= tol * max(1, max |expected|), elementwise."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=tol * scale)


def forward_backward(module: CrossMaskAttention, impl: str, x, grid, pad_mask, grad_out):
    """Output, input gradient and parameter gradients of one impl on the module's shared weights."""
    module.impl = impl
    module.zero_grad(set_to_none=True)
    x.grad = None
    y = module(x, grid, pad_mask)
    y.backward(grad_out)
    params = {name: p.grad.clone() for name, p in module.named_parameters()}
    return y.detach(), x.grad.clone(), params


def reference_probabilities(q: np.ndarray, k: np.ndarray, grid, tolerance: int, pad: np.ndarray) -> np.ndarray:
    """softmax over the keys the CMA rule allows, written out with loops: [N, N] for one head."""
    n_leads, n_patches = grid
    n_tokens, head_dim = q.shape
    probs = np.zeros((n_tokens, n_tokens))
    for n in range(n_tokens):
        lead, second = divmod(n, n_patches)
        allowed = []
        for m in range(n_tokens):
            lead_m, second_m = divmod(m, n_patches)
            by_rule = lead_m == lead or abs(second_m - second) <= tolerance
            if by_rule and (not pad[m] or m == n):
                allowed.append(m)
        logits = np.array([q[n] @ k[m] for m in allowed]) / math.sqrt(head_dim)
        weights = np.exp(logits - logits.max())
        probs[n, allowed] = weights / weights.sum()
    return probs


def test_cross_mask_matches_the_rule_written_as_loops():
    n_leads, n_patches, tolerance = 3, 5, 1
    pad = torch.zeros(2, n_leads, n_patches, dtype=torch.bool)
    pad[1, 2] = True  # lead 2 absent
    pad[1, :, 4] = True  # last second missing
    pad = pad.view(2, -1)
    expected = torch.zeros(2, 15, 15, dtype=torch.bool)
    for b in range(2):
        for lead in range(n_leads):
            for second in range(n_patches):
                for lead_k in range(n_leads):
                    for second_k in range(n_patches):
                        n, m = lead * n_patches + second, lead_k * n_patches + second_k
                        by_rule = lead_k == lead or abs(second_k - second) <= tolerance
                        expected[b, n, m] = by_rule and (not pad[b, m] or n == m)
    mask = cross_mask(n_leads, n_patches, tolerance, pad)
    assert mask.shape == (2, 15, 15) and mask.dtype == torch.bool
    assert torch.equal(mask, expected)
    # Spot checks: (lead 0, s 0) sees (lead 2, s 1) but not (lead 2, s 2); padded keys only on the diagonal.
    assert mask[0, 0, 2 * 5 + 1] and not mask[0, 0, 2 * 5 + 2]
    assert not mask[1, 0, 4] and mask[1, 4, 4]
    unpadded = cross_mask(n_leads, n_patches, tolerance)
    assert unpadded.shape == (1, 15, 15) and torch.equal(unpadded[0], expected[0])
    # Each row of the unpadded mask: its own lead's 5 seconds plus the other 2 leads' 2 or 3 seconds.
    seconds_in_window = torch.tensor([2, 3, 3, 3, 2]).repeat(n_leads)
    assert torch.equal(unpadded[0].sum(1), n_patches + (n_leads - 1) * seconds_in_window)


@pytest.mark.parametrize("attend", [structured_attention, dense_attention], ids=["structured", "dense"])
def test_attention_weights_equal_the_softmax_over_allowed_keys(attend):
    # With v = identity the output rows are the attention weights themselves.
    grid, tolerance = (3, 5), 1
    n_tokens = 15
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 1, n_tokens, n_tokens, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 1, n_tokens, n_tokens, generator=gen, dtype=torch.float64)
    v = torch.eye(n_tokens, dtype=torch.float64).expand(2, 1, -1, -1)
    pad = torch.zeros(2, 3, 5, dtype=torch.bool)
    pad[1, 1] = True
    pad[1, :, 3:] = True
    pad = pad.view(2, -1)
    probs = attend(q, k, v, grid, tolerance, pad)
    for b in range(2):
        expected = reference_probabilities(q[b, 0].numpy(), k[b, 0].numpy(), grid, tolerance, pad[b].numpy())
        np.testing.assert_allclose(probs[b, 0].numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_leads,n_patches,tolerance", GRID_CASES)
def test_structured_matches_dense_outputs_and_gradients(n_leads, n_patches, tolerance):
    gen = torch.Generator().manual_seed(1000 * n_leads + 10 * n_patches + tolerance)
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
    grid, n_tokens = (n_leads, n_patches), n_leads * n_patches
    module = CrossMaskAttention(dim=16, n_heads=2, tolerance=tolerance)
    with torch.no_grad():  # non-trivial QK-norm affine parameters, so their gradients are tested too
        for norm in (module.q_norm, module.k_norm):
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.3)
    x = torch.randn(3, n_tokens, 16, requires_grad=True)
    pad = random_padding(gen, n_leads, n_patches)
    grad_out = torch.randn(3, n_tokens, 16)

    y_d, gx_d, gp_d = forward_backward(module, "dense", x, grid, pad, grad_out)
    y_s, gx_s, gp_s = forward_backward(module, "structured", x, grid, pad, grad_out)
    assert torch.isfinite(y_s).all() and torch.isfinite(gx_s).all()
    assert_agree(y_s, y_d)
    assert_agree(gx_s, gx_d)
    assert gp_s.keys() == gp_d.keys()
    for name in gp_d:
        assert_agree(gp_s[name], gp_d[name])


def test_structured_matches_dense_without_qk_norm_and_without_padding():
    torch.manual_seed(3)
    module = CrossMaskAttention(dim=24, n_heads=3, tolerance=2, qk_norm=False)
    x = torch.randn(2, 12 * 9, 24, requires_grad=True)
    grad_out = torch.randn(2, 12 * 9, 24)
    y_d, gx_d, gp_d = forward_backward(module, "dense", x, (12, 9), None, grad_out)
    y_s, gx_s, gp_s = forward_backward(module, "structured", x, (12, 9), None, grad_out)
    assert sorted(gp_s) == ["proj.bias", "proj.weight", "qkv.weight"]
    assert_agree(y_s, y_d)
    assert_agree(gx_s, gx_d)
    for name in gp_d:
        assert_agree(gp_s[name], gp_d[name])


@pytest.mark.parametrize("impl", ["structured", "dense"])
def test_padded_tokens_do_not_influence_real_ones(impl):
    torch.manual_seed(4)
    grid = (12, 30)
    module = CrossMaskAttention(dim=16, n_heads=2, tolerance=1, impl=impl).eval()
    pad = torch.zeros(2, 12, 30, dtype=torch.bool)
    pad[0, 5] = True  # an absent lead
    pad[1, :, 22:] = True  # a record that ends after 22 s
    pad = pad.view(2, -1)
    x = torch.randn(2, 360, 16)
    perturbed = x.clone()
    perturbed[pad] += 50.0 * torch.randn(int(pad.sum()), 16)
    with torch.no_grad():
        y, y_perturbed = module(x, grid, pad), module(perturbed, grid, pad)
    assert torch.isfinite(y).all() and torch.isfinite(y_perturbed).all()
    torch.testing.assert_close(y_perturbed[~pad], y[~pad], rtol=0.0, atol=1e-6)
    assert not torch.allclose(y_perturbed[pad], y[pad])  # the padded rows themselves did change


@pytest.mark.parametrize("impl", ["structured", "dense"])
def test_fully_padded_element_gives_finite_outputs_and_gradients(impl):
    torch.manual_seed(5)
    module = CrossMaskAttention(dim=16, n_heads=4, tolerance=1, impl=impl)
    x = torch.randn(2, 2 * 7, 16, requires_grad=True)
    pad = torch.zeros(2, 14, dtype=torch.bool)
    pad[1] = True
    y = module(x, (2, 7), pad)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.parametrize("chunk_scores", [1, 300, 5000])
def test_chunking_does_not_change_results(monkeypatch, chunk_scores):
    # 1: one (batch, head) row per chunk; 300: some heads of one element; 5000: whole elements.
    torch.manual_seed(6)
    grid, heads = (3, 10), 4
    q, k, v = (torch.randn(3, heads, 30, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pad = random_padding(torch.Generator().manual_seed(6), *grid)
    grad_out = torch.randn(3, heads, 30, 8, dtype=torch.float64)

    def run():
        for t in (q, k, v):
            t.grad = None
        out = structured_attention(q, k, v, grid, 2, pad)
        out.backward(grad_out)
        return [out.detach()] + [t.grad.clone() for t in (q, k, v)]

    whole = run()
    monkeypatch.setattr(attention, "_CHUNK_SCORES", chunk_scores)
    for chunked, reference in zip(run(), whole):
        torch.testing.assert_close(chunked, reference, rtol=0.0, atol=1e-12)


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_structured_backward_passes_gradcheck(dropout_p):
    grid = (3, 4)
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 2, 12, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    pad = torch.zeros(2, 3, 4, dtype=torch.bool)
    pad[1, 2] = True
    pad[1, :, 3] = True
    pad = pad.view(2, -1)

    def attend(q, k, v):
        torch.manual_seed(0)  # the same dropout mask on every call
        return structured_attention(q, k, v, grid, 1, pad, dropout_p)

    assert torch.autograd.gradcheck(attend, (q, k, v), eps=1e-6, atol=1e-7)


def test_dropout_zeroes_or_rescales_each_attention_weight():
    grid, n_tokens, p = (4, 6), 24, 0.5
    gen = torch.Generator().manual_seed(8)
    q = torch.randn(1, 2, n_tokens, n_tokens, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 2, n_tokens, n_tokens, generator=gen, dtype=torch.float64)
    v = torch.eye(n_tokens, dtype=torch.float64).expand(1, 2, -1, -1)
    kept = structured_attention(q, k, v, grid, 1, None)  # [1, 2, N, N] attention weights
    dropped = structured_attention(q, k, v, grid, 1, None, dropout_p=p)
    allowed = kept > 0
    is_zero = dropped == 0
    is_scaled = torch.isclose(dropped, kept / (1 - p), rtol=0, atol=1e-12)
    assert torch.all(is_zero | is_scaled) and torch.all(is_zero[~allowed])
    zero_fraction = is_zero[allowed].double().mean().item()
    assert 0.4 < zero_fraction < 0.6, zero_fraction  # ~500 allowed weights, binomial sd ~0.02


def test_module_dropout_is_active_only_in_training():
    torch.manual_seed(9)
    module = CrossMaskAttention(dim=16, n_heads=2, dropout=0.5)
    x = torch.randn(1, 24, 16)
    with torch.no_grad():
        train_out = module.train()(x, (4, 6))
        eval_out, eval_again = module.eval()(x, (4, 6)), module(x, (4, 6))
        module.dropout = 0.0
        no_dropout = module.train()(x, (4, 6))
    assert torch.equal(eval_out, eval_again) and torch.equal(eval_out, no_dropout)
    assert not torch.allclose(train_out, eval_out)


def test_bfloat16_autocast_on_cpu():
    torch.manual_seed(10)
    grid = (12, 20)
    module = CrossMaskAttention(dim=32, n_heads=4, tolerance=1)
    x = torch.randn(2, 240, 32, requires_grad=True)
    pad = torch.zeros(2, 12, 20, dtype=torch.bool)
    pad[1, :, 15:] = True
    pad = pad.view(2, -1)
    y32 = module(x, grid, pad).detach()
    results = {}
    for impl in ("structured", "dense"):
        module.impl = impl
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x, grid, pad)
        assert y.dtype == torch.bfloat16
        y.float().square().mean().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        results[impl] = (y.float().detach(), x.grad.clone())
    # bfloat16 keeps ~3 significant digits: both paths stay near float32 and near each other.
    assert_agree(results["structured"][0], y32, tol=3e-2)
    assert_agree(results["structured"][0], results["dense"][0], tol=3e-2)
    assert_agree(results["structured"][1], results["dense"][1], tol=5e-2 * results["dense"][1].abs().max().item())


@pytest.mark.parametrize(
    "grid,tolerance,expected",
    [
        ((12, 85), 1, "structured"),  # saving 1020 / (85 + 36) = 8.4
        ((12, 30), 1, "structured"),  # 360 / 66 = 5.45
        ((12, 20), 1, "dense"),  # 240 / 56 = 4.3
        ((12, 10), 1, "dense"),  # 120 / 46 = 2.6
        ((12, 85), 5, "dense"),  # 1020 / (85 + 132) = 4.7
        ((1, 1024), 0, "dense"),  # 1024 / 1025 < 1
        ((16, 256), 1, "structured"),  # 4096 / 304 = 13.5
    ],
)
def test_auto_picks_by_the_score_saving(grid, tolerance, expected):
    assert resolve_impl("auto", grid, tolerance) == expected
    assert resolve_impl("dense", grid, tolerance) == "dense"
    assert resolve_impl("structured", grid, tolerance) == "structured"


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_auto_runs_the_fused_dense_kernel_on_accelerators(device):
    assert resolve_impl("auto", (12, 85), 1, device) == "dense"
    assert resolve_impl("auto", (12, 85), 1, "cpu") == "structured"
    assert resolve_impl("structured", (12, 85), 1, device) == "structured"


@pytest.mark.parametrize("grid", [(12, 10), (12, 30)])
def test_auto_gives_exactly_the_chosen_implementation(grid):
    torch.manual_seed(11)
    module = CrossMaskAttention(dim=16, n_heads=2).eval()
    x = torch.randn(2, grid[0] * grid[1], 16)
    pad = torch.zeros(2, grid[0] * grid[1], dtype=torch.bool)
    pad[1, -grid[0]:] = True
    with torch.no_grad():
        auto = module(x, grid, pad)
        module.impl = resolve_impl("auto", grid, module.tolerance)
        chosen = module(x, grid, pad)
    assert torch.equal(auto, chosen)


def test_bad_inputs_are_reported_with_their_values():
    module = CrossMaskAttention(dim=16, n_heads=2)
    with pytest.raises(ValueError, match=r"grid \(leads=3, patches=4\) does not match 10 tokens"):
        module(torch.randn(1, 10, 16), (3, 4))
    with pytest.raises(ValueError, match=r"pad_mask must be a bool tensor of shape \(1, 12\)"):
        module(torch.randn(1, 12, 16), (3, 4), torch.zeros(1, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected token dim 16"):
        module(torch.randn(1, 12, 8), (3, 4))
    with pytest.raises(ValueError, match=r"dim \(10\) must be divisible by n_heads \(4\)"):
        CrossMaskAttention(dim=10, n_heads=4)
    with pytest.raises(ValueError, match="impl must be one of"):
        CrossMaskAttention(dim=16, n_heads=2, impl="sparse")
    with pytest.raises(ValueError, match="tolerance .* got -1"):
        cross_mask(2, 3, -1)
    module.impl = "sparse"
    with pytest.raises(ValueError, match="'sparse'"):
        module(torch.randn(1, 12, 16), (3, 4))
