"""`finetune --task classify` on a user's own labels: real single-lead excerpts of MIT-BIH records of
different lengths, saved with an unnamed lead (`ECG`) as a wearable would; multi-class and
multi-label; the epoch kept by validation; resume after a kill; whole-record scoring."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import confusion_matrix, f1_score

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.metrics import best_f1_thresholds, classification_metrics
from anyecg.models.baselines import build_baseline
from anyecg.models.contract import SignalContract, to_model_input
from anyecg.pretrained import AnyECG
from anyecg.signal.leads import STANDARD_12
from anyecg.tasks.classification import (
    AnyECGClassifier,
    LabelledWindows,
    WithRRFeatures,
    collate_labelled,
    predict_records,
    record_labels,
    user_classes,
)
from anyecg.tasks.fit import FitConfig, fit, parameter_groups
from anyecg.tasks.runner import lead_mapping, load_finetuned
from anyecg.training.augment import Augmentations, augment_batch
from anyecg.training.checkpoint import load_config
from anyecg.training.loop import FINAL

# (record, split): 201 and 203 hold atrial fibrillation and other rhythms beside sinus rhythm
RECORDS = {"100": "train", "201": "train", "203": "train", "208": "val", "210": "val", "219": "test", "221": "test"}
LETTERS = {"N": "N", "AF": "A", "O": "O"}  # the user's own single-letter classes


@pytest.fixture(scope="module")
def excerpts(shared_data, tmp_path_factory, load_script):
    """Labels table of up to 3 excerpts per record and rhythm, 12-40 s long, as single-lead .npy files."""
    bench = load_script("benchmarks/finetune_quality.py")
    folder = tmp_path_factory.mktemp("excerpts")
    rng = np.random.default_rng(0)
    rows = []
    for record, split in RECORDS.items():
        signal, fs, spans = bench.episodes(shared_data / "mitdb" / record)
        taken: dict[str, int] = {}
        for start, stop, name in spans:
            length = int(rng.uniform(12, 40) * fs)
            if stop - start < length or taken.get(name, 0) == 3:
                continue
            taken[name] = taken.get(name, 0) + 1
            record_id = f"m{record}_{start}"
            np.save(folder / f"{record_id}.npy", signal[None, start:start + length])  # [1, T]
            rows.append({"record": record_id, "rhythm": LETTERS[name], "patient": record, "split": split, "fs": fs,
                         "leads": "ECG", "seconds": length / fs})
    table = pd.DataFrame(rows)
    assert {"A", "N"} <= set(table[table["split"] == "test"]["rhythm"]), table
    return folder, table


def _store(folder, table: pd.DataFrame, label: pd.Series, out) -> Store:
    csv = out.parent / f"{out.name}.csv"
    table.assign(label=label)[["record", "label", "patient", "split", "fs", "leads"]].to_csv(csv, index=False)
    prepare(PrepareConfig(sources=[folder], out=out, labels_csv=csv, progress=False, workers=1))
    return Store(out)


@pytest.fixture(scope="module")
def letters_store(excerpts, tmp_path_factory):
    """Multi-class: one letter per record, and one record without a label."""
    folder, table = excerpts
    label = table["rhythm"].copy()
    label.iloc[0] = ""
    return _store(folder, table, label, tmp_path_factory.mktemp("letters") / "store")


@pytest.fixture(scope="module")
def multilabel_store(excerpts, tmp_path_factory):
    """Multi-label: the rhythm letter, plus `long` for excerpts over 25 s."""
    folder, table = excerpts
    label = table["rhythm"] + np.where(table["seconds"] > 25, ";long", "")
    return _store(folder, table, label, tmp_path_factory.mktemp("multi") / "store")


def test_user_classes_exactly_as_given(letters_store, excerpts):
    _, table = excerpts
    assert set(letters_store.manifest["leads"]) == {"unknown"}  # `ECG`: the unnamed lead
    labels = record_labels(letters_store, user_classes)
    assert labels.classes == sorted(set(table["rhythm"]))
    assert not labels.multilabel and labels.unlabelled == 1 and len(labels.records) == len(table) - 1
    truth = dict(zip(table["record"], table["rhythm"]))
    ids = letters_store.manifest["record_id"].to_numpy()
    assert [labels.classes[t] for t in labels.targets] == [truth[i] for i in ids[labels.records]]
    assert lead_mapping(["I"]) == {"unknown": "I"} and lead_mapping(["MLII=II", "ECG=V1"]) == {"II": "II", "unknown": "V1"}
    with pytest.raises(ValueError, match="not a lead name"):
        lead_mapping(["ECG=foo"])


def test_classify_command_on_single_lead_records(letters_store, tmp_path):
    """The user's path, defaults apart from tiny budgets: a baseline reads the unnamed lead, the
    test metrics match sklearn on the written predictions, evaluate takes the run folder."""
    from anyecg.cli import main

    out = tmp_path / "run"
    assert main(["finetune", "--task", "classify", "--data", str(letters_store.root), "--out", str(out),
                 "--baseline", "xresnet1d-tiny", "--max-epochs", "2", "--batch-size", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 1 and summary["unlabelled_records"] == 1
    assert summary["model_selection"]["source"] == "the store's val split"
    # every class has fewer than 10 training records here: all are reported rare, with their counts
    assert summary["rare_classes"] == {c: {s: summary["class_counts"][s][c] for s in ("test", "train", "val")}
                                       for c in summary["classes"]}
    assert "once" in summary["model_selection"]["test"]
    config = load_config(out / "seed-0" / FINAL)
    assert config["model"]["config"]["leads"] == ["unknown"]  # single-lead model reading the unnamed lead
    assert config["selected_epoch"] in (1, 2)
    assert config["finetune"]["ema_epochs"] == 2  # the record-level default: the weight average is kept
    assert main(["evaluate", "--model", str(out), "--data", str(letters_store.root), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics == json.loads((out / "seed-0" / "test" / "metrics.json").read_text())
    predictions = pd.read_csv(tmp_path / "ev" / "predictions.csv")
    classes = summary["classes"]
    assert metrics["f1_macro"] == pytest.approx(f1_score(predictions["label"], predictions["predicted"], labels=classes,
                                                         average="macro", zero_division=0))
    assert metrics["confusion"] == confusion_matrix(predictions["label"], predictions["predicted"], labels=classes).tolist()
    for name in classes:
        assert set(metrics["per_class"][name]) >= {"f1", "precision", "recall", "auroc", "auprc"}


def test_validation_carved_from_train_patients_without_a_val_split(letters_store):
    from anyecg.tasks.runner import validation_rows

    store = Store(letters_store.root)  # a fresh copy of the manifest, edited below
    store.manifest.loc[store.manifest["split"] == "val", "split"] = "train"
    labels = record_labels(store, user_classes)
    train, val, source = validation_rows(store, labels, 0.3)
    assert "train patients" in source and len(val) and not set(train) & set(val)
    assert set(train) | set(val) == set(labels.records[store.manifest["split"].to_numpy()[labels.records] == "train"])
    patients = store.manifest["patient_id"].to_numpy()
    assert not set(patients[train]) & set(patients[val])  # whole patients on one side


def test_leads_option_maps_the_unnamed_lead(letters_store, tmp_path):
    from anyecg.tasks.runner import FinetuneConfig, finetune

    finetune(letters_store.root, tmp_path / "run", FinetuneConfig(baseline="xresnet1d-tiny", max_epochs=1, steps=2,
                                                                   batch_size=8, leads={"unknown": "I"}))
    config = load_config(tmp_path / "run" / "seed-0" / FINAL)
    assert config["leads_map"] == {"unknown": "I"} and config["model"]["config"]["leads"] == ["I"]
    # a 12-lead model cannot tell which lead an unnamed one is: the error names the record and the fix
    labels = record_labels(letters_store, user_classes)
    windows = LabelledWindows(letters_store, labels, labels.records[:1], form="contract",
                              contract=SignalContract(leads=STANDARD_12))
    with pytest.raises(ValueError, match=r"record .*--leads"):
        windows[0]


def test_multilabel_thresholds_chosen_on_validation(multilabel_store, tmp_path):
    from anyecg.tasks.runner import FinetuneConfig, evaluate, finetune, scoring_windows

    summary = finetune(multilabel_store.root, tmp_path / "run", FinetuneConfig(
        baseline="xresnet1d-tiny", max_epochs=2, batch_size=8))
    assert summary["multilabel"] and "long" in summary["classes"]
    model_dir = tmp_path / "run" / "seed-0" / FINAL
    model, config = load_finetuned(model_dir)
    labels = record_labels(multilabel_store, user_classes)
    val_rows = labels.records[multilabel_store.manifest["split"].to_numpy()[labels.records] == "val"]
    val = scoring_windows(model, config, multilabel_store, labels, val_rows)
    records, probabilities = predict_records(model, val, len(labels.classes), multilabel=True)
    truth = labels.targets[np.searchsorted(labels.records, records)]
    np.testing.assert_allclose(config["thresholds"], best_f1_thresholds(truth, probabilities))
    for k, threshold in enumerate(config["thresholds"]):  # no other cut scores a better validation F1
        if truth[:, k].any():
            best = f1_score(truth[:, k], probabilities[:, k] >= threshold)
            assert all(f1_score(truth[:, k], probabilities[:, k] >= t) <= best + 1e-12 for t in probabilities[:, k])
    metrics = evaluate(model_dir, multilabel_store.root, "test", tmp_path / "ev")
    predictions = pd.read_csv(tmp_path / "ev" / "predictions.csv", keep_default_na=False)
    scores = predictions[[f"p_{c}" for c in labels.classes]].to_numpy()  # [R, K] independent sigmoids
    predicted = scores >= np.array(config["thresholds"])
    test_truth = np.array([[c in row.split(";") for c in labels.classes] for row in predictions["label"]])
    assert metrics["f1_macro"] == pytest.approx(f1_score(test_truth, predicted, average="macro", zero_division=0))
    assert [metrics["per_class"][c]["threshold"] for c in labels.classes] == pytest.approx(config["thresholds"])


def test_records_of_any_length_are_scored_whole(letters_store):
    """A record's probabilities are the mean over every window that tiles it (the last one shorter)."""
    labels = record_labels(letters_store, user_classes)
    model = build_baseline("xresnet1d-tiny", num_classes=len(labels.classes), leads=("unknown",)).eval()
    seconds = letters_store.manifest["duration_s"].to_numpy()[labels.records]
    row = int(labels.records[np.argmax(seconds)])
    windows = LabelledWindows(letters_store, labels, np.array([row]), form="contract", contract=model.config.contract,
                              random_crop=False)
    _, probabilities = predict_records(model, windows, len(labels.classes))
    signal = letters_store.signal(row)  # [1, T] at the store's rate (300 Hz)
    assert signal.shape[1] > 30 * 300
    expected = []
    for start in range(0, signal.shape[1], 10 * 300):
        x, mask = to_model_input(signal[:, start:start + 10 * 300], 300, ["unknown"], model.config.contract)
        with torch.no_grad():
            expected.append(torch.softmax(model(torch.from_numpy(x)[None], torch.from_numpy(mask)[None]), -1)[0].numpy())
    assert len(expected) == len(windows) >= 4
    np.testing.assert_allclose(probabilities[0], np.mean(expected, axis=0), atol=1e-5)


def _tiny_fit(store, out, *, validate, max_epochs, patience=10, after_epoch=None, pretrained=False, **config_options):
    labels = record_labels(store, user_classes)
    rows = labels.records[store.manifest["split"].to_numpy()[labels.records] == "train"]
    torch.manual_seed(0)  # the same initial weights in every run
    model = build_baseline("xresnet1d-tiny", num_classes=len(labels.classes), leads=("unknown",))
    data = LabelledWindows(store, labels, rows, form="contract", contract=model.config.contract, seed=0)
    targets = labels.targets[np.searchsorted(labels.records, rows)]
    config = FitConfig(**{"max_epochs": max_epochs, "patience": patience, "batch_size": 8, "seed": 0, **config_options})
    result = fit(model, data, collate_labelled, targets, validate, config, out, metric="f1_macro", pretrained=pretrained,
                 fs=300.0, model_config={"family": "test"}, after_epoch=after_epoch)
    return model, result


def test_early_stopping_keeps_the_best_validation_epoch(letters_store, tmp_path):
    """Scripted validation scores: epoch 2 is best, epochs 3 and 4 worse; patience 2 stops after 4,
    and out/final must hold epoch 2's weights, not the last epoch's."""
    scores = iter([0.5, 0.9, 0.6, 0.4, 0.95])
    snapshots = []

    def validate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    model, result = _tiny_fit(letters_store, tmp_path / "fit", validate=validate, max_epochs=10, patience=2)
    assert (result.best_epoch, result.epochs_run, result.best_score) == (2, 4, 0.9)
    assert "early stopping" in result.stop_reason and "kept epoch 2 of 4" in result.explain("f1_macro")
    kept = load_file(str(tmp_path / "fit" / FINAL / "model.safetensors"))
    changed = [k for k in kept if not torch.equal(snapshots[1][k], snapshots[3][k])]
    assert changed  # epochs 2 and 4 differ, so the check below can tell them apart
    for key in kept:
        torch.testing.assert_close(kept[key], snapshots[1][key], rtol=0, atol=0)
    assert json.loads((tmp_path / "fit" / "fit.json").read_text())["best_epoch"] == 2


def test_the_weight_average_is_what_validation_scores_and_what_is_kept(letters_store, tmp_path, monkeypatch):
    """With ema_epochs, validation sees the moving average of the weights after every step (recomputed
    here from the weights the optimizer produced), out/final holds it, and checkpoint-last holds the
    raw weights that training goes on from."""
    from anyecg.tasks import fit as fit_module

    trajectory = []  # the model's state after each optimizer step
    real_update = fit_module.WeightAverage.update

    def recording_update(self, model):
        trajectory.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        real_update(self, model)

    validated = []

    def validate(model):
        validated.append({k: v.clone() for k, v in model.state_dict().items()})
        return 0.5

    monkeypatch.setattr(fit_module.WeightAverage, "update", recording_update)
    model, result = _tiny_fit(letters_store, tmp_path / "fit", validate=validate, max_epochs=1, batch_size=2,
                              ema_epochs=0.5)
    steps = result.history[0]["step"]
    assert len(trajectory) == steps >= 4
    horizon = 0.5 * steps
    key = next(k for k, v in trajectory[0].items() if v.is_floating_point() and v.ndim > 1)  # a conv weight
    torch.manual_seed(0)
    expected = build_baseline("xresnet1d-tiny", num_classes=3, leads=("unknown",)).state_dict()[key].clone()
    for t, state in enumerate(trajectory):  # hand-written: decay min(1 - 1/horizon, (1 + t) / (10 + t))
        decay = min(1 - 1 / horizon, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * state[key]
    torch.testing.assert_close(validated[0][key], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(validated[0][key], trajectory[-1][key])  # the average, not the last step
    kept = load_file(str(tmp_path / "fit" / FINAL / "model.safetensors"))
    last = load_file(str(tmp_path / "fit" / "checkpoint-last" / "model.safetensors"))
    torch.testing.assert_close(kept[key], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last[key], trajectory[-1][key], rtol=0, atol=0)
    torch.testing.assert_close(model.state_dict()[key], trajectory[-1][key], rtol=0, atol=0)


def test_epoch_items_bounds_the_steps_of_an_epoch(letters_store, tmp_path):
    _, whole = _tiny_fit(letters_store, tmp_path / "whole", validate=lambda model: 0.5, max_epochs=1, batch_size=2)
    _, bounded = _tiny_fit(letters_store, tmp_path / "bounded", validate=lambda model: 0.5, max_epochs=2, batch_size=2,
                           epoch_items=4)
    assert whole.history[0]["step"] > 2  # every training record once: more than two batches of 2
    assert [h["step"] for h in bounded.history] == [2, 4]  # 4 items in batches of 2: two steps an epoch


def test_a_budget_shortens_the_learning_rate_schedule_to_the_epochs_it_holds(letters_store, tmp_path, monkeypatch):
    """Every epoch takes 30 s on a scripted clock; a 2-minute budget holds 4 epochs, so the cosine
    runs over 4 epochs (not max_epochs 30) and the last steps are near the minimum rate."""
    from types import SimpleNamespace

    from anyecg.tasks import fit as fit_module

    ticks = iter(range(0, 10_000, 30))  # each reading 30 s after the last: every epoch (start, end) takes 30 s
    monkeypatch.setattr(fit_module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    schedule = []
    real_lr_factor = fit_module.lr_factor

    def recording_lr_factor(step, warmup_steps, total_steps, min_ratio):
        schedule.append((step, warmup_steps, total_steps))
        return real_lr_factor(step, warmup_steps, total_steps, min_ratio)

    monkeypatch.setattr(fit_module, "lr_factor", recording_lr_factor)
    _, result = _tiny_fit(letters_store, tmp_path / "fit", validate=lambda model: 0.5, max_epochs=30,
                          budget_minutes=2, batch_size=2)
    steps_per_epoch = schedule[0][1]
    assert steps_per_epoch >= 4 and result.epochs_run == 4 and "budget" in result.stop_reason
    assert {total for step, _, total in schedule if step < steps_per_epoch} == {30 * steps_per_epoch}
    assert {total for step, _, total in schedule if step >= steps_per_epoch} == {4 * steps_per_epoch}
    last_step = schedule[-1][0]
    assert real_lr_factor(last_step, steps_per_epoch, 4 * steps_per_epoch, 0.05) < 0.15  # annealed, not at the peak


@pytest.mark.parametrize("ema_epochs", [0.0, 1.0])
def test_resume_after_a_kill_matches_an_uninterrupted_run(letters_store, tmp_path, ema_epochs):
    def validate_fn():
        scores = iter([0.1, 0.2, 0.3])
        return lambda model: next(scores)

    _, whole = _tiny_fit(letters_store, tmp_path / "whole", validate=validate_fn(), max_epochs=3, ema_epochs=ema_epochs)

    def kill(epoch):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(letters_store, tmp_path / "killed", validate=validate_fn(), max_epochs=3, after_epoch=kill,
                  ema_epochs=ema_epochs)
    scores = iter([0.3])  # the resumed run only validates epoch 3
    _, resumed = _tiny_fit(letters_store, tmp_path / "killed", validate=lambda model: next(scores), max_epochs=3,
                           ema_epochs=ema_epochs)
    assert resumed.epochs_run == 3 and resumed.best_epoch == 3
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a = load_file(str(tmp_path / "whole" / FINAL / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / FINAL / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resuming_with_other_parameter_groups(letters_store, tmp_path):
    """A finished run reports its result without its optimizer; an unfinished one whose optimizer
    groups no longer match (here: layer-wise rates of a 'pretrained' encoder) says what to do."""
    def kill(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(letters_store, tmp_path / "killed", validate=lambda model: 0.5, max_epochs=2, after_epoch=kill)
    with pytest.raises(ValueError, match=r"checkpoint-last: cannot resume .*new --out"):
        _tiny_fit(letters_store, tmp_path / "killed", validate=lambda model: 0.5, max_epochs=2, pretrained=True)

    _, done = _tiny_fit(letters_store, tmp_path / "done", validate=lambda model: 0.5, max_epochs=1)
    _, again = _tiny_fit(letters_store, tmp_path / "done", validate=lambda model: 0.5, max_epochs=1, pretrained=True)
    assert (again.best_epoch, again.epochs_run, again.stop_reason) == (done.best_epoch, done.epochs_run, done.stop_reason)


def test_layer_wise_learning_rates_of_a_pretrained_encoder():
    model = AnyECGClassifier(AnyECG.from_pretrained().backbone, 3)
    depth = len(model.backbone.blocks)
    groups = parameter_groups(model, 1e-3, 0.01, 0.5, pretrained=True)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert all(scale_of[id(p)] == 1.0 for p in model.head.parameters())
    for i, block in enumerate(model.backbone.blocks):
        assert {scale_of[id(p)] for p in block.parameters()} == {0.5 ** (depth - i)}
    assert {scale_of[id(p)] for p in model.backbone.patch_embed.parameters()} == {0.5 ** (depth + 1)}
    assert {g["lr_scale"] for g in parameter_groups(model, 1e-3, 0.01, 0.5, pretrained=False)} == {1.0}


def test_the_features_linear_path_trains_with_a_pretrained_encoders_outer_parameters():
    """Not as the head: at the lowest layer-decayed rate, and not during the head warm-up."""
    from anyecg.tasks.fit import _set_encoder_trainable

    model = WithRRFeatures(AnyECGClassifier(AnyECG.from_pretrained().backbone, 3), 22, 3, feature_logits=True)
    depth = len(model.net.backbone.blocks)
    scale_of = {id(p): g["lr_scale"] for g in parameter_groups(model, 1e-3, 0.01, 0.5, pretrained=True)
                for p in g["params"]}
    path = list(model.feature_logits.parameters())
    assert {scale_of[id(p)] for p in path} == {0.5 ** (depth + 1)}
    assert all(scale_of[id(p)] == 1.0 for p in model.head.parameters())
    _set_encoder_trainable(model, {name: True for name, _ in model.named_parameters()}, encoder_on=False)
    assert not any(p.requires_grad for p in path) and all(p.requires_grad for p in model.head.parameters())


def test_no_weight_decay_on_biases_norms_and_embeddings_of_a_wrapped_encoder():
    model = WithRRFeatures(AnyECGClassifier(AnyECG.from_pretrained().backbone, 3), 16, 3)
    decay_of = {id(p): g["weight_decay"] for g in parameter_groups(model, 1e-3, 0.01, 0.5, pretrained=True)
                for p in g["params"]}
    embed = model.net.backbone.patch_embed
    assert decay_of[id(embed.time_embed)] == decay_of[id(embed.lead_embed.weight)] == 0.0
    for name, p in model.named_parameters():
        exempt = p.ndim < 2 or name.endswith(("time_embed", "lead_embed.weight"))
        assert decay_of[id(p)] == (0.0 if exempt else 0.01), name


def test_augmentations_keep_a_lead_and_leave_padding_empty():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 600)
    mask = torch.tensor([[True, True, False]] * 16)
    out = augment_batch({"x": x, "lead_mask": mask}, 300.0, Augmentations(lead_dropout=0.9), generator)
    assert out["lead_mask"].any(dim=1).all() and not out["lead_mask"][:, 2].any()
    assert (out["x"][~out["lead_mask"]] == 0).all() and not torch.equal(out["x"][:, 0], x[:, 0])
    patches = torch.randn(4, 2, 5, 300)
    pad = torch.zeros(4, 2, 5, dtype=torch.bool)
    pad[:, :, 3:] = True  # the last two seconds are padding
    tokens = augment_batch({"patches": patches, "pad_mask": pad}, 300.0, Augmentations(), generator)
    assert (tokens["patches"][tokens["pad_mask"]] == 0).all() and tokens["pad_mask"][:, :, 3:].all()
    assert (~tokens["pad_mask"]).any(dim=(1, 2)).all()


def test_per_class_thresholds_in_multilabel_metrics():
    truth = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    proba = np.array([[0.6, 0.2], [0.3, 0.4], [0.2, 0.9], [0.1, 0.1]])
    metrics = classification_metrics(truth, proba, ["a", "b"], multilabel=True, threshold=[0.5, 0.3])
    predicted = np.array([[1, 0], [0, 1], [0, 1], [0, 0]])  # by hand: a >= 0.5, b >= 0.3
    assert metrics["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert metrics["confusion"]["a"] == [[2, 0], [1, 1]] and metrics["confusion"]["b"] == [[2, 0], [0, 2]]
    assert metrics["threshold"] == [0.5, 0.3]


def test_a_single_unnamed_lead_is_the_one_lead_of_a_single_lead_model():
    signal = np.arange(600, dtype=np.float32)[None]  # [1, T]
    x, mask = to_model_input(signal, 300, ["unknown"], SignalContract(leads=("II",), window_s=2))
    np.testing.assert_array_equal(x[0], signal[0])
    assert mask.tolist() == [True]
    for leads, contract_leads in ((["V1"], ("II",)), (["unknown"], ("I", "II"))):  # a named lead, or a choice
        with pytest.raises(ValueError, match="none of the leads"):
            to_model_input(signal, 300, leads, SignalContract(leads=contract_leads, window_s=2))


def _probabilities(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return predictions.sort_values("record_id")[[f"p_{c}" for c in classes]].to_numpy()  # [R, K]


def test_a_run_of_several_seeds_is_scored_as_their_ensemble(letters_store, excerpts, tmp_path, capsys):
    """The ensemble's test probabilities are the mean of the seeds' own test predictions; evaluate,
    predict and the Python API take the run folder as that ensemble, a seed's folder as that seed."""
    from anyecg.cli import main
    from anyecg.tasks.runner import predict_signal

    out = tmp_path / "run"
    assert main(["finetune", "--task", "classify", "--data", str(letters_store.root), "--out", str(out),
                 "--baseline", "xresnet1d-tiny", "--seeds", "3", "--max-epochs", "2", "--batch-size", "8"]) == 0
    assert "ensemble of the 3 seeds, test" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble"]["members"] == ["seed-0/final", "seed-1/final", "seed-2/final"]
    classes = summary["classes"]
    seeds = [_probabilities(pd.read_csv(out / f"seed-{k}" / "test" / "predictions.csv"), classes) for k in range(3)]
    assert not np.allclose(seeds[0], seeds[1], atol=1e-3)  # the members differ
    ensemble = pd.read_csv(out / "ensemble" / "test" / "predictions.csv").sort_values("record_id")
    mean = np.mean(seeds, axis=0)
    np.testing.assert_allclose(_probabilities(ensemble, classes), mean, atol=1e-5)
    assert summary["ensemble"]["test"]["f1_macro"] == pytest.approx(f1_score(
        ensemble["label"], np.array(classes)[mean.argmax(1)], labels=classes, average="macro", zero_division=0))

    assert main(["evaluate", "--model", str(out), "--data", str(letters_store.root), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == summary["ensemble"]["test"]
    assert main(["evaluate", "--model", str(out / "seed-1" / FINAL), "--data", str(letters_store.root),
                 "--out", str(tmp_path / "ev1")]) == 0
    assert (json.loads((tmp_path / "ev1" / "metrics.json").read_text())
            == json.loads((out / "seed-1" / "test" / "metrics.json").read_text()))
    np.testing.assert_allclose(_probabilities(pd.read_csv(tmp_path / "ev1" / "predictions.csv"), classes), seeds[1],
                               atol=1e-6)

    folder, table = excerpts
    record = table["record"].iloc[0]
    signal, fs = np.load(folder / f"{record}.npy"), float(table["fs"].iloc[0])  # [1, T]
    model, config = load_finetuned(out)
    assert config["ensemble"] == summary["ensemble"]["members"]
    members = [load_finetuned(out / f"seed-{k}" / FINAL) for k in range(3)]
    np.testing.assert_allclose(predict_signal(model, config, signal, fs, ["ECG"]),
                               np.mean([predict_signal(m, c, signal, fs, ["ECG"]) for m, c in members], axis=0),
                               atol=1e-5)


def test_multilabel_ensemble_thresholds_chosen_on_validation(multilabel_store, tmp_path):
    from anyecg.tasks.runner import FinetuneConfig, finetune, scoring_windows

    summary = finetune(multilabel_store.root, tmp_path / "run", FinetuneConfig(
        baseline="xresnet1d-tiny", seeds=2, max_epochs=2, batch_size=8))
    labels = record_labels(multilabel_store, user_classes)
    val_rows = labels.records[multilabel_store.manifest["split"].to_numpy()[labels.records] == "val"]
    mean = []
    for k in range(2):
        model, config = load_finetuned(tmp_path / "run" / f"seed-{k}" / FINAL)
        records, probabilities = predict_records(model, scoring_windows(model, config, multilabel_store, labels, val_rows),
                                                 len(labels.classes), multilabel=True)
        mean.append(probabilities)
    truth = labels.targets[np.searchsorted(labels.records, records)]
    thresholds = best_f1_thresholds(truth, np.mean(mean, axis=0))
    np.testing.assert_allclose(summary["ensemble"]["thresholds"], thresholds, atol=1e-6)
    assert [summary["ensemble"]["test"]["per_class"][c]["threshold"] for c in labels.classes] == pytest.approx(thresholds)


def test_no_ensemble_when_each_seed_trains_on_its_own_label_subset(letters_store, tmp_path):
    from anyecg.tasks.runner import ENSEMBLE_FILE, FinetuneConfig, finetune

    (tmp_path / "run").mkdir()  # an ensemble left by an earlier run in the same folder is not this run's model
    (tmp_path / "run" / ENSEMBLE_FILE).write_text(json.dumps({"members": ["seed-0/final", "seed-1/final"]}))
    summary = finetune(letters_store.root, tmp_path / "run", FinetuneConfig(
        baseline="xresnet1d-tiny", seeds=2, max_epochs=1, steps=2, batch_size=8, label_fraction=0.5))
    assert summary["ensemble"] is None and not (tmp_path / "run" / ENSEMBLE_FILE).exists()
    _, config = load_finetuned(tmp_path / "run")  # the run folder's model: its first seed
    assert "ensemble" not in config and config == load_finetuned(tmp_path / "run" / "seed-0" / FINAL)[1]


def test_stochastic_depth_is_set_for_training_and_kept_in_the_run(letters_store, tmp_path):
    """`drop_path` reaches the AnyECG encoder's blocks; the saved model rebuilds with the same rates."""
    from anyecg.tasks.runner import FinetuneConfig, finetune

    finetune(letters_store.root, tmp_path / "run", FinetuneConfig(random_init=True, drop_path=0.2, max_epochs=1, steps=2,
                                                                  batch_size=8, rr_features=False))
    config = load_config(tmp_path / "run" / "seed-0" / FINAL)
    assert config["model"]["backbone"]["drop_path"] == 0.2
    model, _ = load_finetuned(tmp_path / "run")
    rates = [block.drop_path for block in model.backbone.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
