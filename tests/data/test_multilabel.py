"""Label vocabulary, multi-hot encoding and contract windows: by hand, and on real CinC 2021 / CPSC 2021 records."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb
from scipy.signal import resample_poly

from anyecg.data.multilabel import (
    MultiLabelTarget,
    MultiLabelWindows,
    build_vocabulary,
    collate_multilabel,
    encode_manifest,
)
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.models.contract import SignalContract
from anyecg.signal.leads import STANDARD_12

CINC = ["E07500", "E07501", "E07502", "HR06000", "HR06001", "JS20000", "JS20004"]
LONG = "data_8_4"  # CPSC 2021: 2 leads (I, II), 8235 samples at 200 Hz


def _manifest() -> pd.DataFrame:
    return pd.DataFrame({
        "record_id": ["a", "b", "c", "d", "e"],
        "labels": ["X;Y", "Y;Y", "Z", "", "Y;W"],
        "split": ["train", "train", "val", "train", "train"],
    })


def test_vocabulary_counts_each_label_once_per_record_and_reports_rare_classes():
    target, below = build_vocabulary(_manifest(), min_count=2)
    # Y appears in a, b (twice there), e -> 3 records; X, Z, W once each.
    assert target.classes == ("Y",) and target.counts == (3,) and target.n_records == 5
    assert below == {"W": 1, "X": 1, "Z": 1}

    everything, nothing_dropped = build_vocabulary(_manifest())
    assert everything.classes == ("W", "X", "Y", "Z") and everything.counts == (1, 1, 3, 1)
    assert nothing_dropped == {}


def test_vocabulary_from_chosen_splits_only():
    target, below = build_vocabulary(_manifest(), splits=["train"])
    assert target.classes == ("W", "X", "Y") and target.n_records == 4 and below == {}


def test_encode_decode_and_pos_weight_by_hand():
    target = MultiLabelTarget(classes=("W", "X", "Y"), counts=(1, 2, 4), n_records=5)
    np.testing.assert_array_equal(target.encode(["Y", "unseen", "W", "Y"]), [1, 0, 1])
    assert target.encode([]).dtype == np.float32 and not target.encode([]).any()
    assert target.decode(np.array([0.9, 0.2, 0.5])) == ["W", "Y"]
    # negatives / positives: 4/1, 3/2, 1/4; capped at 2
    np.testing.assert_allclose(target.pos_weight(), [4.0, 1.5, 0.25])
    np.testing.assert_allclose(target.pos_weight(max_weight=2.0), [2.0, 1.5, 0.25])
    assert MultiLabelTarget.from_dict(target.to_dict()) == target
    assert target.index("X") == 1
    with pytest.raises(KeyError, match="'Q'"):
        target.index("Q")

    rows = encode_manifest(_manifest(), target)
    np.testing.assert_array_equal(rows, [[0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 1]])


def test_bad_inputs_name_the_values():
    with pytest.raises(ValueError, match="distinct"):
        MultiLabelTarget(classes=("A", "A"), counts=(1, 1), n_records=2)
    with pytest.raises(ValueError, match="n_records=1"):
        MultiLabelTarget(classes=("A",), counts=(3,), n_records=1)
    with pytest.raises(ValueError, match="no 'labels' column"):
        build_vocabulary(pd.DataFrame({"record_id": ["a"]}))
    with pytest.raises(ValueError, match="min_count"):
        build_vocabulary(_manifest(), min_count=0)
    with pytest.raises(ValueError, match="3 classes"):
        MultiLabelTarget(classes=("A", "B", "C"), counts=(1, 1, 1), n_records=2).decode([0.1, 0.2])


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory, copy_records) -> Store:
    corpus = tmp_path_factory.mktemp("corpus")
    for folder, records in (("cinc2021", CINC), ("cpsc2021", [LONG])):
        copy_records(shared_data / folder, corpus / folder, records)
    out = tmp_path_factory.mktemp("store")
    prepare(PrepareConfig(sources=[corpus], out=out, progress=False))
    return Store(out)


def test_vocabulary_of_a_real_store_matches_the_headers(store, shared_data):
    # Independent count: the `# Dx:` comment lines as wfdb reads them.
    expected = Counter()
    for record in CINC:
        comments = wfdb.rdheader(str(shared_data / "cinc2021" / record)).comments
        codes = next(line.split(":", 1)[1] for line in comments if line.startswith("Dx"))
        expected.update(set(code.strip() for code in codes.split(",")))
    cinc_rows = store.manifest[store.manifest["record_id"].isin(CINC)]
    target, below = build_vocabulary(cinc_rows, min_count=2)
    assert dict(zip(target.classes, target.counts)) == {k: v for k, v in expected.items() if v >= 2}
    assert below == {k: v for k, v in expected.items() if v < 2}
    assert list(target.classes) == sorted(target.classes)


def test_windows_are_the_stored_signal_at_500_hz_in_lead_slots(store):
    target, _ = build_vocabulary(store.manifest)
    contract = SignalContract(fs=500, window_s=10, leads=STANDARD_12)
    dataset = MultiLabelWindows(store, target, contract, random_crop=False)
    manifest = store.manifest.set_index("record_id")
    rows = {record: i for i, record in enumerate(store.manifest["record_id"])}

    item = dataset[[i for i in range(len(dataset)) if dataset.window(i).record == rows["E07501"]][0]]
    reference = resample_poly(store.signal(rows["E07501"]).astype(np.float64), 5, 3, axis=-1)  # 300 -> 500 Hz
    assert item["x"].shape == (12, 5000) and item["lead_mask"].all()
    np.testing.assert_allclose(item["x"].numpy(), reference, atol=1e-4)
    np.testing.assert_array_equal(item["targets"].numpy(), target.encode(manifest.loc["E07501", "labels"].split(";")))

    # JS20004 lacks V2, V4 and V6: those slots are zero and masked.
    item = dataset[[i for i in range(len(dataset)) if dataset.window(i).record == rows["JS20004"]][0]]
    absent = [STANDARD_12.index(lead) for lead in ("V2", "V4", "V6")]
    assert item["lead_mask"].numpy().tolist() == [i not in absent for i in range(12)]
    assert not item["x"][absent].any() and item["x"][STANDARD_12.index("V5")].abs().sum() > 0


def test_long_records_are_tiled_and_training_crops_are_reproducible(store):
    target, _ = build_vocabulary(store.manifest)
    contract = SignalContract(fs=500, window_s=10, leads=STANDARD_12)
    record = int(np.flatnonzero(store.manifest["record_id"] == LONG)[0])
    n_samples = int(store.manifest.iloc[record]["n_samples"])  # 41.2 s at 300 Hz
    assert abs(n_samples - 8235 * 300 / 200) <= 1

    tiled = MultiLabelWindows(store, target, contract, random_crop=False)
    starts = [tiled.window(i).start for i in range(len(tiled)) if tiled.window(i).record == record]
    assert starts == [0, 3000, 6000, 9000]  # the ~350-sample tail is under half a window
    assert len(tiled) == len(CINC) + 4

    training = MultiLabelWindows(store, target, contract, seed=3)
    position = int(np.flatnonzero(training.rows == record)[0])
    first = [training.window(position).start for _ in range(2)]
    training.set_epoch(1)
    assert first[0] == first[1] and 0 <= first[0] <= n_samples - 3000
    item = training[position]
    expected = resample_poly(store.signal(record, start=item["start"], stop=item["start"] + 3000), 5, 3, axis=-1)
    np.testing.assert_allclose(item["x"][:2].numpy(), expected, atol=1e-4)  # slots I and II
    assert item["lead_mask"].numpy().tolist() == [True, True] + [False] * 10


def test_records_without_a_model_lead_are_excluded_and_listed(store):
    target, _ = build_vocabulary(store.manifest)
    dataset = MultiLabelWindows(store, target, SignalContract(fs=500, window_s=10, leads=("V1",)))
    assert list(dataset.excluded) == [LONG] and "['I', 'II']" in dataset.excluded[LONG]
    assert len(dataset) == len(CINC)

    training = MultiLabelWindows(store, target, SignalContract(fs=500, window_s=10), split="train")
    assert training.rows.tolist() == np.flatnonzero(store.manifest["split"] == "train").tolist()


def test_collate_stacks_a_batch(store):
    target, _ = build_vocabulary(store.manifest)
    dataset = MultiLabelWindows(store, target, SignalContract(fs=500, window_s=10), split=None)
    batch = collate_multilabel([dataset[0], dataset[1], dataset[2]])
    assert batch["x"].shape == (3, 12, 5000) and batch["x"].dtype == torch.float32
    assert batch["lead_mask"].shape == (3, 12) and batch["lead_mask"].dtype == torch.bool
    assert batch["targets"].shape == (3, target.num_classes)
    assert batch["record"].tolist() == [int(r) for r in dataset.rows[:3]]
