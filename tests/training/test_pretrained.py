"""Both pretraining stages end to end on real records, then the AnyECG API on the result."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from anyecg.io import read_record
from anyecg.pretrained import AnyECG
from anyecg.training.checkpoint import CheckpointError
from anyecg.training.loop import TrainConfig
from anyecg.training.pretrain import pretrain_backbone, pretrain_tokenizer


@pytest.fixture(scope="module")
def checkpoints(small_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    config = TrainConfig(max_steps=4, batch_size=4, warmup_steps=1, save_every=4, log_every=2)
    tok = pretrain_tokenizer(small_store, "anyecg-tiny", root / "tok", config)
    bb = pretrain_backbone(small_store, root / "tok", "anyecg-tiny", root / "bb", config)
    assert np.isfinite(tok["loss"]) and np.isfinite(bb["loss"]) and 0 <= bb["accuracy"] <= 1
    return root


def test_embed_and_tokenize_any_rate_leads_and_length(checkpoints, shared_data):
    model = AnyECG.from_pretrained(checkpoints / "bb")
    mit = read_record(shared_data / "mitdb" / "100.hea")
    one_lead = mit.signal[:1, : 360 * 95]  # 95 s of MLII at 360 Hz
    codes = model.tokenize(one_lead, 360, ["MLII"])
    assert codes.shape == (1, 95) and codes.min() >= 0 and codes.max() < model.tokenizer.config.num_codes
    vector = model.embed(one_lead, 360, ["MLII"])
    assert vector.shape == (model.backbone.config.dim,) and np.isfinite(vector).all()

    cinc = read_record(shared_data / "cinc2021" / "E07500.hea")
    tokens = model.embed(cinc.signal, cinc.fs, cinc.raw_leads, per_token=True)
    assert tokens.shape == (12, 10, model.backbone.config.dim)
    # 30 min of 2 leads spans several 512-second windows
    assert model.tokenize(mit.signal, mit.fs, mit.raw_leads).shape == (2, 1806)


def test_windows_no_longer_than_pretraining(checkpoints, shared_data, tmp_path):
    import json

    model = AnyECG.from_pretrained(checkpoints / "bb")
    assert model.window_s is None  # pretrained without a window limit: the token budget decides
    one_lead = read_record(shared_data / "mitdb" / "100.hea").signal[:1, : 360 * 25]  # 25 s
    model.window_s = 10
    model.save_pretrained(tmp_path / "ten")
    assert json.loads((tmp_path / "ten" / "config.json").read_text())["window_s"] == 10
    limited = AnyECG.from_pretrained(tmp_path / "ten")
    assert limited.window_s == 10 and [b["patches"].shape[2] for b in limited.windows(one_lead, 360, ["MLII"])] == [10, 10, 5]
    # the embedding is the mean over the 10 s windows' tokens, each window encoded on its own
    windows = limited.windows(one_lead, 360, ["MLII"])
    tokens = torch.cat([limited.backbone.forward_features(w["patches"], w["lead_ids"], w["pad_mask"])[0] for w in windows])
    np.testing.assert_allclose(limited.embed(one_lead, 360, ["MLII"]), tokens.mean(0).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_save_pretrained_round_trip(checkpoints, shared_data, tmp_path):
    model = AnyECG.from_pretrained(checkpoints / "bb")
    model.save_pretrained(tmp_path / "copy")
    again = AnyECG.from_pretrained(tmp_path / "copy")
    record = read_record(shared_data / "cinc2021" / "E07501.hea")
    np.testing.assert_array_equal(
        model.embed(record.signal, record.fs, record.leads), again.embed(record.signal, record.fs, record.leads)
    )
    tokenizer_only = AnyECG.from_pretrained(checkpoints / "tok")
    assert tokenizer_only.backbone is None
    np.testing.assert_array_equal(
        tokenizer_only.tokenize(record.signal, record.fs, record.leads), model.tokenize(record.signal, record.fs, record.leads)
    )


def test_strict_loading_reports_key_mismatch(checkpoints, tmp_path):
    AnyECG.from_pretrained(checkpoints / "bb").save_pretrained(tmp_path / "broken")
    weights = load_file(str(tmp_path / "broken" / "model.safetensors"))
    removed = sorted(weights)[0]
    del weights[removed]
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, str(tmp_path / "broken" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing") as err:
        AnyECG.from_pretrained(tmp_path / "broken")
    assert removed in str(err.value) and "extra.weight" in str(err.value)


def test_bad_input_is_refused_with_values(checkpoints):
    model = AnyECG.from_pretrained(checkpoints / "bb")
    with pytest.raises(ValueError, match=r"shape \(2, 100\) does not match 1 lead"):
        model.embed(np.zeros((2, 100)), 300, ["II"])
    bad = np.zeros((1, 600))
    bad[0, 5] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        model.embed(bad, 300, ["II"])


def test_stage_two_with_lead_subsets_trains_on_other_inputs(checkpoints, small_store, tmp_path):
    config = TrainConfig(max_steps=2, batch_size=4, warmup_steps=1, save_every=2, log_every=1)
    whole = pretrain_backbone(small_store, checkpoints / "tok", "anyecg-tiny", tmp_path / "whole", config)
    subsets = pretrain_backbone(small_store, checkpoints / "tok", "anyecg-tiny", tmp_path / "subsets", config,
                                lead_subset_prob=1.0)
    assert np.isfinite(subsets["loss"])
    # the same seed, weights and crops: only the leads each window keeps differ
    assert subsets["loss"] != whole["loss"]
