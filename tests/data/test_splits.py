from collections import Counter

import pytest

from anyecg.data.splits import patient_split


def test_no_patient_in_two_splits_and_shares_follow_fractions():
    # 100 patients with 1-5 records each; labels vary per record
    patients, labels = [], []
    for p in range(100):
        for r in range(1 + p % 5):
            patients.append(f"p{p}")
            labels.append(["AF"] if p % 4 == 0 else (["N", "PVC"] if r % 2 else ["N"]))
    splits = patient_split(patients, labels, seed=3)
    per_patient = {}
    for patient, split in zip(patients, splits):
        per_patient.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in per_patient.values())
    counts = Counter(splits)
    n = len(splits)
    assert abs(counts["train"] / n - 0.8) < 0.03
    assert abs(counts["val"] / n - 0.1) < 0.03
    assert abs(counts["test"] / n - 0.1) < 0.03
    # the rare class is present in every split
    af = Counter(s for s, l in zip(splits, labels) if "AF" in l)
    assert set(af) == {"train", "val", "test"}


def test_seeded_and_deterministic():
    patients = [f"p{i // 2}" for i in range(60)]
    labels = [[str(i % 3)] for i in range(60)]
    assert patient_split(patients, labels, seed=7) == patient_split(patients, labels, seed=7)
    assert patient_split(patients, labels, seed=7) != patient_split(patients, labels, seed=8)


def test_tiny_dataset_still_has_val_and_test():
    splits = patient_split([f"p{i}" for i in range(10)], [[f"c{i}"] for i in range(10)])
    assert Counter(splits) == {"train": 8, "val": 1, "test": 1}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2 patient ids but 1"):
        patient_split(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(["a"], [["x"]], fractions=(0.5, 0.2, 0.2))
