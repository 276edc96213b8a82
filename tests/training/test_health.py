"""Health figures during pretraining: written every N steps, a probe that matches an independent one,
no effect on the trained weights, and a history that stays consistent across a resume."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from anyecg.data.store import Store
from anyecg.evaluation.probe import linear_probe, store_embeddings, store_targets
from anyecg.models.presets import tokenizer_config
from anyecg.models.tokenizer import Tokenizer
from anyecg.pretrained import AnyECG
from anyecg.training.health import HEALTH_LOG, HEALTH_PLOT, HealthMonitor
from anyecg.training.loop import TrainConfig
from anyecg.training.pretrain import pretrain_backbone, pretrain_tokenizer

CONFIG = TrainConfig(max_steps=4, batch_size=4, warmup_steps=1, save_every=4, log_every=2)


def read_health(run):
    return [json.loads(line) for line in (run / HEALTH_LOG).read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(small_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("health")
    pretrain_tokenizer(small_store, "anyecg-tiny", root / "tok-plain", CONFIG)
    pretrain_tokenizer(small_store, "anyecg-tiny", root / "tok", CONFIG, health_every=2, health_records=6)
    pretrain_backbone(small_store, root / "tok", "anyecg-tiny", root / "bb", CONFIG, health_every=3,
                      health_records=6, health_probe=small_store, health_data=small_store)
    return root


def test_stage_one_figures_every_n_steps_without_changing_training(runs):
    entries = read_health(runs / "tok")
    assert [e["step"] for e in entries] == [2, 4]
    for entry in entries:
        assert 0 < entry["code_usage"] <= 1 and -1 <= entry["encoder_mean_cosine"] <= 1
        assert 0 < entry["kmeans_mse"] < entry["zero_mse"]
        assert "masked_code_accuracy" not in entry  # stage 1 has no backbone
    # the baselines are fitted once; the model's own figures move as it trains
    assert entries[0]["kmeans_mse"] == entries[1]["kmeans_mse"]
    assert entries[0]["patch_mse"] != entries[1]["patch_mse"]
    assert 0 <= entries[0]["train_s"] <= entries[1]["train_s"]
    assert (runs / "tok" / HEALTH_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # measuring in between does not touch the weights, the codebook or the random state of the run
    with_health, plain = load_file(runs / "tok" / "final" / "model.safetensors"), load_file(runs / "tok-plain" / "final" / "model.safetensors")
    assert with_health.keys() == plain.keys()
    for key in plain:
        assert torch.equal(with_health[key], plain[key]), key


def test_stage_two_figures_and_probe_match_an_independent_probe(runs, small_store):
    entries = read_health(runs / "bb")
    assert [e["step"] for e in entries] == [3, 4]  # every 3 steps, and the last one
    last = entries[-1]
    assert 0 <= last["masked_code_accuracy"] <= 1 and last["masked_tokens_scored"] > 0
    # the last entry measured the final weights: the same probe computed here from them agrees
    store = Store(small_store)
    _, targets = store_targets(store)
    manifest = store.manifest
    features = store_embeddings(AnyECG.from_pretrained(runs / "bb"), store)
    expected = linear_probe(features, targets, manifest["split"].to_numpy(),
                            manifest["patient_id"].astype(str).to_numpy())["val_macro_auroc"]
    assert last["probe_val_macro_auroc"] == pytest.approx(expected, abs=1e-9) or (
        math.isnan(expected) and math.isnan(last["probe_val_macro_auroc"]))


def test_a_resumed_run_drops_the_figures_of_lost_steps(small_store, tmp_path):
    store = Store(small_store)
    stale = [{"step": s, "train_s": 10.0 * s, "code_usage": 0.5} for s in (1, 2, 3, 4)]
    (tmp_path / HEALTH_LOG).write_text("".join(json.dumps(e) + "\n" for e in stale))
    monitor = HealthMonitor(store, tmp_path, every=1, total_steps=6, recipe=store.recipe, max_records=4)
    # the run resumed from its step-2 checkpoint: steps 3 and 4 are redone with other weights
    monitor(Tokenizer(tokenizer_config("anyecg-tiny")), 3)
    entries = read_health(tmp_path)
    assert [e["step"] for e in entries] == [1, 2, 3]
    assert entries[:2] == stale[:2]
    assert entries[2]["train_s"] >= 20.0  # training time continues from the resume point
    assert "kmeans_mse" in entries[2]


def test_bad_settings_are_refused(small_store, tmp_path):
    store = Store(small_store)
    with pytest.raises(ValueError, match="positive number of steps"):
        HealthMonitor(store, tmp_path, every=0, total_steps=4, recipe=store.recipe)
    with pytest.raises(ValueError, match="--fsdp"):
        pretrain_tokenizer(small_store, "anyecg-tiny", tmp_path / "run",
                           TrainConfig(max_steps=2, batch_size=4, fsdp=True), health_every=1)
