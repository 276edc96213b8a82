"""The labelling and patient split of benchmarks/finetune_quality.py, against hand-checked cases."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/finetune_quality.py")


def test_rhythm_classes(bench):
    assert [bench.rhythm_class(a) for a in ["(N\x00", "(AFIB", "(AFL\x00", "(B\x00", "(VT", "(P\x00"]] == [
        "N", "AF", "AF", "O", "O", "O"]
    assert bench.ptbxl_class("NORM;SR") == "N" and bench.ptbxl_class("AFIB;STACH") == "AF"
    assert bench.ptbxl_class("SR;SARRH") == "O" and bench.ptbxl_class("CLBBB;IRBBB") == ""
    assert bench.patient_of("mitdb", "202") == bench.patient_of("mitdb", "201") == "mitdb-201"
    assert bench.patient_of("cpsc2021", "data_92_12") == "cpsc2021-92"


def test_every_split_gets_patients_of_every_class(bench):
    rows = [{"patient": f"af{k}", "label": "AF"} for k in range(5) for _ in range(k + 1)]
    rows += [{"patient": f"n{k}", "label": "N"} for k in range(10)]
    rows += [{"patient": "af0", "label": "N"}]  # a patient with two classes stays in one split
    table = pd.DataFrame(rows)
    split = bench.split_patients(table)
    assert set(split) == set(table["patient"])
    # AF patients by excerpt count: af4, af3, af2, af1, af0 dealt train, test, val, train, train
    assert [split[f"af{k}"] for k in (4, 3, 2, 1, 0)] == ["train", "test", "val", "train", "train"]
    table["split"] = table["patient"].map(split)
    assert (pd.crosstab(table["split"], table["label"]) > 0).all().all()
