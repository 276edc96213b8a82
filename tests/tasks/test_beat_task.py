"""Inter-patient AAMI beat classification on real MIT-BIH records: DS1 101, 106, 208 and DS2 100, 105."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.tasks.beats import RR_FEATURES, TEMPLATE_FEATURES, rr_features, template_features
from anyecg.tasks.beat_task import (
    CLASSES,
    BeatConfig,
    BeatWindows,
    _build,
    class_weights,
    collate_beats,
    evaluate_beats,
    feature_groups,
    finetune_beats,
    load_beat_model,
    record_beats,
    split_beats,
    split_rows,
)

RECORDS = ["100", "101", "105", "106", "208"]
# AAMI EC57 grouping written out again, independent of the module's table
REFERENCE = {s: g for g, symbols in {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}.items() for s in symbols}


@pytest.fixture(scope="module")
def beat_store(shared_data, tmp_path_factory, copy_records):
    src = copy_records(shared_data / "mitdb", tmp_path_factory.mktemp("beat_src"), RECORDS)
    out = tmp_path_factory.mktemp("beat_store")
    prepare(PrepareConfig(sources=[src], out=out, progress=False))
    return Store(out)


@pytest.fixture(scope="module")
def rows(beat_store):
    return {str(record_id): row for row, record_id in enumerate(beat_store.manifest["record_id"])}


def test_ds1_ds2_assignment_from_record_ids(beat_store, rows):
    split = split_rows(beat_store)
    ds1 = [rows["101"], rows["106"], rows["208"]]
    assert split["test"] == [rows["100"], rows["105"]]
    assert len(split["val"]) == 1 and sorted(split["train"] + split["val"]) == sorted(ds1)
    assert split_rows(beat_store) == split  # deterministic
    assert split_rows(beat_store, val_fraction=0.0) == {"train": ds1, "val": [], "test": [rows["100"], rows["105"]]}


def test_rr_features_by_hand():
    fs = 300.0
    peaks = np.array([0, 300, 600, 750, 1200])  # RR 1, 1, 0.5 (premature beat 3), 1.5 s (compensatory pause)
    features = rr_features(peaks, fs)
    assert features.shape == (5, len(RR_FEATURES)) and features.dtype == np.float32
    pre = np.array([1, 1, 1, 0.5, 1.5])
    post = np.array([1, 1, 0.5, 1.5, 1.5])
    local = np.array([1, 1, 1, 3.5 / 4, 5 / 5])  # mean of the RR intervals up to each beat
    record = np.full(5, 1.0)  # median of 1, 1, 0.5, 1.5
    expected = np.log(np.stack([pre, post, local, record, pre / local, post / local, pre / record, post / record,
                                pre / post], axis=1))
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)
    assert rr_features(np.array([10]), fs).shape == (1, len(RR_FEATURES)) and not rr_features(np.array([10]), fs).any()


def test_rr_features_mark_premature_beats_of_a_real_record(beat_store, rows):
    """MIT-BIH 208: its annotated PVCs come early (short RR before, relative to the local rhythm)."""
    beats, _ = record_beats(beat_store, rows["208"], window_s=3)
    early = RR_FEATURES.index("log_pre_over_local")
    by_class = {c: np.median([b.rr[early] for b in beats if b.label == c]) for c in ("N", "V")}
    assert by_class["V"] < -0.1 < by_class["N"], by_class


def test_template_features_by_hand():
    """Seven beats, five alike: the median beat is theirs; one beat twice as large, one upside down."""
    fs, before, after = 100.0, 25, 45  # BEAT_SPAN_S at 100 Hz: 25 samples before the R peak, 45 after
    shape = np.random.default_rng(0).normal(size=(2, before + after + 1))  # [L, S]
    shape -= shape.mean(axis=1, keepdims=True)
    peaks = np.arange(100, 800, 100)
    scale = np.array([1, 1, 2, 1, -1, 1, 1.0])
    signal = np.zeros((2, 900))
    for peak, k in zip(peaks, scale):
        signal[:, peak - before : peak + after + 1] = k * shape
    features = template_features(signal, peaks, fs)
    assert features.shape == (7, len(TEMPLATE_FEATURES)) and features.dtype == np.float32
    named = {name: features[:, i] for i, name in enumerate(TEMPLATE_FEATURES)}
    np.testing.assert_allclose(named["qrs_correlation"], np.sign(scale), atol=1e-5)
    np.testing.assert_allclose(named["beat_correlation"], np.sign(scale), atol=1e-5)
    np.testing.assert_allclose(named["log_qrs_rms_ratio"], np.log(np.abs(scale)), atol=1e-5)
    # the range of -x is the range of x only for a symmetric QRS: computed here from the slices
    qrs = shape[:, before - 10 : before + 11]  # R peak +/- 100 ms
    upside_down = np.log(np.ptp(-qrs.ravel()) / np.ptp(qrs.ravel()))
    np.testing.assert_allclose(named["log_qrs_range_ratio"], [0, 0, np.log(2), 0, upside_down, 0, 0], atol=1e-5)
    # |2x - x| = |x| and |-x - x| = 2|x|; beats equal to the median beat differ by nothing
    np.testing.assert_allclose(named["log_difference_ratio"][[2, 4]], [0.0, np.log(2)], atol=1e-5)
    assert (named["log_difference_ratio"][[0, 1, 3, 5, 6]] < -8).all()
    assert not template_features(signal, peaks[:1], fs).any()  # one beat: no dominant beat known
    assert template_features(signal, np.array([3, 500, 897]), fs).shape == (3, len(TEMPLATE_FEATURES))  # edges


def test_template_features_mark_ventricular_beats_of_a_real_record(beat_store, rows):
    """MIT-BIH 208 and 106: their PVCs look unlike the record's median beat, their normal beats like it."""
    qrs = TEMPLATE_FEATURES.index("qrs_correlation")
    for record_id in ("208", "106"):
        beats, _ = record_beats(beat_store, rows[record_id], window_s=3)
        by_class = {c: np.median([b.template[qrs] for b in beats if b.label == c]) for c in ("N", "V")}
        assert by_class["V"] < 0.7 < 0.9 < by_class["N"], (record_id, by_class)


@pytest.mark.parametrize("record_id", RECORDS)
def test_beat_counts_equal_a_direct_wfdb_count(beat_store, rows, shared_data, record_id):
    reference = Counter(REFERENCE[s] for s in wfdb.rdann(str(shared_data / "mitdb" / record_id), "atr").symbol if s in REFERENCE)
    beats, excluded_q = record_beats(beat_store, rows[record_id], window_s=3)
    assert Counter(b.label for b in beats) == Counter({c: n for c, n in reference.items() if c != "Q"})
    assert excluded_q == reference["Q"]
    n_samples = int(beat_store.manifest.iloc[rows[record_id]]["n_samples"])
    for b in beats:
        assert b.stop - b.start == 900 and 0 <= b.start and b.stop <= n_samples and b.start <= b.peak < b.stop
    # away from the record's edges the R peak sits in the middle of the middle 1-s patch
    inner = [b for b in beats if 450 <= b.peak <= n_samples - 450]
    assert all(b.peak - b.start == 450 for b in inner)


def test_max_beats_per_record_is_a_seeded_subset(beat_store, rows):
    full, _ = record_beats(beat_store, rows["208"], window_s=3)
    some, _ = record_beats(beat_store, rows["208"], window_s=3, max_beats=40, seed=3)
    again, _ = record_beats(beat_store, rows["208"], window_s=3, max_beats=40, seed=3)
    other, _ = record_beats(beat_store, rows["208"], window_s=3, max_beats=40, seed=4)
    peaks = [b.peak for b in some]
    assert len(some) == 40 and peaks == sorted(peaks) and set(peaks) <= {b.peak for b in full}
    assert peaks == [b.peak for b in again] and peaks != [b.peak for b in other]


def test_class_weights_by_hand():
    weights = class_weights(["N"] * 6 + ["V"] * 2)
    np.testing.assert_allclose(weights, [8 / (4 * 6), 0.0, 8 / (4 * 2), 0.0])
    np.testing.assert_allclose(class_weights(["N"] * 6 + ["V"] * 2, power=0.5), [(8 / 24) ** 0.5, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("baseline", [None, "xresnet1d-tiny"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(beat_store, baseline):
    torch.manual_seed(0)
    beats, _ = split_beats(beat_store, "train", 3, max_beats=8, seed=0)
    config = BeatConfig(baseline=baseline, baseline_leads=("II", "V1"))
    model, form, contract, _ = _build(config)
    batch = collate_beats([BeatWindows(beat_store, beats, form=form, contract=contract)[i] for i in range(len(beats))])
    if form == "tokens":
        assert batch["patches"].shape == (len(beats), 2, 3, 300)
    else:
        assert batch["x"].shape == (len(beats), 2, 900)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("baseline", [None, "xresnet1d-tiny"])
def test_finetune_then_evaluate_reloads_strictly_and_reproduces_metrics(beat_store, tmp_path, baseline):
    config = BeatConfig(baseline=baseline, linear_probe=baseline is None, seeds=2, max_steps=3, batch_size=8,
                        max_beats_per_record=12)
    summary = finetune_beats(beat_store.root, tmp_path / "run", config)
    assert sorted(summary["train_records"] + summary["val_records"]) == ["101", "106", "208"]
    assert summary["test_records"] == ["100", "105"] and len(summary["val_records"]) == 1
    assert [fit["kept_epoch"] for fit in summary["fits"]] == [1, 1]  # one epoch: max_steps stops it
    assert summary["metrics"]["accuracy"]["n"] == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["max_beats_per_record"] == 12

    run = tmp_path / "run" / "seed-1"
    saved = json.loads((run / "test" / "metrics.json").read_text())
    assert saved["n"] == 24 and saved["records"] == ["100", "105"] and saved["classes"] == CLASSES
    assert sum(saved["per_class"][c]["support"] for c in CLASSES) == 24
    model, model_config = load_beat_model(run / "final")
    assert model_config["task"] == "beats" and model_config["train_beats"]["V"] > 0 and model_config["rr_features"]
    assert model_config["val_records"] == summary["val_records"] and model_config["selected_epoch"] == 1
    again = evaluate_beats(run / "final", beat_store.root, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == saved
    assert again["confusion"] == saved["confusion"]
    assert (tmp_path / "again" / "confusion.png").stat().st_size > 0

    # the two seeds as one model: its DS2 probabilities are the mean of the seeds' own predictions
    assert summary["ensemble"]["members"] == ["seed-0/final", "seed-1/final"]
    columns = [f"p_{c}" for c in CLASSES]
    seeds = [pd.read_csv(tmp_path / "run" / f"seed-{k}" / "test" / "predictions.csv") for k in range(2)]
    ensemble = pd.read_csv(tmp_path / "run" / "ensemble" / "test" / "predictions.csv")
    assert ensemble[["record_id", "peak"]].equals(seeds[0][["record_id", "peak"]])
    mean = (seeds[0][columns].to_numpy() + seeds[1][columns].to_numpy()) / 2  # [N, K]
    np.testing.assert_allclose(ensemble[columns].to_numpy(), mean, atol=1e-5)
    assert (ensemble["predicted"] == np.array(CLASSES)[mean.argmax(1)]).all()
    evaluate_beats(tmp_path / "run", beat_store.root, tmp_path / "ens")  # the run folder: its ensemble
    assert json.loads((tmp_path / "ens" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "run" / "summary.json").read_text())["ensemble"]["test"]


def test_peak_pooling_equals_a_dense_reference(beat_store):
    beats, _ = split_beats(beat_store, "test", 3, max_beats=2, seed=0)
    model, form, _, _ = _build(BeatConfig())
    batch = collate_beats([BeatWindows(beat_store, beats, form=form)[i] for i in range(len(beats))])
    batch["peak_patch"] = torch.tensor([0, 1, 2, 1])  # every patch position, not only the middle
    batch["pad_mask"][1, 1] = True  # item 1: its second lead is padding
    net = model.net.eval()
    with torch.no_grad():
        pooled = net.forward_features(batch)  # [B, D]
        tokens = net.backbone.forward_features(batch["patches"], batch["lead_ids"], batch["pad_mask"])  # [B, L * P, D]
    P = batch["patches"].shape[2]
    for b in range(len(beats)):
        p = int(batch["peak_patch"][b])
        real = [l for l in range(2) if not batch["pad_mask"][b, l, p]]
        expected = torch.stack([tokens[b, l * P + p] for l in real]).mean(0)
        torch.testing.assert_close(pooled[b], expected)


def test_cli_finetune_and_evaluate_beats(beat_store, tmp_path, capsys):
    import json

    from anyecg.cli import main

    out = tmp_path / "cli"
    assert main(["finetune", "--task", "beats", "--data", str(beat_store.root), "--out", str(out), "--baseline",
                 "xresnet1d-tiny", "--seeds", "1", "--steps", "3", "--batch-size", "16", "--max-beats-per-record", "40",
                 "--no-rr-features"]) == 0
    assert set(json.loads(capsys.readouterr().out.splitlines()[0])) == {"accuracy", "f1_macro"}
    kept = json.loads((out / "seed-0" / "final" / "config.json").read_text())
    assert not kept["rr_features"] and kept["features"] == ["template"]
    assert kept["finetune"]["ema_epochs"] == 0  # the beats default: no weight average (it lowered DS2 accuracy)
    assert main(["evaluate", "--model", str(out / "seed-0" / "final"), "--data", str(beat_store.root), "--out",
                 str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == json.loads(
        (out / "seed-0" / "test" / "metrics.json").read_text())


@pytest.mark.parametrize("rr,template", [(True, True), (True, False), (False, True), (False, False)])
def test_beat_features_reach_the_head_only_when_on(beat_store, rr, template):
    beats, _ = split_beats(beat_store, "train", 3, max_beats=4, seed=0)
    model, form, contract, _ = _build(BeatConfig(baseline="xresnet1d-tiny", rr_features=rr, template_features=template))
    windows = BeatWindows(beat_store, beats, form=form, contract=contract, features=feature_groups(rr, template))
    batch = collate_beats([windows[i] for i in range(len(beats))])
    expected = np.concatenate([[b.rr for b in beats]] * rr + [[b.template for b in beats]] * template, axis=1) \
        if rr or template else np.zeros((len(beats), 0))
    np.testing.assert_array_equal(batch["rr"].numpy(), expected)  # [B, F]: the groups in order, nothing else
    model.eval()
    with torch.no_grad():
        moved = model.logits({**batch, "rr": batch["rr"] + 1.0}) - model.logits(batch)  # [B, K]
    assert (moved.abs().max() > 1e-4) == (rr or template)


def test_a_model_saved_before_the_template_features_still_loads(beat_store, tmp_path):
    """Its config names no feature groups: it reads the RR features alone, as it was trained to."""
    config = BeatConfig(baseline="xresnet1d-tiny", template_features=False, seeds=1, max_steps=2, batch_size=8,
                        max_beats_per_record=10)
    finetune_beats(beat_store.root, tmp_path / "run", config)
    final = tmp_path / "run" / "seed-0" / "final"
    saved = json.loads((final / "config.json").read_text())
    assert saved["features"] == ["rr"]
    del saved["features"], saved["finetune"]["template_features"]
    (final / "config.json").write_text(json.dumps(saved))
    evaluate_beats(final, beat_store.root, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "run" / "seed-0" / "test" / "metrics.json").read_text())
