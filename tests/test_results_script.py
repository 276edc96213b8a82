"""scripts/results.py, the docs/results.md generator: its data, splits, run plan and tables."""

import math

import numpy as np
import pandas as pd
import pytest

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.io import read_record
from anyecg.tasks.beats import DS1, DS2
from anyecg.tasks.rhythm import window_anomaly_labels


@pytest.fixture(scope="module")
def results(load_script):
    return load_script("scripts/results.py")


def test_splits_are_patient_level_and_follow_ds1_ds2(results):
    assert all(results.mitdb_split(r) == "train" for r in DS1)
    assert all(results.mitdb_split(r) == "test" for r in DS2 if r != "202")
    # 202 is 201's patient: it trains with 201 so no patient sits in both splits
    assert results.mitdb_split("202") == results.mitdb_split("201") == "train"
    assert results.mitdb_patient("202") == results.mitdb_patient("201")
    assert results.mitdb_split("102") == "train"  # paced records train


def test_anomaly_windows_prepare_with_their_labels(results, shared_data, tmp_path):
    csv = results.anomaly_windows(shared_data, tmp_path / "windows", ["100", "208"], every=20)
    table = pd.read_csv(csv, dtype=str)
    for record in ("100", "208"):
        recording = read_record(shared_data / "mitdb" / f"{record}.hea")
        expected = window_anomaly_labels(recording.annotations, recording.signal.shape[1], 3600)[::20]
        rows = table[table["record"].str.startswith(f"mitdb_{record}_")]
        assert rows["label"].tolist() == [w.label for w in expected]
        assert set(rows["split"]) == {results.mitdb_split(record)}
        first = np.load(tmp_path / "windows" / f"{rows['record'].iloc[0]}.npy")
        np.testing.assert_array_equal(first, recording.signal[:, expected[0].start : expected[0].stop])
    store = Store(prepare(PrepareConfig(sources=[tmp_path / "windows"], out=tmp_path / "store", labels_csv=csv,
                                        progress=False)).store)
    assert len(store.manifest) == len(table)
    assert dict(zip(store.manifest["record_id"], store.manifest["split"])) == dict(zip(table["record"], table["split"]))
    assert set(store.manifest["n_leads"]) == {2}


def test_run_plan_shares_identical_runs_and_covers_every_model(results, tmp_path):
    families = {family: tmp_path / family for family in results.FAMILY_PRESETS}
    runs = results.plan_runs(families)
    anomaly = {run.key for run in runs if run.table == "anomaly"}
    full_labels = {run.key for run in runs if run.table == "efficiency" and run.setting == "1"}
    assert len(full_labels - anomaly) == 1  # only the random-init linear probe is new at 100% of the labels
    for table in ("beats", "anomaly"):
        rows = [run.row for run in runs if run.table == table]
        assert len(rows) == len(set(rows)) == 3 + len(results.BASELINES) + len(results.FAMILY_PRESETS)
    assert len({run.key for run in runs}) < len(runs)


def test_tables_show_mean_and_std_and_say_what_failed(results):
    summary = {"metrics": {"accuracy": {"mean": 0.91234, "std": 0.01, "n": 5},
                           "auroc_normal_positive": {"mean": 0.8, "std": float("nan"), "n": 1}}}
    assert results.fmt(results._metric(summary, "accuracy")) == "0.912 ± 0.010"
    assert results.fmt(results._metric(summary, "auroc_normal_positive")) == "0.800"
    assert results.fmt(results._metric(summary, "auprc")) == "n/a"
    run = results.Run("anomaly", "model A", "anomaly", "anomaly", {})
    failed = results.Run("anomaly", "model B", "anomaly", "anomaly", {"baseline": "rnn1d"})
    table = results.anomaly_table([run, failed], {run.key: summary, failed.key: {"error": "ValueError: no test records"}})
    lines = table.splitlines()
    assert lines[2].startswith("| model A | 0.912 ± 0.010 | 0.800 |")
    assert "failed: ValueError: no test records" in lines[3]
    assert math.isnan(results._metric({"metrics": {"x": {"mean": None, "std": None, "n": 0}}}, "x")[0])
