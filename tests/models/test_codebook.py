"""RhythmCodebook: lookup against a brute-force reference, straight-through gradients, hand-computed
losses, usage statistics and the two dead-code remedies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anyecg.models.codebook import RhythmCodebook, code_usage, spherical_kmeans


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_lookup_matches_brute_force_and_round_trips():
    torch.manual_seed(0)
    codebook = RhythmCodebook(num_codes=32, code_dim=8, kmeans_init=False)
    h = torch.randn(3, 7, 8)
    valid = torch.rand(3, 7) > 0.3
    out = codebook(h, valid)

    # Reference: argmin of the squared distance between l2-normalised vectors, in numpy.
    h_unit = _unit(h.numpy().reshape(-1, 8))
    codes_unit = _unit(codebook.codes.detach().numpy())
    distances = ((h_unit[:, None, :] - codes_unit[None, :, :]) ** 2).sum(-1)  # [M, K]
    expected = distances.argmin(axis=1).reshape(3, 7)
    np.testing.assert_array_equal(out.indices[valid].numpy(), expected[valid.numpy()])
    assert (out.indices[~valid] == -1).all()

    # quantized == normalised codebook[indices] at real tokens, zeros at padding.
    torch.testing.assert_close(out.quantized[valid], torch.from_numpy(codes_unit)[out.indices[valid]])
    assert (out.quantized[~valid] == 0).all()
    # lookup() (used by Tokenizer.encode) agrees with forward.
    np.testing.assert_array_equal(codebook.lookup(h)[valid].numpy(), expected[valid.numpy()])


def test_losses_equal_hand_computed_values():
    codebook = RhythmCodebook(num_codes=2, code_dim=2, beta=0.25, kmeans_init=False)
    with torch.no_grad():
        codebook.codes.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # unit: e1, e2
    h = torch.tensor([[[3.0, 4.0], [0.0, -2.0], [-1.0, -1.0]]])  # unit: (.6, .8), (0, -1), padding
    valid = torch.tensor([[True, True, False]])
    out = codebook(h, valid)
    # (.6, .8) -> e2 (cos .8 > .6): |(.6, -.2)|^2 = 0.40; (0, -1) -> e1 (cos 0 > -1): |(-1, -1)|^2 = 2.
    assert out.indices.tolist() == [[1, 0, -1]]
    assert out.codebook_loss.item() == pytest.approx((0.40 + 2.0) / 2)
    assert out.commitment_loss.item() == pytest.approx(0.25 * (0.40 + 2.0) / 2)
    assert out.usage.item() == pytest.approx(1.0)
    assert out.perplexity.item() == pytest.approx(2.0)


def test_code_usage_statistics():
    usage, perplexity = code_usage(torch.tensor([2, 2, 0, 0]))
    assert usage.item() == pytest.approx(0.5)
    assert perplexity.item() == pytest.approx(2.0)
    usage, perplexity = code_usage(torch.tensor([1, 3, 0, 0]))
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert perplexity.item() == pytest.approx(math.exp(entropy))


def test_straight_through_gradient_and_stop_gradients():
    torch.manual_seed(1)
    codebook = RhythmCodebook(num_codes=16, code_dim=4, kmeans_init=False)
    h = torch.randn(2, 5, 4, requires_grad=True)
    valid = torch.ones(2, 5, dtype=torch.bool)
    upstream = torch.randn(2, 5, 4)

    # Straight-through: d(quantized)/d(h) is the Jacobian of l2-normalisation, as if no quantizer.
    (codebook(h, valid).quantized * upstream).sum().backward()
    h_ref = h.detach().clone().requires_grad_(True)
    (F.normalize(h_ref, dim=-1) * upstream).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad)
    assert codebook.codes.grad is None

    # Codebook loss moves only the codes, commitment loss only the encoder output.
    h.grad = None
    codebook(h, valid).codebook_loss.backward()
    assert h.grad is None and codebook.codes.grad.abs().sum() > 0
    codebook.codes.grad = None
    codebook(h, valid).commitment_loss.backward()
    assert h.grad.abs().sum() > 0 and codebook.codes.grad is None


def _clusters(n_per: int, directions: torch.Tensor, spread: float = 0.05) -> torch.Tensor:
    points = directions.repeat_interleave(n_per, dim=0)
    return points + spread * torch.randn_like(points)


def test_kmeans_init_seeds_codes_on_first_training_batch():
    torch.manual_seed(2)
    directions = F.normalize(torch.randn(3, 6), dim=-1)
    h = _clusters(20, directions)[None]  # [1, 60, 6]
    valid = torch.ones(1, 60, dtype=torch.bool)
    codebook = RhythmCodebook(num_codes=3, code_dim=6, kmeans_init=True).train()
    assert not bool(codebook.initialized)
    out = codebook(h, valid)
    assert bool(codebook.initialized)
    assert out.usage.item() == pytest.approx(1.0)
    # Each centre is the normalised mean of its cluster (computed here independently).
    codes_unit = F.normalize(codebook.codes.detach(), dim=-1)
    for c in range(3):
        members = F.normalize(h[0, c * 20 : (c + 1) * 20], dim=-1)
        centre = F.normalize(members.sum(0), dim=0)
        assert (codes_unit @ centre).max().item() == pytest.approx(1.0, abs=1e-5)
    # A loaded state (initialized = True) is not re-seeded by the next batch.
    before = codebook.codes.detach().clone()
    codebook(h + 1.0, valid)
    torch.testing.assert_close(codebook.codes.detach(), before)


def test_spherical_kmeans_with_fewer_points_than_codes():
    torch.manual_seed(3)
    x = F.normalize(torch.randn(5, 4), dim=-1)
    centres = spherical_kmeans(x, 12, iters=3)
    assert centres.shape == (12, 4)
    torch.testing.assert_close(centres.norm(dim=-1), torch.ones(12))


def _dead_code_run(restart_after: int) -> tuple[list[float], RhythmCodebook, list[int]]:
    torch.manual_seed(4)
    codebook = RhythmCodebook(num_codes=8, code_dim=4, kmeans_init=False, restart_after=restart_after).train()
    with torch.no_grad():
        # Two live codes on the data's side, six dead ones pointing away from every input.
        codebook.codes.copy_(torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 0]] + [[-1.0, -1, -1, -1]] * 6))
    directions = F.normalize(torch.tensor([[1.0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0]]), dim=-1)
    usage, restarted = [], []
    for _ in range(6):
        h = F.normalize(_clusters(16, directions, spread=0.2), dim=-1)[None]  # [1, 64, 4], all x >= -0.6
        out = codebook(h, torch.ones(1, 64, dtype=torch.bool))
        usage.append(out.usage.item())
        restarted.append(out.restarted)
    return usage, codebook, restarted


def test_restart_revives_dead_codes():
    usage, codebook, restarted = _dead_code_run(restart_after=2)
    assert usage[0] <= 2 / 8
    # Unused at steps 1 and 2 -> re-seeded at the start of step 3 from recent encoder outputs.
    assert restarted[:2] == [0, 0] and restarted[2] == 6
    assert max(usage[2:]) > usage[0]
    # Every restarted code is one of the remembered encoder outputs (unit norm, on the data's side).
    codes = codebook.codes.detach()[2:]
    torch.testing.assert_close(codes.norm(dim=-1), torch.ones(6))
    history = codebook.history[: codebook._history_len]
    assert all(((history - code).abs().amax(dim=-1) < 1e-6).any() for code in codes)

    usage_off, codebook_off, restarted_off = _dead_code_run(restart_after=0)
    assert sum(restarted_off) == 0
    assert max(usage_off) <= 2 / 8
    assert (codebook_off.unused_steps[2:] == 6).all()


def test_eval_mode_changes_no_state():
    torch.manual_seed(5)
    codebook = RhythmCodebook(num_codes=8, code_dim=4, kmeans_init=True, restart_after=1).eval()
    state = {k: v.clone() for k, v in codebook.state_dict().items()}
    codebook(torch.randn(1, 10, 4), torch.ones(1, 10, dtype=torch.bool))
    for key, value in codebook.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_quantises_in_float32_under_autocast():
    torch.manual_seed(6)
    codebook = RhythmCodebook(num_codes=256, code_dim=16, kmeans_init=False)
    h = torch.randn(4, 64, 16).bfloat16()  # what a Linear layer emits under bf16 autocast
    valid = torch.ones(4, 64, dtype=torch.bool)
    reference = codebook(h.float(), valid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = codebook(h, valid)
    assert out.quantized.dtype == torch.float32
    assert torch.equal(out.indices, reference.indices)
    torch.testing.assert_close(out.codebook_loss, reference.codebook_loss)


def test_ema_codes_move_to_the_mean_direction_of_their_tokens():
    torch.manual_seed(0)
    codebook = RhythmCodebook(num_codes=4, code_dim=3, kmeans_init=False, ema_decay=0.5).train()
    assert not codebook.codes.requires_grad  # the optimiser never sees EMA codes
    before = F.normalize(codebook.codes.detach().clone(), dim=-1)
    h = torch.randn(20, 3, requires_grad=True)
    out = codebook(h, torch.ones(20, dtype=torch.bool))
    # by hand: ema = 0.5 * old code + 0.5 * sum of the unit tokens assigned to it, renormalised
    unit = F.normalize(h.detach(), dim=-1)
    for k in range(4):
        assigned = unit[out.indices == k]
        expected = F.normalize(0.5 * before[k] + 0.5 * assigned.sum(0), dim=0)
        torch.testing.assert_close(codebook.codes.detach()[k], expected)
    (out.codebook_loss + out.commitment_loss).backward()
    assert codebook.codes.grad is None and h.grad is not None  # only the encoder side is trained


def test_kmeans_pool_waits_for_enough_tokens_and_resets_unused_counts():
    torch.manual_seed(0)
    codebook = RhythmCodebook(num_codes=8, code_dim=4, kmeans_init=True, kmeans_pool=50, restart_after=1).train()
    random_codes = codebook.codes.detach().clone()
    valid = torch.ones(20, dtype=torch.bool)
    codebook(torch.randn(20, 4), valid)
    codebook(torch.randn(20, 4), valid)
    assert not bool(codebook.initialized) and torch.equal(codebook.codes.detach(), random_codes)
    out = codebook(torch.randn(20, 4), valid)  # 40 in the pool + 20 now >= 50: seeded from all 60
    assert bool(codebook.initialized) and out.restarted == 0
    assert not torch.equal(codebook.codes.detach(), random_codes)
    pool = codebook.history[:60]
    # every seeded code is the normalised mean of some pool tokens: it lies in their span, on the sphere
    assert torch.allclose(codebook.codes.detach().norm(dim=-1), torch.ones(8), atol=1e-5)
    assert (codebook.lookup(pool) >= 0).all()


def test_commitment_weight_ramps_up():
    codebook = RhythmCodebook(num_codes=4, code_dim=3, kmeans_init=False, beta=0.4, beta_warmup_steps=4).train()
    h, valid = torch.randn(6, 3), torch.ones(6, dtype=torch.bool)
    distance = ((F.normalize(h, dim=-1) - F.normalize(codebook.codes.detach(), dim=-1)[codebook.lookup(h)]) ** 2).sum(-1).mean()
    first = codebook(h, valid)
    assert float(first.commitment_loss) == 0.0
    codebook(h, valid)
    third = codebook(h, valid)  # step 2 of 4: half of beta
    torch.testing.assert_close(third.commitment_loss, 0.2 * distance)


def test_checkpoint_keys_without_the_training_aids_are_unchanged():
    plain = RhythmCodebook(num_codes=4, code_dim=3)
    assert set(plain.state_dict()) == {"codes", "initialized", "unused_steps"}
    aided = RhythmCodebook(num_codes=4, code_dim=3, ema_decay=0.9, beta_warmup_steps=10)
    assert set(aided.state_dict()) == {"codes", "initialized", "unused_steps", "ema_sum", "train_steps"}
