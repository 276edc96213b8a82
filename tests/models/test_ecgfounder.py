"""ECGFounder (Net1D): layers against hand-computed references, the published size against a
closed-form count, the signal contract, fine-tuning controls, loading public Net1D weights, and
supervised multi-label pretraining on real CinC 2021 records through the training loop."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from anyecg.data.multilabel import MultiLabelWindows, build_vocabulary, collate_multilabel
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.models.contract import to_model_input
from anyecg.models.ecgfounder import (
    PRESETS,
    Bottleneck,
    ECGFounder,
    ECGFounderConfig,
    SameConv1d,
    SqueezeExcite,
    build_ecgfounder,
    count_parameters,
    ecgfounder_config,
    list_presets,
    load_reference_weights,
    multilabel_loss,
    same_max_pool,
)
from anyecg.signal.leads import STANDARD_12
from anyecg.training.checkpoint import load_config, load_state_dict_strict
from anyecg.training.loop import TrainConfig, train

PUBLISHED_PARAMETERS = 30_752_646  # ecgfounder-base as built here (stated in the module docstring)
PUBLIC_MODULE_PARAMETERS = 30_819_014  # the public Net1D module, which also builds unused BatchNorm layers


def closed_form_parameters(c: ECGFounderConfig, *, public_module: bool = False) -> int:
    """Net1D parameters from the config alone; `public_module` adds the BatchNorm layers the
    public Net1D constructs in every block whether or not it uses them."""
    k = c.kernel_size
    total = len(c.leads) * c.base_filters * k + c.base_filters  # stem conv
    norms = 2 * c.base_filters if (c.use_bn or public_module) else 0
    width = c.base_filters
    for stage, (out, n_blocks) in enumerate(zip(c.filter_list, c.m_blocks_list)):
        for block in range(n_blocks):
            cin = width if block == 0 else out
            mid, groups, squeezed = int(out * c.ratio), out // c.groups_width, out // c.se_reduction
            total += cin * mid + mid  # conv1 (1x1)
            total += mid * (mid // groups) * k + mid  # grouped conv k
            total += mid * out + out  # conv3 (1x1)
            total += out * squeezed + squeezed + squeezed * out + out  # squeeze-and-excitation
            first = stage == 0 and block == 0
            if public_module:
                norms += 2 * cin + 4 * mid
            elif c.use_bn:
                norms += (0 if first else 2 * cin) + 4 * mid
        width = out
    return total + norms + width * c.num_classes + c.num_classes  # + head


def test_published_size_on_the_meta_device():
    config = ecgfounder_config("ecgfounder-base")
    assert config.filter_list == (64, 160, 160, 400, 400, 1024, 1024)
    assert config.m_blocks_list == (2, 2, 2, 3, 3, 4, 4)
    assert (config.kernel_size, config.stride, config.groups_width, config.num_classes) == (16, 2, 16, 150)
    assert count_parameters("ecgfounder-base") == closed_form_parameters(config) == PUBLISHED_PARAMETERS
    assert closed_form_parameters(config, public_module=True) == PUBLIC_MODULE_PARAMETERS
    single = ecgfounder_config("ecgfounder-1lead")
    assert count_parameters("ecgfounder-1lead") == closed_form_parameters(single) == PUBLISHED_PARAMETERS - 11 * 64 * 16
    for name in ("ecgfounder-small", "ecgfounder-tiny"):
        assert count_parameters(name) == closed_form_parameters(ecgfounder_config(name))
    with torch.device("meta"):
        model = build_ecgfounder("ecgfounder-base")
    assert all(p.device.type == "meta" for p in model.parameters())


def test_list_presets_entries():
    entries = {entry["name"]: entry for entry in list_presets()}
    assert set(entries) == set(PRESETS)
    for name, entry in entries.items():
        assert entry["family"] == "ecgfounder" and entry["fs"] == 500 and entry["window_s"] == 10
        assert entry["parameters"] == count_parameters(name)
    assert entries["ecgfounder-1lead"]["leads"] == ["I"] and entries["ecgfounder-base"]["leads"] == list(STANDARD_12)
    assert entries["ecgfounder-tiny"]["parameters"] < entries["ecgfounder-small"]["parameters"] < 2e6


def _reference_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, groups: int) -> np.ndarray:
    """SAME convolution written out: pad so the output has ceil(T / stride) samples, extra on the right."""
    c_in, length = x.shape
    c_out, per_group, kernel = weight.shape
    n_out = -(-length // stride)
    pad = max(0, (n_out - 1) * stride + kernel - length)
    padded = np.concatenate([np.zeros((c_in, pad // 2)), x, np.zeros((c_in, pad - pad // 2))], axis=1)
    out = np.zeros((c_out, n_out))
    for o in range(c_out):
        group = o // (c_out // groups)
        for t in range(n_out):
            window = padded[group * per_group : (group + 1) * per_group, t * stride : t * stride + kernel]
            out[o, t] = np.sum(window * weight[o]) + bias[o]
    return out


@pytest.mark.parametrize("length, stride, kernel, groups", [(37, 2, 16, 2), (40, 2, 16, 1), (23, 1, 5, 4), (9, 2, 1, 1)])
def test_same_conv_equals_the_written_out_convolution(length, stride, kernel, groups):
    torch.manual_seed(0)
    conv = SameConv1d(4, 8, kernel, stride=stride, groups=groups).double()
    x = torch.randn(4, length, dtype=torch.float64)
    out = conv(x[None])[0].detach().numpy()
    expected = _reference_conv(x.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy(), stride, groups)
    assert out.shape == (8, -(-length // stride))
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_shortcut_pooling_and_squeeze_excitation_by_hand():
    x = torch.tensor([[[-3.0, -1.0, 4.0, 2.0, -5.0]]])
    # pairs (-3, -1), (4, 2), then -5 against the zero the public Net1D pads with
    assert same_max_pool(x, 2).tolist() == [[[-1.0, 4.0, 0.0]]]

    torch.manual_seed(0)
    se = SqueezeExcite(4, 2).double()
    h = torch.randn(2, 4, 7, dtype=torch.float64)
    squeezed = h.mean(-1) @ se.fc1.weight.T + se.fc1.bias  # [2, 2]
    gate = torch.sigmoid((squeezed * torch.sigmoid(squeezed)) @ se.fc2.weight.T + se.fc2.bias)  # [2, 4]
    torch.testing.assert_close(se(h), h * gate[:, :, None])


def test_block_residual_path_pools_and_zero_pads_channels():
    config = ecgfounder_config("ecgfounder-tiny")
    block = Bottleneck(8, 16, downsample=True, first=False, config=config).eval()
    torch.nn.init.zeros_(block.conv3.weight)
    torch.nn.init.zeros_(block.conv3.bias)  # the residual branch now adds exactly zero
    x = torch.randn(2, 8, 11)
    out = block(x)
    pooled = torch.stack([x[..., 2 * t : 2 * t + 2].max(-1).values for t in range(5)], dim=-1)
    pooled = torch.cat([pooled, torch.maximum(x[..., 10:11], torch.zeros(1))], dim=-1)  # [2, 8, 6]
    assert out.shape == (2, 16, 6)
    torch.testing.assert_close(out[:, 4:12], pooled)  # 8 new channels: 4 zero rows either side
    assert not out[:, :4].any() and not out[:, 12:].any()


@pytest.mark.parametrize("name, overrides", [
    ("ecgfounder-tiny", {}),
    ("ecgfounder-tiny", {"use_bn": False, "dropout": 0.5}),
    ("ecgfounder-small", {}),
])
def test_forward_backward(name, overrides):
    torch.manual_seed(0)
    model = build_ecgfounder(name, num_classes=5, **overrides)
    x = torch.randn(2, 12, 5000)
    lengths = []
    for stage in [model.stem, *model.stages]:
        stage.register_forward_hook(lambda module, args, out: lengths.append(out.shape[-1]))
    features = model.forward_features(x)
    logits = model.forward_head(features)
    assert features.shape == (2, model.num_features) and logits.shape == (2, 5)
    expected, length = [], 5000
    for _ in range(len(model.config.filter_list) + 1):
        length = -(-length // 2)
        expected.append(length)
    assert lengths == expected  # every stage halves time, rounding up (SAME padding)
    batch = {"x": x, "lead_mask": torch.ones(2, 12, dtype=torch.bool), "targets": torch.tensor([[1.0, 0, 0, 1, 0]] * 2)}
    output = model(batch)
    output.loss.backward()
    assert output.n_positive.item() == 4 and torch.isfinite(output.loss)
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    assert model.forward_head(features, pre_logits=True) is features
    model.eval()  # dropout off: embed and forward_features are the same computation
    torch.testing.assert_close(model.embed(x), model.forward_features(x))


def test_loss_equals_the_written_out_binary_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.0, 3.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    pos_weight = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    p = 1 / (1 + np.exp(-logits.numpy()))
    y, w = targets.numpy(), pos_weight.numpy()
    expected = np.mean(-(w * y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert multilabel_loss(logits, targets, pos_weight).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 2\) does not match logits \(2, 3\)"):
        multilabel_loss(logits, targets[:, :2])

    model = build_ecgfounder("ecgfounder-tiny", num_classes=3, pos_weight=(2.0, 0.5, 1.0)).eval()
    x = torch.randn(2, 12, 5000)
    output = model({"x": x, "targets": targets.float()})
    expected = multilabel_loss(model(x), targets.float(), torch.tensor([2.0, 0.5, 1.0]))
    torch.testing.assert_close(output.loss, expected)


def test_contract_mismatches_print_the_values():
    model = build_ecgfounder("ecgfounder-tiny", num_classes=2)
    with pytest.raises(ValueError, match=r"input shape \(2, 12, 3000\) does not match .*\[B, 12, 5000\]"):
        model(torch.zeros(2, 12, 3000))
    with pytest.raises(ValueError, match=r"lead_mask must be a bool tensor of shape \(2, 12\).*torch.bool \(2, 11\)"):
        model(torch.zeros(2, 12, 5000), torch.ones(2, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs 'targets'"):
        model({"x": torch.zeros(1, 12, 5000)})
    with pytest.raises(ValueError, match=r"filter_list \[8, 16\] and m_blocks_list \[1\]"):
        ECGFounderConfig(filter_list=(8, 16), m_blocks_list=(1,))
    with pytest.raises(ValueError, match="bottleneck width 24 is not divisible into 5 groups"):
        ECGFounderConfig(filter_list=(80,), m_blocks_list=(1,), base_filters=16, ratio=0.3)
    with pytest.raises(ValueError, match=r"unknown: \['V7'\]"):
        ECGFounderConfig(leads=("I", "V7"))
    with pytest.raises(ValueError, match="3 entries for 2 classes"):
        ECGFounderConfig(num_classes=2, pos_weight=(1.0, 1.0, 1.0))


def test_absent_leads_read_as_zero():
    torch.manual_seed(0)
    model = build_ecgfounder("ecgfounder-tiny", num_classes=3).eval()
    x = torch.randn(1, 12, 5000)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 7:] = False
    zeroed = x.clone()
    zeroed[0, 7:] = 0
    torch.testing.assert_close(model(x, mask), model(zeroed))
    assert not torch.allclose(model(x), model(zeroed))


def test_single_lead_preset_takes_one_lead():
    model = build_ecgfounder("ecgfounder-1lead").eval()
    assert model.config.contract.leads == ("I",) and model.config.contract.n_samples == 5000
    with torch.no_grad():
        assert model(torch.randn(1, 1, 5000)).shape == (1, 150)
    with pytest.raises(ValueError, match=r"\[B, 1, 5000\]"):
        model(torch.randn(1, 12, 5000))


def test_reset_head_and_linear_probe():
    torch.manual_seed(0)
    model = build_ecgfounder("ecgfounder-tiny", num_classes=7)
    x = torch.randn(4, 12, 5000)
    model.eval()
    features = model.forward_features(x)
    model.reset_head(3, pos_weight=(1.0, 2.0, 3.0))
    assert model.config.num_classes == 3 and model(x).shape == (4, 3)
    torch.testing.assert_close(model.forward_features(x), features)
    assert model.pos_weight.tolist() == [1.0, 2.0, 3.0]
    model.reset_head(0)
    assert model.n_outputs == model.num_features and model(x).shape == (4, model.num_features)
    with pytest.raises(ValueError, match="no head"):
        model({"x": x, "targets": torch.zeros(4, 1)})

    model.reset_head(2)
    model.freeze_backbone()
    model.train()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model({"x": x, "targets": torch.ones(4, 2)}).loss.backward()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in statistics.items())  # BatchNorm stays fixed
    assert model.head.training and not model.stages.training
    rebuilt = ECGFounder(ECGFounderConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))))
    assert rebuilt.config == model.config and not rebuilt.stem[0].weight.requires_grad
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.parameters()) and model.stages.training


def _public_name(ours: str) -> str:
    """Our parameter name -> the public Net1D's, written out from its module layout."""
    parts = ours.split(".")
    if parts[0] == "stem":
        return ("first_conv.conv." if parts[1] == "0" else "first_bn.") + ".".join(parts[2:])
    if parts[0] == "head":
        return "dense." + parts[1]
    stage, block, layer, rest = parts[1], parts[2], parts[3], parts[4:]
    prefix = f"stage_list.{stage}.block_list.{block}."
    if layer.startswith("conv"):
        return prefix + f"{layer}.conv." + ".".join(rest)
    if layer.startswith("act"):
        return prefix + f"bn{layer[-1]}." + ".".join(rest[1:])
    return prefix + f"se_{rest[0]}." + rest[1]


@pytest.mark.parametrize("use_bn", [True, False])
def test_public_net1d_weights_load(use_bn):
    torch.manual_seed(0)
    source = build_ecgfounder("ecgfounder-tiny", num_classes=4, use_bn=use_bn).eval()
    public = {"module." + _public_name(k): v for k, v in source.state_dict().items()}
    # BatchNorm layers the public module builds but does not use: the first block's bn1 always,
    # and all of them when use_bn is False.
    unused = ["stage_list.0.block_list.0.bn1.weight", "stage_list.0.block_list.0.bn1.running_mean"]
    if not use_bn:
        unused += ["first_bn.weight", "stage_list.2.block_list.0.bn3.bias"]
    # ... and still hold their initial values (weight 1, bias and running mean 0)
    public.update({"module." + name: torch.ones(8) if name.endswith(".weight") else torch.zeros(8) for name in unused})

    target = build_ecgfounder("ecgfounder-tiny", num_classes=4, use_bn=use_bn).eval()
    assert sorted(load_reference_weights(target, public)) == sorted(unused)
    x = torch.randn(2, 12, 5000)
    torch.testing.assert_close(target(x), source(x))

    finetune = build_ecgfounder("ecgfounder-tiny", num_classes=2, use_bn=use_bn)
    head = finetune.head.weight.clone()
    load_reference_weights(finetune, public, include_head=False)
    assert torch.equal(finetune.head.weight, head)
    torch.testing.assert_close(finetune.eval().forward_features(x), source.forward_features(x))

    trained = {**public, "module.stage_list.0.block_list.0.bn1.weight": torch.full((8,), 0.5)}
    with pytest.raises(ValueError, match=r"not at their initial values.*bn1\.weight"):
        load_reference_weights(target, trained)

    public["module.stage_list.9.block_list.0.conv1.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected \['stages\.9\.0\.conv1\.weight'\]"):
        load_reference_weights(target, public)


CINC = [f"E075{i:02d}" for i in range(7)] + [f"HR0600{i}" for i in range(6)] + [f"JS200{i:02d}" for i in range(7)]


@pytest.fixture(scope="module")
def cinc_store(shared_data, tmp_path_factory, copy_records) -> Store:
    corpus = copy_records(shared_data / "cinc2021", tmp_path_factory.mktemp("cinc") / "cinc2021", CINC)
    out = tmp_path_factory.mktemp("store")
    prepare(PrepareConfig(sources=[corpus.parent], out=out, progress=False))
    return Store(out)


def _mean_loss(model: ECGFounder, dataset: MultiLabelWindows) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(collate_multilabel([dataset[i] for i in range(len(dataset))])).loss)


def test_supervised_pretraining_on_real_records(cinc_store, tmp_path):
    target, below = build_vocabulary(cinc_store.manifest, min_count=2)
    assert target.num_classes >= 5 and below  # the singleton diagnoses are reported, not dropped silently
    torch.manual_seed(0)
    model = build_ecgfounder("ecgfounder-tiny", num_classes=target.num_classes)
    training = MultiLabelWindows(cinc_store, target, model.config.contract)
    evaluation = MultiLabelWindows(cinc_store, target, model.config.contract, random_crop=False)
    assert len(training) == len(evaluation) == len(CINC)
    before = _mean_loss(model, evaluation)

    config = TrainConfig(max_steps=30, batch_size=8, lr=1e-2, warmup_steps=3, log_every=10, save_every=1000,
                         device="cpu", precision="fp32")
    train(model, training, collate_multilabel, config, tmp_path / "run", model_config=model.config.to_dict(),
          recipe_json=cinc_store.recipe.to_json())
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [10, 20, 30] and all(m["n_positive"] > 0 for m in logged)

    after = _mean_loss(model, evaluation)
    # The best constant prediction scores the mean binary entropy of the class frequencies:
    # beating it means the network uses the signal, not only the label priors.
    frequency = np.asarray(target.counts) / target.n_records
    prior_only = float(np.mean(-(frequency * np.log(frequency) + (1 - frequency) * np.log(1 - frequency))))
    assert after < before and after < prior_only
    assert logged[-1]["loss"] < before

    # The checkpoint rebuilds the same model from its config.json.
    final = tmp_path / "run" / "final"
    restored = ECGFounder(ECGFounderConfig.from_dict(load_config(final)))
    load_state_dict_strict(restored, final)
    batch = collate_multilabel([evaluation[0], evaluation[1]])
    torch.testing.assert_close(restored.eval()(batch["x"], batch["lead_mask"]), model.eval()(batch["x"], batch["lead_mask"]))


def test_linear_probe_through_the_loop_trains_only_the_head(cinc_store, tmp_path):
    target, _ = build_vocabulary(cinc_store.manifest, min_count=2)
    model = build_ecgfounder("ecgfounder-tiny", num_classes=target.num_classes)
    model.freeze_backbone()
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("head.")}
    head = model.head.weight.clone()
    dataset = MultiLabelWindows(cinc_store, target, model.config.contract)
    config = TrainConfig(max_steps=3, batch_size=4, lr=1e-2, warmup_steps=1, log_every=3, save_every=1000, device="cpu")
    train(model, dataset, collate_multilabel, config, tmp_path / "probe", model_config=model.config.to_dict())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items())
    assert not torch.equal(model.head.weight, head)
    assert load_config(tmp_path / "probe" / "final")["frozen_backbone"] is True


def test_embeddings_of_one_lead_and_twelve_lead_recordings(cinc_store):
    record = cinc_store[0]  # a 12-lead CinC record, stored at 300 Hz
    twelve = build_ecgfounder("ecgfounder-tiny", num_classes=0).eval()
    single = ECGFounder(dataclasses.replace(ecgfounder_config("ecgfounder-tiny", num_classes=0), leads=("I",))).eval()

    x12, mask12 = to_model_input(record.signal, record.fs, record.leads, twelve.config.contract)  # [12, 5000]
    x1, mask1 = to_model_input(record.signal, record.fs, record.leads, single.config.contract)  # [1, 5000]
    np.testing.assert_array_equal(x1[0], x12[0])  # the single-lead model reads lead I
    assert mask1.tolist() == [True] and mask12.all()

    lead_i_only, lead_i_mask = to_model_input(record.signal[:1], record.fs, ["I"], twelve.config.contract)
    assert lead_i_mask.tolist() == [True] + [False] * 11
    with torch.no_grad():
        e12 = twelve.embed(torch.from_numpy(x12)[None], torch.from_numpy(mask12)[None])
        e12_from_one = twelve.embed(torch.from_numpy(lead_i_only)[None], torch.from_numpy(lead_i_mask)[None])
        e1 = single.embed(torch.from_numpy(x1)[None])
    assert e12.shape == e12_from_one.shape == (1, 64) and e1.shape == (1, 64)
    assert all(torch.isfinite(e).all() for e in (e12, e12_from_one, e1))
    assert not torch.allclose(e12, e12_from_one)  # the other eleven leads carry information
