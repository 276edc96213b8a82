import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anyecg.io import read_record
from anyecg.models.baselines import BASELINES, PRESETS, baseline_config, build_baseline, list_presets
from anyecg.models.baselines.common import BaselineClassifier
from anyecg.models.baselines.leadgen_gan import GanTrainConfig, GanTrainer, LeadGenGAN, gradient_penalty
from anyecg.models.baselines.leadgen_linear import LinearLeadGenerator, fit_least_squares
from anyecg.models.contract import to_model_input
from anyecg.signal.leads import STANDARD_12
from anyecg.signal.recipe import preprocess
from anyecg.training.checkpoint import load_config, load_state_dict_strict
from anyecg.training.loop import FINAL, TrainConfig, train

# Test-scale widths for every registry entry: the architectures are the real ones, only narrower.
TINY = {
    "xresnet1d": {"layers": (1, 2), "widths": (4, 8), "stem_widths": (4, 4, 8), "expansion": 4},
    "inception1d": {"depth": 3, "n_filters": 4, "bottleneck": 4, "kernel_size": 8},
    "rnn1d": {"hidden": 8, "bidirectional": True},
    "dens_ecg": {"conv_channels": (4, 8), "lstm_hidden": (8, 4)},
    "cnn_transformer": {"widths": (8, 16), "n_heads": 2, "depth": 1},
    "contrawr": {"widths": (4, 8), "n_fft": 64, "hop_length": 32},
    "ffcl": {"widths": (4, 8), "hidden": 8, "fold": 50},
    "st_transformer": {"dim": 16, "n_heads": 2, "patch_size": 100, "temporal_depth": 1},
    "leadgen_linear": {},
    "leadgen_gan": {"widths": (4, 8), "disc_widths": (4, 8)},
}
CLASSIFIERS = [name for name, (_, model) in BASELINES.items() if issubclass(model, BaselineClassifier)]
GENERATORS = [name for name in BASELINES if name not in CLASSIFIERS]
LEAD_SETS = {"12-lead": STANDARD_12, "1-lead": ("I",)}
SINUS_RHYTHM = "426783006"  # SNOMED CT


def tiny(name: str, leads: tuple[str, ...], **overrides):
    if name in GENERATORS:
        # 12-lead case: three recorded leads -> the other nine; 1-lead case: I -> the other eleven.
        inputs = ("I", "II", "V2") if len(leads) > 1 else leads
        overrides["target_leads"] = tuple(lead for lead in STANDARD_12 if lead not in inputs)
        leads = inputs
    return build_baseline(name, leads=leads, **{**TINY[name], **overrides})


def test_every_registry_entry_has_test_widths_and_a_preset():
    assert set(TINY) == set(BASELINES)
    assert set(BASELINES) <= set(PRESETS)


@pytest.mark.parametrize("lead_set", LEAD_SETS)
@pytest.mark.parametrize("name", list(BASELINES))
def test_forward_backward_reaches_every_parameter(name, lead_set):
    torch.manual_seed(0)
    extra = {"num_classes": 3} if name in CLASSIFIERS else {}
    model = tiny(name, LEAD_SETS[lead_set], **extra).train()
    C = len(model.config.leads)
    x = torch.randn(2, C, 3000)
    lead_mask = torch.ones(2, C, dtype=torch.bool)
    lead_mask[1, 0] = C == 1  # drop a lead of the second recording when there is more than one

    if name in CLASSIFIERS:
        features = model.forward_features(x, lead_mask)
        assert features.shape == (2, model.num_features)
        assert torch.equal(model.forward_head(features, pre_logits=True), features)
        logits = model.forward_head(features)
        assert logits.shape == (2, 3) == (2, model.n_outputs)
        loss = F.cross_entropy(logits, torch.tensor([0, 2]))
        outputs = logits
    else:
        outputs = model(x, lead_mask)
        assert outputs.shape == (2, len(model.config.target_leads), 3000)
        loss = outputs.square().mean()
        if isinstance(model, LeadGenGAN):
            loss = loss + model.discriminate(x, outputs).mean()
    assert torch.isfinite(outputs).all() and torch.isfinite(loss)
    loss.backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name}: no gradient reaches {parameter_name}"
        assert torch.isfinite(parameter.grad).all(), f"{name}: non-finite gradient in {parameter_name}"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_absent_leads_never_leak_and_embedding_without_head(name):
    torch.manual_seed(0)
    model = tiny(name, STANDARD_12).eval()  # num_classes 0: no head
    x = torch.randn(2, 12, 3000)
    lead_mask = torch.ones(2, 12, dtype=torch.bool)
    lead_mask[0, 3:9] = False
    garbage = x.clone()
    garbage[~lead_mask] = 1e3  # a caller's stray values in absent slots
    zeroed = x * lead_mask[:, :, None]
    with torch.no_grad():
        out = model(garbage, lead_mask)
        torch.testing.assert_close(out, model(zeroed, lead_mask))
        torch.testing.assert_close(out, model.embed(zeroed, lead_mask))
    assert isinstance(model.head, nn.Identity) and out.shape == (2, model.num_features) == (2, model.n_outputs)


def test_input_that_breaks_the_contract_is_rejected_with_its_values():
    model = tiny("xresnet1d", STANDARD_12)
    with pytest.raises(ValueError, match=r"\(2, 12, 2500\).*\[B, 12, 3000\]"):
        model(torch.zeros(2, 12, 2500))
    with pytest.raises(ValueError, match=r"\[B, 12, 3000\]"):
        model(torch.zeros(2, 8, 3000))
    with pytest.raises(ValueError, match=r"lead_mask must be a bool tensor of shape \(2, 12\).*torch.float32"):
        model(torch.zeros(2, 12, 3000), torch.ones(2, 12))
    with pytest.raises(TypeError, match="no field.*'hiden'"):
        build_baseline("rnn1d", hiden=3)
    with pytest.raises(KeyError, match="unknown baseline 'resnet'"):
        build_baseline("resnet")


def test_configs_survive_a_json_round_trip():
    for name in PRESETS:
        config = baseline_config(name)
        restored = type(config)(**json.loads(json.dumps(dataclasses.asdict(config))))
        assert restored == config, name


def test_list_presets_counts_match_built_models_and_hand_counts():
    entries = {entry["name"]: entry for entry in list_presets()}
    assert set(entries) == set(PRESETS)
    assert all(e["family"] == "baseline" and e["parameters"] > 0 for e in entries.values())
    for name in ("ffcl", "st_transformer", "contrawr"):  # meta-device count == a real build's count
        assert entries[name]["parameters"] == sum(p.numel() for p in build_baseline(name).parameters())
    # Two-layer LSTM with hidden H on C inputs: 4H(C + H) + 8H, then 4H(2H) + 8H.
    H, C = 128, 12
    assert entries["rnn1d"]["parameters"] == 4 * H * (C + H) + 8 * H + 4 * H * 2 * H + 8 * H
    assert entries["leadgen_linear"]["parameters"] == 11 * 1 + 11  # I -> 11 leads: W [11, 1] + b [11]
    gan = build_baseline("leadgen_gan")
    assert entries["leadgen_gan"]["parameters"] == sum(p.numel() for p in gan.generator.parameters())
    assert entries["leadgen_gan"]["discriminator_parameters"] == sum(p.numel() for p in gan.discriminator.parameters())
    sizes = [entries[name]["parameters"] for name in ("xresnet1d101", "xresnet1d", "xresnet1d18", "xresnet1d-tiny")]
    assert sizes == sorted(sizes, reverse=True)


def test_fit_least_squares_recovers_a_known_mixing_exactly():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 500))  # 3 examples, 2 present leads
    weight = np.array([[1.0, -2.0], [0.5, 0.25], [3.0, 0.0]])
    offset = np.array([0.1, -1.0, 0.0])
    y = np.einsum("oc,bct->bot", weight, x) + offset[None, :, None]
    fitted_weight, fitted_offset = fit_least_squares(x, y)
    np.testing.assert_allclose(fitted_weight, weight, atol=1e-12)
    np.testing.assert_allclose(fitted_offset, offset, atol=1e-12)

    no_bias_weight, zero = fit_least_squares(x[0], y[0] - offset[:, None], bias=False)  # one recording [C, T]
    np.testing.assert_allclose(no_bias_weight, weight, atol=1e-12)
    assert np.all(zero == 0)

    model = build_baseline("leadgen_linear", window_s=500 / 300, leads=("I", "II"), target_leads=("III", "aVR", "aVL"))
    model.fit(x, y)
    with torch.no_grad():
        generated = model(torch.as_tensor(x, dtype=torch.float32))
    np.testing.assert_allclose(generated.numpy(), y, atol=1e-5)
    with pytest.raises(ValueError, match="share leading shape"):
        fit_least_squares(x, y[..., :-1])
    with pytest.raises(ValueError, match=r"2 input leads \['I', 'II'\] and 3 target leads"):
        model.fit(x[:, :1], y)


def test_linear_fit_finds_einthoven_and_goldberger_on_real_leads(shared_data):
    record = read_record(shared_data / "cinc2021" / "HR06004.hea")
    config = baseline_config("leadgen_linear", leads=("I", "II"), target_leads=("III", "aVR", "aVL", "aVF"))
    model = LinearLeadGenerator(config)
    index = [record.leads.index(name) for name in ("I", "II", "III", "aVR", "aVL", "aVF")]
    model.fit(record.signal[index[:2]], record.signal[index[2:]])
    # III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2
    expected = torch.tensor([[-1.0, 1.0], [-0.5, -0.5], [1.0, -0.5], [-0.5, 1.0]])
    torch.testing.assert_close(model.mix.weight[:, :, 0], expected, atol=5e-3, rtol=0)


def test_gan_generator_matches_target_leads_and_crops_odd_lengths():
    model = build_baseline("leadgen_gan", window_s=2.5, leads=("I", "II"), target_leads=("V1", "V5", "aVF"), **{
        k: v for k, v in TINY["leadgen_gan"].items()})
    x = torch.randn(3, 2, 750)  # 750 is not a multiple of the U-Net's 2 halvings
    assert model(x).shape == (3, 3, 750)
    assert model.discriminate(x, model(x)).shape == (3, 750 // 4 + 1)
    with pytest.raises(ValueError, match=r"target shape \(3, 2, 750\) does not match \[3, 3, 750\]"):
        model.check_target(torch.zeros(3, 2, 750), x)


def test_gradient_penalty_matches_a_linear_critic_by_hand():
    torch.manual_seed(0)
    model = build_baseline("leadgen_gan", window_s=1.0, leads=("I",), target_leads=("II", "III"), **TINY["leadgen_gan"])
    critic = nn.Conv1d(3, 1, 1)  # score = mean_t (w . [x; y]_t + b): d score / d y_t = w_y / T
    model.discriminator = nn.Sequential(critic, nn.Flatten())
    x, real, fake = torch.randn(4, 1, 300), torch.randn(4, 2, 300), torch.randn(4, 2, 300)
    expected = (critic.weight[0, 1:, 0].norm() / 300**0.5 - 1) ** 2
    torch.testing.assert_close(gradient_penalty(model, x, real, fake), expected)


@pytest.fixture(scope="module")
def real_batch(shared_data):
    """8 CinC 2021 records (4 sinus rhythm, 4 not), preprocessed and fitted to the 12-lead 300 Hz 10 s contract."""
    contract = baseline_config("xresnet1d").contract
    signals, labels = [], []
    for record_id in ("E07506", "E07511", "E07513", "E07515", "E07501", "E07502", "E07504", "E07505"):
        record = read_record(shared_data / "cinc2021" / f"{record_id}.hea")
        x, lead_mask = to_model_input(preprocess(record.signal, record.fs), 300, record.leads, contract)
        assert lead_mask.all()
        signals.append(x)
        labels.append(int(SINUS_RHYTHM in record.labels))
    return torch.as_tensor(np.stack(signals)), torch.tensor(labels)


@pytest.mark.parametrize(
    "name, overrides, lr",
    [("xresnet1d", {}, 3e-3), ("rnn1d", {"hidden": 16}, 1e-2), ("cnn_transformer", {"dropout": 0.0}, 3e-3)],
)
def test_short_training_on_real_records_lowers_the_loss(name, overrides, lr, real_batch):
    torch.manual_seed(0)
    x, y = real_batch
    assert y.sum() == 4
    model = tiny(name, STANDARD_12, num_classes=2, **overrides).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses


@pytest.mark.parametrize("loss", ["wgan_gp", "cgan"])
def test_gan_trainer_updates_both_networks_and_lowers_l1_on_real_leads(loss, real_batch):
    torch.manual_seed(0)
    x, _ = real_batch
    model = build_baseline("leadgen_gan", leads=("I",), target_leads=("II", "V2"), loss=loss, **TINY["leadgen_gan"])
    inputs, targets = x[:4, :1], x[:4, [1, 7]]  # lead I -> leads II and V2 of four records
    reference = GanTrainer(model).config  # each loss's published optimiser settings
    assert (reference.betas, reference.n_critic) == {"wgan_gp": ((0.0, 0.9), 5), "cgan": ((0.5, 0.999), 1)}[loss]
    trainer = GanTrainer(model, GanTrainConfig(lr=3e-3, n_critic=1))
    generator_before = [p.detach().clone() for p in model.generator.parameters()]
    discriminator_before = [p.detach().clone() for p in model.discriminator.parameters()]
    history = trainer.fit(iter([(inputs, targets)] * 30), max_steps=25)
    assert len(history) == 25
    assert all(np.isfinite([s.d_loss, s.g_loss, s.l1, s.gradient_penalty]).all() for s in history)
    assert (history[0].gradient_penalty > 0) == (loss == "wgan_gp")
    assert all(not torch.equal(a, b) for a, b in zip(generator_before, model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(discriminator_before, model.discriminator.parameters()))
    assert np.mean([s.l1 for s in history[-3:]]) < 0.8 * history[0].l1


def collate(items: list[dict]) -> dict:
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}


def test_training_loop_trains_a_baseline_and_its_checkpoint_reloads_strictly(real_batch, tmp_path):
    x, y = real_batch
    dataset = [{"x": x[i], "lead_mask": torch.ones(12, dtype=torch.bool), "targets": y[i]} for i in range(len(y))]
    config = baseline_config("xresnet1d", num_classes=2, **TINY["xresnet1d"])
    model = build_baseline("xresnet1d", **dataclasses.asdict(config))
    schedule = TrainConfig(max_steps=8, batch_size=8, warmup_steps=1, lr=3e-3, log_every=1, save_every=100)
    model_config = {"family": "baseline", "model": "xresnet1d", "config": dataclasses.asdict(config)}
    train(model, dataset, collate, schedule, tmp_path, model_config=model_config)

    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 8 and {"loss", "accuracy"} <= set(log[0])
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    saved = load_config(tmp_path / FINAL)
    restored = build_baseline(saved["model"], **saved["config"])
    load_state_dict_strict(restored, tmp_path / FINAL)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval()(x), model.cpu().eval()(x))


def test_supervised_batches_route_to_the_right_loss_and_heads_can_be_reset():
    torch.manual_seed(0)
    model = tiny("ffcl", STANDARD_12)
    x = torch.randn(3, 12, 3000)
    with pytest.raises(ValueError, match="no head"):
        model({"x": x, "targets": torch.tensor([0, 1, 1])})
    model.reset_head(4)
    assert model(x).shape == (3, 4) and model.config.num_classes == 4
    single = model({"x": x, "targets": torch.tensor([0, 3, 1])})
    torch.testing.assert_close(single.loss, F.cross_entropy(single.logits, torch.tensor([0, 3, 1])))
    multi_targets = torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    multi = model({"x": x, "targets": multi_targets})
    by_hand = -(multi_targets * F.logsigmoid(multi.logits) + (1 - multi_targets) * F.logsigmoid(-multi.logits)).mean()
    torch.testing.assert_close(multi.loss, by_hand)
    with pytest.raises(ValueError, match=r"class indices \[B\] \(integer\) or multi-label .* got torch.float32 \(3,\)"):
        model({"x": x, "targets": torch.zeros(3)})


def test_linear_generator_batch_loss_is_the_mean_squared_error():
    model = build_baseline("leadgen_linear", leads=("I", "II"), target_leads=("III",))
    x, targets = torch.randn(2, 2, 3000), torch.randn(2, 1, 3000)
    output = model({"x": x, "targets": targets})
    with torch.no_grad():
        generated = model(x)
    torch.testing.assert_close(output.loss, ((generated - targets) ** 2).mean())
    torch.testing.assert_close(output.mae, (generated - targets).abs().mean())
    with pytest.raises(ValueError, match=r"needs 'targets' of shape \(2, 1, 3000\)"):
        model({"x": x, "targets": targets[:, :, :100]})
