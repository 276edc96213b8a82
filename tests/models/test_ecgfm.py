"""ECG-FM: contract and shapes, published parameter counts, the pretraining pieces against
hand-built references, pretraining on real CinC 2021 recordings, 1- and 12-lead embeddings."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.signal import resample_poly

from anyecg.io import read_record
from anyecg.models.contract import to_model_input
from anyecg.models.ecgfm import (
    ECGFM,
    ECGFMConfig,
    ECGFMPretrainer,
    GumbelQuantizer,
    SegmentPairs,
    build_ecgfm,
    cmsc_loss,
    collate_pairs,
    contrastive_logits,
    count_parameters,
    ecgfm_config,
    encode_recording,
    list_presets,
    load_encoder_weights,
    random_lead_mask,
    sample_negatives,
    span_mask,
)
from anyecg.signal.leads import STANDARD_12
from anyecg.signal.normalize import normalize
from anyecg.signal.recipe import Recipe, clean
from anyecg.training.loop import TrainConfig, train

NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "dropout_input": 0.0, "dropout_features": 0.0}


@pytest.fixture(scope="module")
def cinc(shared_data):
    """16 CinC 2021 12-lead records (Georgia, PTB-XL, Chapman), cleaned at their native 500 Hz, z-scored."""
    recipe = Recipe(target_fs=500)
    records = []
    for path in sorted((shared_data / "cinc2021").glob("*.hea"))[::3][:16]:
        record = read_record(path)
        signal = normalize(clean(record.signal, record.fs, recipe), recipe)[0]
        records.append(dataclasses.replace(record, signal=signal, fs=500.0))
    return records


def test_published_parameter_counts():
    # ECG-FM's README: the base model has 90,883,072 parameters, the paper's model 311,940,352
    counts = count_parameters("ecgfm-base")
    assert abs(counts["pretraining"] - 90.9e6) / 90.9e6 < 0.05
    assert counts["pretraining"] == 90_883_072
    assert count_parameters("ecgfm-large")["pretraining"] == 311_940_352
    entries = {e["name"]: e for e in list_presets()}
    assert set(entries) >= {"ecgfm-tiny", "ecgfm-small", "ecgfm-base"}
    base = entries["ecgfm-base"]
    assert (base["family"], base["fs"], base["window_s"], base["leads"]) == ("ecgfm", 500, 5, 12)
    assert base["parameters"] == counts["pretraining"] and base["encoder_parameters"] == counts["encoder"]
    assert base["paper_parameters"] == 90_883_072 and base["description"]
    assert entries["ecgfm-tiny"]["parameters"] < 200_000  # CPU-sized


@pytest.mark.parametrize("preset", ["ecgfm-tiny", "ecgfm-small"])
def test_forward_backward(preset):
    torch.manual_seed(0)
    model = build_ecgfm(preset, num_classes=3)
    config = model.config
    x = torch.randn(2, 12, config.contract.n_samples)
    logits = model(x)
    assert logits.shape == (2, 3)
    assert model.forward_features(x).shape == (2, config.dim)
    assert model.forward_tokens(x).shape == (2, config.n_frames, config.dim)
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    headless = build_ecgfm(preset)
    assert headless.n_outputs == config.dim and headless(x).shape == (2, config.dim)


def test_contract_mismatch_errors_print_the_values():
    model = build_ecgfm("ecgfm-tiny")
    with pytest.raises(ValueError, match=r"\(2, 12, 2000\).*\[B, 12, 2500\]"):
        model(torch.zeros(2, 12, 2000))
    with pytest.raises(ValueError, match=r"\(2, 8, 2500\)"):
        model(torch.zeros(2, 8, 2500))
    with pytest.raises(ValueError, match="lead_mask"):
        model(torch.zeros(2, 12, 2500), torch.ones(2, 12))
    with pytest.raises(ValueError, match="n_heads"):
        ECGFMConfig(dim=100, n_heads=12)


def test_config_round_trips_through_json():
    config = ecgfm_config("ecgfm-small", num_classes=5, leads=("ii",))
    assert config.leads == ("II",)
    assert ECGFMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        ECGFMConfig.from_dict({"width": 3})


def test_attention_maps_match_torch_multi_head_attention():
    torch.manual_seed(0)
    model = build_ecgfm("ecgfm-tiny").eval()
    x = torch.randn(2, 12, 2500)
    captured = {}

    def keep_first_input(module, args):  # returns None: the layer's arguments are left as they are
        captured.setdefault("x", args[0])

    model.transformer.layers[0].register_forward_pre_hook(keep_first_input)
    fused = model.forward_tokens(x)
    maps = model.attention_maps(x)
    config = model.config
    assert len(maps) == config.depth
    assert all(m.shape == (2, config.n_heads, config.n_frames, config.n_frames) for m in maps)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, config.n_heads, config.n_frames))
    # the readable path gives the same tokens as the fused one
    torch.testing.assert_close(model.encode(x, need_weights=True)[0], fused, atol=1e-5, rtol=1e-5)
    # layer 0 against PyTorch's own multi-head attention on the same input
    attn = model.transformer.layers[0].attn
    h = captured["x"].transpose(0, 1)  # [N, B, D]
    out, weights = F.multi_head_attention_forward(
        h, h, h, config.dim, config.n_heads,
        torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
        torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
        None, None, False, 0.0, attn.out_proj.weight, attn.out_proj.bias,
        training=False, need_weights=True, average_attn_weights=False,
    )
    torch.testing.assert_close(maps[0], weights, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn(captured["x"])[0], out.transpose(0, 1), atol=1e-5, rtol=1e-4)


def test_single_and_twelve_lead_embeddings(cinc):
    torch.manual_seed(0)
    model = build_ecgfm("ecgfm-tiny").eval()
    contract = model.config.contract
    record = cinc[0]
    x12, mask12 = to_model_input(record.signal, record.fs, record.leads, contract)
    ii = record.leads.index("II")
    x1, mask1 = to_model_input(record.signal[ii : ii + 1], record.fs, ["II"], contract)
    assert mask12.all() and mask1.sum() == 1 and mask1[STANDARD_12.index("II")]
    embed = lambda x, m: model.embed(torch.from_numpy(x)[None], torch.from_numpy(m)[None])  # noqa: E731
    e12, e1 = embed(x12, mask12), embed(x1, mask1)
    assert e12.shape == e1.shape == (1, model.config.dim)
    assert torch.isfinite(e1).all() and not torch.allclose(e1, e12)
    # masking the other eleven leads of the 12-lead input is the single-lead input
    torch.testing.assert_close(embed(x12, mask1), e1)
    # a model built for one lead takes [B, 1, T]
    single = build_ecgfm("ecgfm-tiny", leads=("II",)).eval()
    x, mask = to_model_input(record.signal, record.fs, record.leads, single.config.contract)
    assert x.shape == (1, 2500) and mask.tolist() == [True]
    assert single.embed(torch.from_numpy(x)[None]).shape == (1, single.config.dim)


def test_encode_recording_scores_each_window(shared_data):
    record = read_record(shared_data / "ptbdb" / "s0010_re")  # 38.4 s, 1000 Hz, 15 leads
    model = build_ecgfm("ecgfm-tiny", num_classes=2).eval()
    embeddings = encode_recording(model, record.signal, record.fs, record.leads, batch_size=3)
    logits = encode_recording(model, record.signal, record.fs, record.leads, features=False)
    assert embeddings.shape == (8, model.config.dim) and logits.shape == (8, 2)  # 7 whole windows + 3.4 s
    x, mask = to_model_input(record.signal, record.fs, record.leads, model.config.contract)
    with torch.no_grad():
        first = model.embed(torch.from_numpy(x)[None], torch.from_numpy(mask)[None])[0]
    torch.testing.assert_close(embeddings[0], first)


def _reference_span_mask(length, prob, span, rng):
    """wav2vec 2.0's static span masking for one row, written with numpy."""
    n = max(2, int(prob * length / span + rng.random()))
    mask = np.zeros(length, dtype=bool)
    for start in rng.choice(length - span + 1, n, replace=False):
        mask[start : start + span] = True
    return mask


def test_span_mask_matches_reference_and_equalises_rows():
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    ours = [span_mask(1, 156, 0.65, 10, generator=generator)[0].numpy() for _ in range(1500)]
    reference = [_reference_span_mask(156, 0.65, 10, rng) for _ in range(1500)]
    assert abs(np.mean(ours) - np.mean(reference)) < 0.01
    for row in ours[:200]:  # one row is never trimmed: every masked run is a union of whole spans
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        assert (np.diff(edges)[::2] >= 10).all()
    batch = span_mask(16, 156, 0.65, 10, generator=generator)
    counts = batch.sum(dim=1)
    assert (counts == counts[0]).all() and counts[0] >= 20
    with pytest.raises(ValueError, match="span"):
        span_mask(2, 8, 0.65, 10)


def test_sample_negatives_draws_every_other_target_uniformly():
    B, M, n = 3, 5, 4000
    y = torch.arange(M, dtype=torch.float32).view(1, M, 1).expand(B, M, 2).contiguous()  # feature = position
    negatives = sample_negatives(y, n, torch.Generator().manual_seed(0))
    assert negatives.shape == (B, M, n, 2)
    drawn = negatives[..., 0].long()  # [B, M, n]
    for m in range(M):
        counts = np.bincount(drawn[:, m].flatten().numpy(), minlength=M)
        assert counts[m] == 0
        others = np.delete(counts, m)
        assert np.allclose(others / others.sum(), 1 / (M - 1), atol=0.02)


def test_contrastive_logits_by_hand():
    torch.manual_seed(0)
    pred, target = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    negatives = torch.randn(1, 2, 2, 3)
    negatives[0, 1, 0] = target[0, 1]  # a distractor that is the target itself
    logits = contrastive_logits(pred, target, negatives, temperature=0.1)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    assert logits[0, 0, 0] == pytest.approx(cos(pred[0, 0], target[0, 0]) / 0.1, rel=1e-5)
    assert logits[0, 0, 2] == pytest.approx(cos(pred[0, 0], negatives[0, 0, 1]) / 0.1, rel=1e-5)
    assert logits[0, 1, 1] == float("-inf") and torch.isfinite(logits[0, 1, [0, 2]]).all()


def test_gumbel_quantizer_round_trip_and_perplexity():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(in_dim=8, groups=2, entries=5, out_dim=6, temperature=(2.0, 0.5, 0.999))
    x = torch.randn(3, 7, 8)
    out = quantizer.eval()(x)
    # quantised vector = the chosen entry of each group, concatenated
    expected = torch.cat([quantizer.codebook[g][out.indices[..., g]] for g in range(2)], dim=-1)  # [3, 7, 6]
    torch.testing.assert_close(out.x, expected)
    indices = out.indices.reshape(-1, 2).numpy()
    ppl = 0.0
    for g in range(2):
        p = np.bincount(indices[:, g], minlength=5) / len(indices)
        ppl += math.exp(-sum(q * math.log(q + 1e-7) for q in p))
    assert float(out.code_perplexity) == pytest.approx(ppl, rel=1e-5)
    assert int(quantizer.num_updates) == 0
    # training: hard choice forward, gradient to the logits through the straight-through estimator
    quantizer.train()
    quantizer.num_updates.fill_(1000)
    trained = quantizer(x, torch.Generator().manual_seed(1))
    assert trained.temperature == pytest.approx(max(2.0 * 0.999**1000, 0.5))
    assert int(quantizer.num_updates) == 1001
    trained.x.sum().backward()
    assert quantizer.weight_proj.weight.grad.abs().sum() > 0
    rows = trained.x.view(-1, 2, 3)
    assert all((rows[:, g, None] == quantizer.codebook[g][None]).all(-1).any(-1).all() for g in range(2))


def _reference_cmsc(a, b, ids, temperature):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    sim = a @ b.T / temperature
    total = 0.0
    for logits in (sim, sim.T):
        rows = []
        for i in range(len(logits)):
            log_p = logits[i] - np.log(np.exp(logits[i]).sum())
            rows.append(-np.mean([log_p[j] for j in range(len(ids)) if ids[j] == ids[i]]))
        total += 0.5 * np.mean(rows)
    return total


def test_cmsc_loss_matches_hand_computation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    loss, _ = cmsc_loss(torch.from_numpy(a), torch.from_numpy(b), temperature=0.1)
    assert float(loss) == pytest.approx(_reference_cmsc(a, b, [0, 1, 2, 3], 0.1), rel=1e-5)
    ids = [7, 7, 3, 5]  # the first two segments come from one patient
    loss, _ = cmsc_loss(torch.from_numpy(a), torch.from_numpy(b), torch.tensor(ids), temperature=0.5)
    assert float(loss) == pytest.approx(_reference_cmsc(a, b, ids, 0.5), rel=1e-5)
    same = torch.from_numpy(a)
    _, accuracy = cmsc_loss(same, same)
    assert float(accuracy) == 1.0


def test_random_lead_mask_drops_present_leads_only():
    present = torch.ones(4000, 12, dtype=torch.bool)
    present[:, 6:] = False  # six leads absent
    present[:1000, 1:] = False  # single-lead rows
    kept = random_lead_mask(present, 0.5, torch.Generator().manual_seed(0))
    assert not (kept & ~present).any()
    assert kept.any(dim=1).all()  # every row keeps a lead
    assert kept[:1000, 0].all()  # a single lead is never dropped
    drop_rate = 1 - kept[1000:].sum() / present[1000:].sum()
    assert abs(float(drop_rate) - 0.5) < 0.02


def test_pretraining_loss_decreases_on_real_cinc2021(cinc):
    config = ecgfm_config("ecgfm-tiny", **NO_DROPOUT)
    pairs = SegmentPairs(cinc, config.contract)
    batch = collate_pairs([pairs[i] for i in range(len(pairs))])
    assert batch["x"].shape == (16, 2, 12, 2500) and batch["lead_mask"].all()
    torch.manual_seed(0)
    model = ECGFMPretrainer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(6):
        # the same masks, distractors, Gumbel noise and dropped leads every step: a pure overfit
        out = model(batch, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append(out)
    first, last = history[0], history[-1]
    assert 0.2 < first.mask_fraction < 0.7 and 0.0 < first.leads_kept < 1.0
    assert first.contrastive == pytest.approx(math.log(1 + config.num_negatives), rel=0.15)  # near chance at start
    assert float(last.loss.detach()) < 0.75 * float(first.loss.detach())
    assert float(last.contrastive) < float(first.contrastive)
    assert float(last.cmsc) < float(first.cmsc)
    total = last.contrastive + 0.1 * last.diversity + 10 * last.feature_penalty + last.cmsc
    assert float(last.loss.detach()) == pytest.approx(float(total), rel=1e-5)


def test_pretrainer_in_training_loop_then_downstream(cinc, tmp_path):
    config = ecgfm_config("ecgfm-tiny")
    model = ECGFMPretrainer(config)
    pairs = SegmentPairs(cinc[:4], config.contract)
    train_config = TrainConfig(max_steps=2, batch_size=4, warmup_steps=1, log_every=1, save_every=2, device="cpu")
    metrics = train(model, pairs, collate_pairs, train_config, tmp_path, model_config=config.to_dict())
    for name in ("loss", "contrastive", "cmsc", "diversity", "feature_penalty", "code_perplexity", "accuracy"):
        assert math.isfinite(metrics[name]), name
    saved = json.loads((tmp_path / "final" / "config.json").read_text())
    downstream = ECGFM(dataclasses.replace(ECGFMConfig.from_dict(saved), num_classes=2))
    load_encoder_weights(downstream, load_file(str(tmp_path / "final" / "model.safetensors")))
    for name, value in model.encoder.state_dict().items():
        torch.testing.assert_close(downstream.state_dict()[name], value)
    with pytest.raises(ValueError, match="missing"):
        load_encoder_weights(build_ecgfm("ecgfm-small"), model.state_dict())


def test_segment_pairs_are_adjacent_windows(shared_data):
    record = read_record(shared_data / "ptbdb" / "s0010_re")  # 1000 Hz: converted to 500 Hz
    contract = ecgfm_config("ecgfm-tiny").contract
    pairs = SegmentPairs([record], contract, seed=3)
    slots = [record.leads.index(lead) for lead in STANDARD_12]
    reference = resample_poly(record.signal[slots].astype(np.float64), 1, 2, axis=1)  # [12, 19200]
    n = contract.n_samples
    starts = []
    for epoch in range(3):
        pairs.set_epoch(epoch)
        item = pairs[0]
        assert item["lead_mask"].all() and item["x"].shape == (2, 12, n)
        joined = np.concatenate(list(item["x"]), axis=1)  # [12, 2n]
        offsets = range(reference.shape[1] - 2 * n + 1)
        start = int(np.argmin([np.abs(reference[0, s : s + 64] - joined[0, :64]).max() for s in offsets]))
        np.testing.assert_allclose(joined, reference[:, start : start + 2 * n], atol=1e-4)
        starts.append(start)
    assert len(set(starts)) > 1  # each epoch draws a new pair
    batch = collate_pairs([pairs[0], pairs[0]])
    assert batch["patient_ids"].tolist() == [0, 0]  # one patient: both rows positives of each other
