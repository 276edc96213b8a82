"""MIT-BIH AAMI beats against wfdb's own annotation reader, and the de Chazal inter-patient split."""

from collections import Counter

import numpy as np
import pytest
import wfdb

from anyecg.tasks.beats import AAMI, DS1, DS2, PACED, aami_beats, beat_samples, beat_windows, inter_patient_split

# The AAMI EC57 grouping written out again, so the reference does not share the module's table.
REFERENCE_GROUPS = {
    "N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ",
}
REFERENCE = {symbol: group for group, symbols in REFERENCE_GROUPS.items() for symbol in symbols}


def test_aami_table_matches_the_standard_grouping():
    assert {symbol: group for group, symbols in AAMI.items() for symbol in symbols} == REFERENCE


def test_split_is_the_published_22_plus_22_without_paced_records(shared_data):
    assert len(DS1) == len(set(DS1)) == 22 and len(DS2) == len(set(DS2)) == 22
    assert not set(DS1) & set(DS2)
    assert not set(PACED) & (set(DS1) | set(DS2))
    # together they are exactly the 48 records of the database
    on_disk = {path.stem for path in (shared_data / "mitdb").glob("*.hea")}
    assert len(on_disk) == 48
    assert set(DS1) | set(DS2) | set(PACED) == on_disk
    split = inter_patient_split(sorted(on_disk) + ["E07500"])
    assert split == {"train": DS1, "test": DS2}


def test_split_keeps_only_present_records():
    assert inter_patient_split(["208", "104", "100", "data_8_4"]) == {"train": ["208"], "test": ["100"]}


@pytest.mark.parametrize("record_id", ["208", "203"])
def test_beat_counts_equal_a_direct_count_of_wfdb_symbols(task_store, task_rows, task_sources, record_id):
    reference = wfdb.rdann(str(task_sources[record_id]), "atr")
    expected = Counter(REFERENCE[s] for s in reference.symbol if s in REFERENCE)
    beats = beat_samples(task_store, task_rows[record_id])
    assert Counter(label for _, label in beats) == expected
    # positions follow the signal from 360 Hz to the store's 300 Hz
    kept = np.array([s in REFERENCE for s in reference.symbol])
    np.testing.assert_array_equal([sample for sample, _ in beats], np.round(reference.sample[kept] * 300 / 360))


def test_record_208_has_its_documented_ventricular_beats(task_store, task_rows):
    # MIT-BIH directory, record 208: 1586 normal, 992 PVC, 373 fusion, 2 APC, 2 unclassifiable
    counts = Counter(label for _, label in beat_samples(task_store, task_rows["208"]))
    assert counts == {"N": 1586, "V": 992, "F": 373, "S": 2, "Q": 2}


def test_records_without_annotations_have_no_beats(task_store, task_rows):
    assert beat_samples(task_store, task_rows["E07500"]) == []
    assert aami_beats(None) == []


def test_beat_windows_have_fixed_length_and_contain_their_beat(task_store, task_rows):
    row = task_rows["203"]
    n_samples = int(task_store.manifest.iloc[row]["n_samples"])
    beats = beat_samples(task_store, row)
    windows = beat_windows(task_store, row, window_s=1.0)
    assert len(windows) == len(beats)
    for (center, label), window in zip(beats, windows):
        assert window.record == row and window.label == label
        assert window.stop - window.start == 300
        assert 0 <= window.start <= center < window.stop <= n_samples
        if 150 <= center <= n_samples - 150:
            assert window.start == center - 150  # centred away from the edges
    # the first beat of 203 lies within half a second of the start: its window is shifted, not cut
    assert beats[0][0] < 150 and windows[0].start == 0


def test_beat_window_offset_and_bad_arguments(task_store, task_rows):
    row = task_rows["208"]
    n_samples = int(task_store.manifest.iloc[row]["n_samples"])
    beats = beat_samples(task_store, row)
    windows = beat_windows(task_store, row, window_s=2.0, center_s=0.5)
    interior = [(c, w) for (c, _), w in zip(beats, windows) if 150 <= c <= n_samples - 450]
    assert len(interior) > len(beats) - 5
    assert all(w.start == c - 150 and w.stop == c + 450 for c, w in interior)
    with pytest.raises(ValueError, match="center_s"):
        beat_windows(task_store, row, window_s=1.0, center_s=1.0)
