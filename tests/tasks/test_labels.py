"""Record labels of real CinC 2021 / CPSC 2021 headers (codes checked by hand) and per-split counts."""

from collections import Counter

import pytest

from anyecg.io import read_record
from anyecg.tasks.labels import LabelSet, anomaly_label, arrhythmia_label, build_record_labels

# record -> (codes in its header, anomaly class, rhythm class), read off the .hea files by hand
HAND_CHECKED = {
    "E07500": ({"67741000119109", "426177001"}, "abnormal", "SB"),  # left atrial enlargement, sinus bradycardia
    "E07504": ({"111975006"}, "abnormal", None),  # prolonged QT: no rhythm statement
    "E07506": ({"426783006"}, "normal", "SR"),  # sinus rhythm alone
    "JS20003": ({"284470004", "427084000", "55827005", "164934002", "427172004"}, "abnormal", "PVC"),  # PAC + PVC
    "HR06003": ({"426783006", "427084000"}, "abnormal", "STach"),
    "JS20008": ({"284470004", "427393009"}, "abnormal", "PAC"),
}


@pytest.mark.parametrize("record_id", sorted(HAND_CHECKED))
def test_cinc2021_headers(shared_data, record_id):
    codes, anomaly, rhythm = HAND_CHECKED[record_id]
    labels = read_record(shared_data / "cinc2021" / f"{record_id}.hea").labels
    assert set(labels) == codes
    assert anomaly_label(labels) == anomaly
    assert arrhythmia_label(labels) == rhythm


def test_anomaly_rule_edges():
    assert anomaly_label([]) is None
    assert anomaly_label(["non atrial fibrillation"]) is None  # speaks of the atrial rhythm only
    assert anomaly_label(["426783006", "427393009"]) == "normal"  # sinus arrhythmia is benign
    assert anomaly_label(["427393009"]) == "normal"
    assert anomaly_label(["426783006", "427393009"], benign=frozenset()) == "abnormal"
    assert anomaly_label(["normal_ecg"]) == anomaly_label(["N"]) == "normal"
    assert anomaly_label(["normal", "RBBB"]) == "abnormal"


def test_arrhythmia_priority_and_sources():
    assert arrhythmia_label(["426783006", "164889003"]) == "AF"  # AF over the sinus rhythm listed beside it
    assert arrhythmia_label(["164890007"]) == "AF"  # flutter counts as AF
    assert arrhythmia_label(["paroxysmal atrial fibrillation"]) == "AF"
    assert arrhythmia_label(["non atrial fibrillation"]) == "non-AF"
    assert arrhythmia_label(["426783006", "10370003"]) == "Paced"
    assert arrhythmia_label(["SB", "1dAVb"]) == "SB"  # CODE-15 names
    assert arrhythmia_label(["59118001"]) is None


def test_build_record_labels_counts_per_split(task_store):
    manifest = task_store.manifest
    result = build_record_labels(manifest, arrhythmia_label, min_count=2)
    assert isinstance(result, LabelSet)
    # direct count: the same function applied row by row, grouped with Counter
    direct = Counter()
    unlabelled = []
    for row, item in manifest.reset_index(drop=True).iterrows():
        label = arrhythmia_label(item["labels"].split(";") if item["labels"] else [])
        if label is None:
            unlabelled.append(row)
        else:
            direct[(item["split"], label)] += 1
    assert {(split, c): n for split, per in result.counts.items() for c, n in per.items() if n} == dict(direct)
    assert result.unlabelled == unlabelled
    # MIT-BIH 203/208 carry no record labels and E07504 no rhythm statement: excluded, not guessed
    ids = manifest["record_id"].tolist()
    assert sorted(ids[row] for row in result.unlabelled) == ["203", "208", "E07504"]
    assert result.classes == ["AF", "PVC", "SB", "SR", "non-AF"]
    for name in result.classes:
        per_split = {split: per[name] for split, per in result.counts.items()}
        assert (name in result.rare) == any(n < 2 for n in per_split.values())
        if name in result.rare:
            assert result.rare[name] == per_split
    assert result.class_index()["AF"] == 0
    samples = result.samples(manifest)
    assert [s.record for s in samples] == sorted(result.labels)
    assert all(s.start == 0 and s.stop == manifest.iloc[s.record]["n_samples"] for s in samples)
    by_split = result.samples(manifest, split="train")
    assert len(by_split) == sum(result.counts.get("train", {}).values())


def test_anomaly_labels_of_the_store(task_store):
    result = build_record_labels(task_store.manifest, anomaly_label, min_count=1)
    labelled = {task_store.manifest.iloc[row]["record_id"]: label for row, label in result.labels.items()}
    assert labelled == {"E07500": "abnormal", "E07504": "abnormal", "E07506": "normal", "JS20003": "abnormal"}
    # min_count=1 flags a class missing from a split: one normal record cannot be in every split
    assert "normal" in result.rare and 0 in result.rare["normal"].values()
    assert set(result.rare) == {c for c in result.classes if any(per[c] == 0 for per in result.counts.values())}
