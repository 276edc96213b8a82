"""Stage-1 tokenizer: forward/backward over lead counts with padding, each loss term against an
independent computation (numpy MSE, PyWavelets targets, hand-written demography loss), masking of
unknown demography, padding isolation, encode() and an overfit check on real ECG patches."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch
import wfdb
from scipy.signal import resample_poly

from anyecg.models.tokenizer import Tokenizer, TokenizerConfig, frequency_size, frequency_targets
from anyecg.signal.leads import LEAD_INDEX, STANDARD_12


def tiny_tokenizer(**overrides) -> Tokenizer:
    torch.manual_seed(0)
    fields = dict(dim=32, depth=1, n_heads=4, decoder_depth=1, code_dim=8, num_codes=64, conv_channels=4)
    fields.update(overrides)
    return Tokenizer(TokenizerConfig(**fields))


def synthetic_batch(n_leads: int, n_patches: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two records: the first complete, the second missing its last lead (if > 1) and last second."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n_patches * 300) / 300.0
    patches = torch.sin(2 * torch.pi * 1.1 * t)[None, None].repeat(2, n_leads, 1)
    patches = (patches + 0.2 * torch.randn(patches.shape, generator=g)).view(2, n_leads, n_patches, 300)
    pad_mask = torch.zeros(2, n_leads, n_patches, dtype=torch.bool)
    pad_mask[1, :, -1] = True
    if n_leads > 1:
        pad_mask[1, -1] = True
    return {
        "patches": patches.masked_fill(pad_mask[..., None], 0.0),
        "lead_ids": torch.tensor([LEAD_INDEX[name] for name in STANDARD_12[:n_leads]]).repeat(2, 1),
        "pad_mask": pad_mask,
        "age": torch.tensor([63.0, 0.0]),
        "has_age": torch.tensor([True, False]),
        "sex": torch.tensor([1, 0]),
        "has_sex": torch.tensor([True, True]),
    }


@pytest.mark.parametrize("n_leads", [1, 2, 12])
def test_forward_backward_with_padding(n_leads):
    model = tiny_tokenizer().train()
    batch = synthetic_batch(n_leads)
    out = model(batch)
    terms = [out.morphology, out.frequency, out.demography, out.codebook, out.commitment]
    assert all(torch.isfinite(term) for term in terms)
    torch.testing.assert_close(out.loss, sum(terms))
    pad = batch["pad_mask"]
    assert (out.indices[pad] == -1).all()
    assert ((out.indices[~pad] >= 0) & (out.indices[~pad] < 64)).all()
    assert 0 < out.usage.item() <= 1 and out.perplexity.item() >= 1
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.patch_embed.temporal.proj.weight.grad.abs().sum() > 0


def test_reconstruction_gradient_reaches_the_encoder_through_the_codebook():
    model = tiny_tokenizer()
    out = model(synthetic_batch(2))
    out.morphology.backward()
    # Morphology is computed from the quantised codes only: any encoder gradient is straight-through.
    assert model.encoder[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.to_code.weight.grad.abs().sum() > 0


def test_frequency_targets_match_pywavelets():
    patches = synthetic_batch(2)["patches"]  # [2, 2, 4, 300]
    targets = frequency_targets(patches, "db6", 4).numpy()  # [2, 2, 4, C]
    assert targets.shape[-1] == frequency_size(300, "db6", 4)
    patch = patches[0, 1, 2].double().numpy()
    expected = []
    for coeffs in pywt.wavedec(patch, "db6", level=4):  # [cA4, cD4, cD3, cD2, cD1]
        expected.append((coeffs - coeffs.mean()) / coeffs.std())
    np.testing.assert_allclose(targets[0, 1, 2], np.concatenate(expected), atol=1e-4)


def test_loss_terms_match_independent_computations():
    model = tiny_tokenizer().eval()
    batch = synthetic_batch(3)
    out = model(batch)
    real = ~batch["pad_mask"].numpy()
    recon, patches = out.reconstruction.detach().numpy(), batch["patches"].numpy()
    expected_morphology = ((recon[real] - patches[real]) ** 2).mean()
    assert out.morphology.item() == pytest.approx(float(expected_morphology), rel=1e-5)

    # Demography: standardised-age MSE over the one record with age + BCE over both sexes.
    age_term = ((out.age[0].item() - 63.0) / 20.0) ** 2
    logits, sexes = out.sex_logit.numpy(), np.array([1.0, 0.0])
    probs = 1.0 / (1.0 + np.exp(-logits))
    sex_term = -(sexes * np.log(probs) + (1 - sexes) * np.log(1 - probs)).mean()
    assert out.demography.item() == pytest.approx(age_term + sex_term, rel=1e-4)


def test_unknown_demography_contributes_exactly_zero():
    model = tiny_tokenizer()
    batch = synthetic_batch(2)
    batch["has_age"] = torch.tensor([False, False])
    batch["has_sex"] = torch.tensor([False, False])
    out = model(batch)
    assert out.demography.item() == 0.0
    out.loss.backward()  # still differentiable, every parameter gets a (zero) gradient
    assert torch.equal(model.demography_head[2].weight.grad, torch.zeros_like(model.demography_head[2].weight))
    # A batch without any demography keys scores it as zero too.
    bare = {k: batch[k] for k in ("patches", "lead_ids", "pad_mask")}
    assert tiny_tokenizer()(bare).demography.item() == 0.0


def test_padding_never_influences_real_tokens():
    model = tiny_tokenizer().eval()
    batch = synthetic_batch(4)
    pad = batch["pad_mask"]
    noisy = dict(batch)
    noisy["patches"] = batch["patches"] + 3.0 * torch.randn(batch["patches"].shape) * pad[..., None]
    clean_out, noisy_out = model(batch), model(noisy)
    assert torch.equal(clean_out.indices, noisy_out.indices)
    for name in ("loss", "morphology", "frequency", "demography", "codebook", "commitment"):
        torch.testing.assert_close(getattr(clean_out, name), getattr(noisy_out, name))
    torch.testing.assert_close(clean_out.reconstruction[~pad], noisy_out.reconstruction[~pad])


def test_encode_matches_forward_and_changes_no_state():
    model = tiny_tokenizer(restart_after=1)
    batch = synthetic_batch(2)
    model.train()(batch)  # k-means init on the first training batch
    assert bool(model.codebook.initialized)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    codes = model.encode(batch["patches"], batch["lead_ids"], batch["pad_mask"])
    assert torch.equal(codes, model(batch).indices)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_rejects_mismatched_frequency_targets():
    model = tiny_tokenizer()
    batch = synthetic_batch(1)
    batch["freq_targets"] = torch.zeros(2, 1, 4, 100)
    with pytest.raises(ValueError, match="100 coefficients"):
        model(batch)


def test_overfits_a_fixed_batch_of_real_patches(shared_data):
    signal, _ = wfdb.rdsamp(str(shared_data / "mitdb" / "100"), sampto=360 * 6)
    resampled = resample_poly(signal.T, 5, 6, axis=1)  # [2, 1800]: 360 -> 300 Hz
    resampled -= resampled.mean(axis=1, keepdims=True)
    patches = torch.from_numpy(resampled.astype(np.float32)).view(1, 2, 6, 300).repeat(2, 1, 1, 1)
    pad_mask = torch.zeros(2, 2, 6, dtype=torch.bool)
    pad_mask[1, :, 4:] = True
    batch = {
        "patches": patches.masked_fill(pad_mask[..., None], 0.0),
        "lead_ids": torch.tensor([[LEAD_INDEX["II"], LEAD_INDEX["V1"]]] * 2),
        "pad_mask": pad_mask,
        "age": torch.tensor([69.0, 69.0]),  # record 100: male, 69 (header)
        "sex": torch.tensor([1, 1]),
    }
    batch["freq_targets"] = frequency_targets(batch["patches"], "db6", 4)
    model = tiny_tokenizer(restart_after=5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, morphology = [], []
    for _ in range(30):
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
        morphology.append(out.morphology.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0]
    assert morphology[-1] < morphology[0]


AIDS = dict(ema_decay=0.9, kmeans_pool=16, restart_after=2, beta_warmup_steps=3, amplitude_inputs=True,
            frequency_magnitude=True, frequency_drop_finest=2)


@pytest.mark.parametrize("n_leads", [1, 12])
def test_forward_backward_with_every_training_aid(n_leads):
    model = tiny_tokenizer(**AIDS).train()
    assert model.n_freq == frequency_size(300, "db6", 4, drop_finest=2) == 29 + 29 + 47
    for step in range(4):
        batch = synthetic_batch(n_leads, seed=step)
        out = model(batch)
        assert torch.isfinite(out.loss)
        model.zero_grad()
        out.loss.backward()
    assert bool(model.codebook.initialized)
    for name, param in model.named_parameters():
        if name == "codebook.codes":
            assert not param.requires_grad  # EMA codes
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.patch_embed.amplitude.weight.grad.abs().sum() > 0


def test_amplitude_inputs_tell_x_from_2x():
    batch = synthetic_batch(2)
    doubled = {**batch, "patches": 2 * batch["patches"]}
    change = {}
    for aware in (False, True):
        model = tiny_tokenizer(amplitude_inputs=aware).eval()
        h1 = model.encode_continuous(batch["patches"], batch["lead_ids"], batch["pad_mask"])
        h2 = model.encode_continuous(doubled["patches"], doubled["lead_ids"], doubled["pad_mask"])
        change[aware] = float(((h1 - h2).norm() / h1.norm()).detach())
    # per-patch GroupNorm leaves only its epsilon's trace of the scale; the amplitude inputs see it
    assert change[False] < 0.02 and change[True] > 5 * change[False], change
