"""ECG-FM and ECGFounder fine-tuned through the same finetune / evaluate path as AnyECG and the baselines."""

import json

import numpy as np
import pytest
import torch

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.families import FamilyClassifier, FamilyModel, is_family_checkpoint, pretrain_family
from anyecg.io import read_record
from anyecg.tasks.runner import load_finetuned, predict_signal
from anyecg.training.loop import TrainConfig


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory, copy_records):
    """24 CinC 2021 12-lead records (anomaly labels) and MIT-BIH 101, 208 (DS1: train and validation) and 100 (DS2) for beats."""
    src = tmp_path_factory.mktemp("family_src")
    cinc = [header.stem for header in sorted((shared_data / "cinc2021").glob("*.hea"))[:24]]
    copy_records(shared_data / "cinc2021", src / "cinc2021", cinc)
    copy_records(shared_data / "mitdb", src / "mitdb", ["100", "101", "208"])
    out = tmp_path_factory.mktemp("family_store")
    prepare(PrepareConfig(sources=[src], out=out, progress=False))
    return out


@pytest.fixture(scope="module", params=[("ecgfm", "ecgfm-tiny"), ("ecgfounder", "ecgfounder-tiny")], ids=["ecgfm", "ecgfounder"])
def pretrained(request, store, tmp_path_factory):
    family, preset = request.param
    out = tmp_path_factory.mktemp(f"{family}-pretrained")
    pretrain_family(family, store, preset, out, TrainConfig(max_steps=2, batch_size=4, warmup_steps=1, save_every=2, log_every=1))
    return family, out


def test_family_checkpoints_are_recognised(pretrained, tmp_path):
    _, run = pretrained
    assert is_family_checkpoint(run) and is_family_checkpoint(run / "final")
    assert not is_family_checkpoint(None) and not is_family_checkpoint(tmp_path)


def test_linear_probe_keeps_the_pretrained_network(pretrained, store, tmp_path):
    from anyecg.tasks.runner import FinetuneConfig, finetune

    family, run = pretrained
    summary = finetune(store, tmp_path / "probe", FinetuneConfig(task="anomaly", model=str(run), linear_probe=True,
                                                                  seeds=1, steps=3, batch_size=4, lr=1e-2))
    assert summary["classes"] == ["abnormal", "normal"] and "auroc" in summary["metrics"]
    tuned, config = load_finetuned(tmp_path / "probe" / "seed-0" / "final")
    assert config["model"]["kind"] == "family" and config["model"]["family"] == family
    original = FamilyModel.from_pretrained(run).network.state_dict()
    for key, value in tuned.net.network.state_dict().items():  # the network under the RR-feature head
        torch.testing.assert_close(value, original[key], rtol=0, atol=0, msg=key)


def test_finetune_evaluate_predict_commands(pretrained, store, shared_data, tmp_path):
    from anyecg.cli import main

    _, run = pretrained
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "anomaly", "--data", str(store), "--out", str(out), "--model", str(run),
                 "--seeds", "1", "--steps", "2", "--batch-size", "4"]) == 0
    model_dir = out / "seed-0" / "final"
    assert main(["evaluate", "--model", str(model_dir), "--data", str(store), "--out", str(tmp_path / "ev")]) == 0
    # reloaded and rescored, the fine-tuned model gives the numbers finetune recorded
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == json.loads((out / "seed-0" / "test" / "metrics.json").read_text())
    model, config = load_finetuned(model_dir)
    assert isinstance(model.net, FamilyClassifier)
    record = read_record(shared_data / "mitdb" / "100.hea")
    probabilities = predict_signal(model, config, record.signal[:, : 360 * 20], record.fs, record.raw_leads)
    assert probabilities.shape == (2,) and abs(probabilities.sum() - 1) < 1e-5


def test_beat_classification_with_a_family(pretrained, store, tmp_path):
    from anyecg.tasks.beat_task import BeatConfig, evaluate_beats, finetune_beats

    _, run = pretrained
    summary = finetune_beats(store, tmp_path / "beats", BeatConfig(model=str(run), seeds=1, max_steps=2, batch_size=8,
                                                                   max_beats_per_record=20))
    assert summary["test_records"] == ["100"] and np.isfinite(summary["metrics"]["accuracy"]["mean"])
    again = evaluate_beats(tmp_path / "beats" / "seed-0" / "final", store, tmp_path / "ev")
    assert again["accuracy"] == json.loads((tmp_path / "beats" / "seed-0" / "test" / "metrics.json").read_text())["accuracy"]
