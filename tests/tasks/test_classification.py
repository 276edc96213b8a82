"""Record-level fine-tuning on real CinC 2021 records: AnyECG linear probe and a baseline."""

import json

import numpy as np
import pytest
import torch

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.models.baselines import build_baseline
from anyecg.pretrained import AnyECG
from anyecg.tasks.classification import (
    AnyECGClassifier,
    LabelledWindows,
    WithRRFeatures,
    collate_labelled,
    predict_records,
    record_labels,
    subsample_labels,
)
from anyecg.tasks.record_rr import RECORD_FEATURES
from anyecg.training.loop import TrainConfig, train

SINUS = "426783006"


def sinus_or_not(labels):
    return None if not labels else ("sinus" if SINUS in labels else "other")


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory, copy_records):
    stems = [header.stem for header in sorted((shared_data / "cinc2021").glob("*.hea"))[:24]]
    src = copy_records(shared_data / "cinc2021", tmp_path_factory.mktemp("cls_src"), stems)
    out = tmp_path_factory.mktemp("cls_store")
    prepare(PrepareConfig(sources=[src], out=out, progress=False))
    return Store(out)


def test_record_labels_and_label_fraction(store):
    labels = record_labels(store, sinus_or_not)
    assert labels.classes == ["other", "sinus"]
    expected = [("sinus" if SINUS in l.split(";") else "other") for l in store.manifest["labels"]]
    assert [labels.classes[t] for t in labels.targets] == expected
    rows = labels.records
    half = subsample_labels(labels, rows, 0.5, seed=1)
    assert set(half) <= set(rows) and len(half) < len(rows)
    assert {labels.targets[list(rows).index(r)] for r in half} == {0, 1}  # every class kept
    np.testing.assert_array_equal(half, subsample_labels(labels, rows, 0.5, seed=1))


def test_linear_probe_trains_only_the_head(store, tmp_path):
    labels = record_labels(store, sinus_or_not)
    pretrained = AnyECG.from_pretrained()
    frozen = {k: v.clone() for k, v in pretrained.backbone.state_dict().items()}
    model = AnyECGClassifier(pretrained.backbone, len(labels.classes), linear_probe=True)
    data = LabelledWindows(store, labels, labels.records, form="tokens", seed=0)
    config = TrainConfig(max_steps=6, batch_size=8, lr=1e-2, warmup_steps=1, save_every=6, log_every=2)
    metrics = train(model, data, collate_labelled, config, tmp_path / "probe", model_config={"task": "test"})
    assert np.isfinite(metrics["loss"])
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, frozen[key], rtol=0, atol=0, msg=key)
    evaluation = LabelledWindows(store, labels, labels.records, form="tokens", random_crop=False)
    records, probabilities = predict_records(model, evaluation, len(labels.classes))
    assert sorted(records) == sorted(labels.records)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_baseline_through_the_same_loop_and_windows(store, tmp_path):
    labels = record_labels(store, sinus_or_not)
    model = build_baseline("xresnet1d-tiny", num_classes=len(labels.classes))
    data = LabelledWindows(store, labels, labels.records, form="contract", contract=model.config.contract)
    config = TrainConfig(max_steps=4, batch_size=8, lr=1e-3, warmup_steps=1, save_every=4, log_every=2)
    metrics = train(model, data, collate_labelled, config, tmp_path / "baseline", model_config={"task": "test"})
    assert np.isfinite(metrics["loss"])
    records, probabilities = predict_records(
        model, LabelledWindows(store, labels, labels.records, form="contract", contract=model.config.contract,
                               random_crop=False), len(labels.classes))
    assert probabilities.shape == (len(labels.records), 2)


def test_finetune_and_evaluate_commands(store, tmp_path, capsys):
    """The user's path: finetune over seeds, then evaluate a seed's model on the test split."""
    import json

    from anyecg.cli import main

    out = tmp_path / "ft"
    assert main(["finetune", "--task", "anomaly", "--data", str(store.root), "--out", str(out), "--linear-probe",
                 "--seeds", "2", "--steps", "3", "--batch-size", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 2 and summary["classes"] == ["abnormal", "normal"]
    assert set(summary["metrics"]["accuracy"]) == {"mean", "std", "n"} and summary["metrics"]["accuracy"]["n"] == 2
    assert main(["evaluate", "--model", str(out / "seed-1" / "final"), "--data", str(store.root), "--out",
                 str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("accuracy", "auroc", "auprc", "f1_weighted", "f1_macro", "precision", "per_class"):
        assert key in metrics
    assert "auroc_normal_positive" in metrics and "auroc_abnormal_positive" in metrics
    predictions = (tmp_path / "ev" / "predictions.csv").read_text().splitlines()
    test_records = int((store.manifest["split"] == "test").sum())
    assert len(predictions) == 1 + test_records and predictions[0].startswith("record_id,label,predicted,p_abnormal")
    assert (tmp_path / "ev" / "roc_pr.png").stat().st_size > 0 and (tmp_path / "ev" / "confusion.png").stat().st_size > 0
    # the same model scored twice gives the same numbers
    assert metrics == json.loads((out / "seed-1" / "test" / "metrics.json").read_text())


def test_finetune_a_baseline_with_a_label_fraction(store, tmp_path):
    from anyecg.tasks.runner import FinetuneConfig, finetune

    summary = finetune(store.root, tmp_path / "b", FinetuneConfig(
        task="anomaly", baseline="xresnet1d-tiny", seeds=1, steps=2, batch_size=4, label_fraction=0.5))
    assert summary["label_fraction"] == 0.5 and "auroc" in summary["metrics"]


def test_predict_and_embed_commands_on_record_files(store, shared_data, tmp_path, capsys):
    import json

    import pandas as pd

    from anyecg.cli import main

    out = tmp_path / "ft"
    assert main(["finetune", "--task", "anomaly", "--data", str(store.root), "--out", str(out), "--linear-probe",
                 "--seeds", "1", "--steps", "2", "--batch-size", "8"]) == 0
    capsys.readouterr()
    files = [str(shared_data / "cinc2021" / "E07500.hea"), str(shared_data / "mitdb" / "100.hea")]
    broken = tmp_path / "broken.hea"
    broken.write_text("not a header\n")
    assert main(["predict", *files, str(broken), "--model", str(out / "seed-0" / "final"), "--format", "json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert [r["record"] for r in rows] == ["E07500", "100"]
    for row in rows:
        assert row["predicted"] in ("abnormal", "normal")
        assert row["p_abnormal"] + row["p_normal"] == pytest.approx(1, abs=1e-5)
    assert "broken.hea" in captured.err
    # predicting from the raw file equals scoring the prepared copy of the same record in the store
    from anyecg.tasks.runner import load_finetuned, scoring_windows

    model, config = load_finetuned(out / "seed-0" / "final")
    assert config["rr_features"] is not None  # the default: the record's RR features, found again from the raw file
    labels = record_labels(store, sinus_or_not)
    row = int(np.flatnonzero(store.manifest["record_id"] == "E07500")[0])
    windows = scoring_windows(model, config, store, labels, np.array([row]))
    _, stored = predict_records(model, windows, 2)
    np.testing.assert_allclose([rows[0]["p_abnormal"], rows[0]["p_normal"]], stored[0], atol=1e-4)
    assert main(["embed", *files, "--out", str(tmp_path / "e.parquet")]) == 0
    frame = pd.read_parquet(tmp_path / "e.parquet")
    assert frame["record_id"].tolist() == ["E07500", "100"] and frame.shape[1] == 1 + 128
    assert main(["embed", files[0], "--out", str(tmp_path / "e.npy")]) == 0
    assert np.load(tmp_path / "e.npy").shape == (1, 128)


def test_no_rr_features_trains_the_plain_network(store, tmp_path):
    from anyecg.tasks.runner import FinetuneConfig, finetune, load_finetuned

    finetune(store.root, tmp_path / "plain", FinetuneConfig(task="anomaly", linear_probe=True, steps=2, batch_size=8,
                                                             rr_features=False))
    model, config = load_finetuned(tmp_path / "plain")
    assert config["rr_features"] is None and isinstance(model, AnyECGClassifier)
    assert not (tmp_path / "plain" / "rr_features.npz").exists()
    finetune(store.root, tmp_path / "joined", FinetuneConfig(task="anomaly", linear_probe=True, steps=2, batch_size=8))
    model, config = load_finetuned(tmp_path / "joined")
    assert config["rr_features"]["features"] == RECORD_FEATURES and isinstance(model.net, AnyECGClassifier)
    assert (tmp_path / "joined" / "rr_features.npz").is_file()
    assert config["feature_logits"] and model.feature_logits is not None  # the linear path of the record features


def test_the_features_linear_path_adds_to_the_two_layer_head():
    torch.manual_seed(0)
    model = WithRRFeatures(build_baseline("xresnet1d-tiny", num_classes=3, leads=("I",)), 4, 3, feature_logits=True).eval()
    contract = model.config.contract
    batch = {"x": torch.randn(2, 1, contract.n_samples), "lead_mask": torch.ones(2, 1, dtype=torch.bool),
             "rr": torch.randn(2, 4)}
    with torch.no_grad():
        features = model.net.forward_head(model.net.forward_features(batch["x"], batch["lead_mask"]))  # [2, D]
        expected = model.head(torch.cat([features, batch["rr"]], dim=-1)) + batch["rr"] @ model.feature_logits.weight.T \
            + model.feature_logits.bias  # [2, 3]
        torch.testing.assert_close(model.logits(batch), expected)
    plain = WithRRFeatures(build_baseline("xresnet1d-tiny", num_classes=3, leads=("I",)), 4, 3)
    assert plain.feature_logits is None and "feature_logits.weight" not in plain.state_dict()


def test_a_model_saved_before_the_linear_path_loads_without_it(store, tmp_path):
    """Its config has no `feature_logits`: it is rebuilt with the two-layer head alone, as trained."""
    from safetensors.torch import load_file, save_file

    from anyecg.tasks.runner import FinetuneConfig, finetune, load_finetuned

    finetune(store.root, tmp_path / "run", FinetuneConfig(task="anomaly", linear_probe=True, steps=2, batch_size=8))
    final = tmp_path / "run" / "seed-0" / "final"
    model, _ = load_finetuned(final)
    config = json.loads((final / "config.json").read_text())
    del config["feature_logits"]
    (final / "config.json").write_text(json.dumps(config))
    weights = {k: v for k, v in load_file(final / "model.safetensors").items() if not k.startswith("feature_logits.")}
    save_file(weights, final / "model.safetensors")
    old, _ = load_finetuned(final)
    assert old.feature_logits is None
    torch.testing.assert_close(old.head[0].weight, model.head[0].weight)
