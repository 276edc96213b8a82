"""Masked-code backbone: forward/backward over lead counts with padding, the loss only at masked
positions (checked against a hand-written cross-entropy), reproducible masks, padding isolation,
the CMA grid convention end to end, and an overfit check on real ECG patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import wfdb
from scipy.signal import resample_poly

from anyecg.models.backbone import Backbone, BackboneConfig, random_token_mask
from anyecg.models.layers import Block, drop_path
from anyecg.signal.leads import LEAD_INDEX, STANDARD_12

K = 64


def tiny_backbone(**overrides) -> Backbone:
    torch.manual_seed(0)
    fields = dict(dim=32, depth=2, n_heads=4, conv_channels=4, num_codes=K)
    fields.update(overrides)
    return Backbone(BackboneConfig(**fields))


def synthetic_batch(n_leads: int, n_patches: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two records: the first complete, the second missing its last lead (if > 1) and last 2 seconds."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_patches * 300) / 300.0
    patches = torch.sin(2 * torch.pi * 1.2 * t)[None, None].repeat(2, n_leads, 1)
    patches = (patches + 0.1 * torch.randn(patches.shape, generator=g)).view(2, n_leads, n_patches, 300)
    pad_mask = torch.zeros(2, n_leads, n_patches, dtype=torch.bool)
    pad_mask[1, :, -2:] = True
    if n_leads > 1:
        pad_mask[1, -1] = True
    patches = patches.masked_fill(pad_mask[..., None], 0.0)
    lead_ids = torch.tensor([LEAD_INDEX[name] for name in STANDARD_12[:n_leads]]).repeat(2, 1)
    return {"patches": patches, "lead_ids": lead_ids, "pad_mask": pad_mask}


def random_codes(pad_mask: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(K, pad_mask.shape, generator=g).masked_fill(pad_mask, -1)


@pytest.mark.parametrize("n_leads", [1, 2, 12])
@pytest.mark.parametrize("symmetric", [False, True])
def test_forward_backward_with_padding(n_leads, symmetric):
    model = tiny_backbone(symmetric_mask=symmetric)
    batch = synthetic_batch(n_leads)
    out = model(batch, random_codes(batch["pad_mask"]), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    assert not (out.mask & batch["pad_mask"]).any()
    n_real = int((~batch["pad_mask"]).sum())
    assert out.n_masked == (n_real if symmetric else int(out.mask.sum()))
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.mask_token.grad.abs().sum() > 0


def test_random_token_mask_counts_and_reproducibility():
    pad_mask = torch.zeros(3, 4, 10, dtype=torch.bool)
    pad_mask[1, 2:] = True  # 20 real tokens
    pad_mask[2] = True
    pad_mask[2, 0, 0] = False  # a single real token
    mask = random_token_mask(pad_mask, 0.4, torch.Generator().manual_seed(7))
    assert mask.view(3, -1).sum(1).tolist() == [16, 8, 1]
    assert not (mask & pad_mask).any()
    again = random_token_mask(pad_mask, 0.4, torch.Generator().manual_seed(7))
    other = random_token_mask(pad_mask, 0.4, torch.Generator().manual_seed(8))
    assert torch.equal(mask, again) and not torch.equal(mask, other)
    with pytest.raises(ValueError, match="mask ratio"):
        random_token_mask(pad_mask, 1.0)


def test_loss_is_cross_entropy_at_masked_positions_only():
    model = tiny_backbone().eval()
    batch = synthetic_batch(3)
    codes = random_codes(batch["pad_mask"])
    out = model(batch, codes, generator=torch.Generator().manual_seed(3))

    # Hand-written reference: -mean log softmax(logits)[code] over the masked tokens.
    with torch.no_grad():
        features = model.forward_features(batch["patches"], batch["lead_ids"], batch["pad_mask"], out.mask)
        logits = model.forward_head(features).numpy()  # [B, N, K]
    selected = out.mask.flatten(1).numpy()
    picked, targets = logits[selected], codes.flatten(1).numpy()[selected]
    log_probs = picked - picked.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    expected = -log_probs[np.arange(len(targets)), targets].mean()
    assert out.loss.item() == pytest.approx(float(expected), rel=1e-5)

    # Changing the code of an unmasked real token leaves the loss unchanged; a masked one changes it.
    unmasked = (~out.mask & ~batch["pad_mask"]).nonzero()[0].tolist()
    masked = out.mask.nonzero()[0].tolist()
    changed = codes.clone()
    changed[tuple(unmasked)] = (changed[tuple(unmasked)] + 1) % K
    same = model(batch, changed, generator=torch.Generator().manual_seed(3))
    assert same.loss.item() == out.loss.item()
    changed[tuple(masked)] = (changed[tuple(masked)] + 1) % K
    assert model(batch, changed, generator=torch.Generator().manual_seed(3)).loss.item() != out.loss.item()


def test_same_generator_seed_same_step():
    model = tiny_backbone(dropout=0.0)
    batch = synthetic_batch(2)
    codes = random_codes(batch["pad_mask"])
    a = model(batch, codes, generator=torch.Generator().manual_seed(11))
    b = model(batch, codes, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a.mask, b.mask) and a.loss.item() == b.loss.item()


def test_padding_never_influences_real_tokens():
    model = tiny_backbone().eval()
    batch = synthetic_batch(4, n_patches=6)
    pad_mask = batch["pad_mask"]
    noisy = dict(batch)
    noisy["patches"] = batch["patches"] + 5.0 * torch.randn(batch["patches"].shape) * pad_mask[..., None]
    noisy["lead_ids"] = batch["lead_ids"].clone()
    noisy["lead_ids"][1, -1] = LEAD_INDEX["Z"]  # the absent lead's id is irrelevant too
    with torch.no_grad():
        clean = model.forward_features(batch["patches"], batch["lead_ids"], pad_mask)
        dirty = model.forward_features(noisy["patches"], noisy["lead_ids"], pad_mask)
    real = ~pad_mask.flatten(1)
    torch.testing.assert_close(clean[real], dirty[real])
    assert (dirty[~real] == 0).all()
    torch.testing.assert_close(model.pool(clean, pad_mask), model.pool(dirty, pad_mask))
    # pool is the plain mean over real tokens.
    torch.testing.assert_close(model.pool(clean, pad_mask)[1], clean[1][real[1]].mean(0))


def test_one_block_follows_the_cross_mask_grid():
    """With one block and w = 1, token (lead 0, s 0) sees its own lead and seconds 0..1 of other leads."""
    model = tiny_backbone(depth=1, tolerance=1).eval()
    batch = synthetic_batch(3, n_patches=6)
    batch["pad_mask"][:] = False
    P = 6
    with torch.no_grad():
        base = model.forward_features(batch["patches"], batch["lead_ids"], batch["pad_mask"])
        poked = batch["patches"].clone()
        poked[:, 1, 4] += 1.0  # token (lead 1, second 4) = n 1 * P + 4
        moved = model.forward_features(poked, batch["lead_ids"], batch["pad_mask"])
    changed = (moved - base).abs().amax(dim=-1)[0].view(3, P) > 1e-6  # [L, P]
    expected = torch.zeros(3, P, dtype=torch.bool)
    expected[1, :] = True  # same lead: every second
    expected[:, 3:6] = True  # any lead within +/- 1 s of second 4
    assert torch.equal(changed, expected)


def test_contract_violations_name_the_values():
    model = tiny_backbone()
    batch = synthetic_batch(2)
    with pytest.raises(ValueError, match="250 samples"):
        model.forward_features(torch.zeros(2, 2, 5, 250), batch["lead_ids"], batch["pad_mask"])
    with pytest.raises(ValueError, match="1040 tokens"):
        model.forward_features(torch.zeros(1, 13, 80, 300), torch.zeros(1, 13, dtype=torch.long),
                               torch.zeros(1, 13, 80, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.forward_features(batch["patches"], batch["lead_ids"] + 20, batch["pad_mask"])
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        model(batch, torch.full_like(batch["pad_mask"], 70, dtype=torch.long))


def real_patches(shared_data, n_seconds: int = 6) -> torch.Tensor:
    """MIT-BIH record 100, both leads, resampled 360 -> 300 Hz and cut into 1 s patches [2, P, 300]."""
    signal, _ = wfdb.rdsamp(str(shared_data / "mitdb" / "100"), sampto=360 * n_seconds)
    resampled = resample_poly(signal.T, 5, 6, axis=1)  # [2, 300 * n_seconds]
    resampled = resampled - resampled.mean(axis=1, keepdims=True)
    return torch.from_numpy(resampled.astype(np.float32)).view(2, n_seconds, 300)


def test_overfits_a_fixed_batch_of_real_patches(shared_data):
    torch.manual_seed(0)
    patches = real_patches(shared_data)
    batch = {
        "patches": patches[None].repeat(2, 1, 1, 1),
        "lead_ids": torch.tensor([[LEAD_INDEX["II"], LEAD_INDEX["V1"]]] * 2),
        "pad_mask": torch.zeros(2, 2, 6, dtype=torch.bool),
    }
    batch["pad_mask"][1, :, 4:] = True
    codes = random_codes(batch["pad_mask"])
    model = tiny_backbone(mask_ratio=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model(batch, codes, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_drop_path_zeroes_whole_recordings_and_keeps_the_expectation():
    branch = torch.ones(2000, 3, 2)
    torch.manual_seed(0)
    out = drop_path(branch, 0.3, training=True)
    per_recording = out.flatten(1)
    kept = per_recording[:, 0] > 0
    assert torch.equal(per_recording[kept], torch.full_like(per_recording[kept], 1 / 0.7))
    assert torch.equal(per_recording[~kept], torch.zeros_like(per_recording[~kept]))
    assert abs((~kept).float().mean().item() - 0.3) < 0.05  # binomial sd 0.01
    assert drop_path(branch, 0.3, training=False) is branch


def test_a_block_with_stochastic_depth_gives_one_of_its_four_paths_per_recording():
    """Hand-built reference: each recording's output is x + a * attn + m * mlp with a, m in {0, 1/(1-r)}."""
    torch.manual_seed(0)
    rate, B = 0.5, 16
    block = Block(32, 4)
    block.drop_path = rate
    x = torch.randn(B, 4, 32)  # [B, N, D]: one lead, 4 seconds
    grid, pad = (1, 4), torch.zeros(B, 4, dtype=torch.bool)
    with torch.no_grad():
        attn = block.attn(block.norm1(x), grid=grid, pad_mask=pad)
        paths = []
        for a in (0.0, 1 / (1 - rate)):
            h = x + a * attn
            paths += [h + m * block.mlp(block.norm2(h)) for m in (0.0, 1 / (1 - rate))]
        block.train()
        out = block(x, grid, pad)
    chosen = [next(k for k, path in enumerate(paths) if torch.allclose(out[b], path[b], atol=1e-5)) for b in range(B)]
    assert len(set(chosen)) > 1  # the draw varies across recordings
    block.eval()  # inference takes both branches, unscaled
    with torch.no_grad():
        torch.testing.assert_close(block(x, grid, pad), x + attn + block.mlp(block.norm2(x + attn)))


def test_stochastic_depth_rises_over_blocks_and_leaves_inference_alone():
    model = tiny_backbone(depth=3, drop_path=0.2)
    assert [block.drop_path for block in model.blocks] == pytest.approx([0.0, 0.1, 0.2])
    plain = tiny_backbone(depth=3)
    plain.load_state_dict(model.state_dict())
    batch = synthetic_batch(2)
    model.eval()
    plain.eval()
    torch.testing.assert_close(model.embed(**batch), plain.embed(**batch), rtol=0, atol=0)
    plain.set_drop_path(0.2)
    assert plain.config.drop_path == 0.2 and plain.blocks[2].drop_path == pytest.approx(0.2)
    with pytest.raises(ValueError, match="drop_path must lie in"):
        plain.set_drop_path(1.0)
