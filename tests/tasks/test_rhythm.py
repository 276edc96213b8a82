"""Rhythm stretches of MIT-BIH and CPSC 2021 records against a dense per-sample reference built
from wfdb.rdann's aux strings, AF segments, and CPSC 2021 record classes."""

import numpy as np
import pytest
import wfdb

from anyecg.io.recording import Annotations
from anyecg.tasks.rhythm import long_record_label, long_segments, rhythm_segments


def dense_rhythm(samples, aux, n_samples, initial="unknown") -> np.ndarray:
    """Per-sample rhythm: each "(..." aux string overwrites everything from its sample onward."""
    mask = np.full(n_samples, initial, dtype=object)
    for sample, note in sorted(zip(samples, aux), key=lambda item: item[0]):
        note = note.rstrip("\x00")
        if note.startswith("("):
            mask[min(sample, n_samples):] = note[1:]
    return mask


def expand(segments, n_samples) -> np.ndarray:
    out = np.empty(n_samples, dtype=object)
    for start, stop, name in segments:
        out[start:stop] = name
    return out


def as_annotations(ann) -> Annotations:
    return Annotations(sample=ann.sample.astype(np.int64), symbol=list(ann.symbol), aux=list(ann.aux_note))


@pytest.mark.parametrize("record_id", ["201", "203"])
def test_mitdb_segments_tile_the_record_and_match_wfdb(shared_data, record_id):
    path = str(shared_data / "mitdb" / record_id)
    ann = wfdb.rdann(path, "atr")
    n_samples = wfdb.rdheader(path).sig_len
    segments = rhythm_segments(as_annotations(ann), n_samples, fs=360)
    # no gaps, no overlaps, whole record
    assert segments[0][0] == 0 and segments[-1][1] == n_samples
    assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(segments, segments[1:]))
    reference = dense_rhythm(ann.sample, ann.aux_note, n_samples)
    np.testing.assert_array_equal(expand(segments, n_samples), reference)
    af = sum(stop - start for start, stop, name in segments if name == "AFIB")
    assert af == int(np.sum(reference == "AFIB")) > 0


def test_stored_203_af_duration_follows_the_rate_change(task_store, task_rows, task_sources):
    row = task_rows["203"]
    n_samples = int(task_store.manifest.iloc[row]["n_samples"])
    segments = rhythm_segments(task_store.annotations("203"), n_samples, fs=300)
    assert segments[0][0] == 0 and segments[-1][1] == n_samples
    ann = wfdb.rdann(str(task_sources["203"]), "atr")
    reference = dense_rhythm(ann.sample, ann.aux_note, wfdb.rdheader(str(task_sources["203"])).sig_len)
    changes = sum(1 for note in ann.aux_note if note.startswith("("))
    for rhythm in ("AFIB", "AFL", "VT"):
        stored = sum(stop - start for start, stop, name in segments if name == rhythm)
        # each stretch end moves by at most half a sample when rounded to 300 Hz
        assert stored == pytest.approx(np.sum(reference == rhythm) * 300 / 360, abs=changes)


def test_cpsc2021_none_aux_is_ignored_and_af_episodes_are_kept(task_store, task_rows, task_sources):
    ann = wfdb.rdann(str(task_sources["data_92_12"]), "atr")
    n_samples = wfdb.rdheader(str(task_sources["data_92_12"])).sig_len
    segments = rhythm_segments(as_annotations(ann), n_samples, fs=200)
    np.testing.assert_array_equal(expand(segments, n_samples), dense_rhythm(ann.sample, ann.aux_note, n_samples))
    assert {name for _, _, name in segments} <= {"unknown", "AFIB", "N"} and any(s[2] == "AFIB" for s in segments)


def test_persistent_af_record_gives_only_af_segments(task_store, task_rows):
    row = task_rows["data_8_4"]
    n_samples = int(task_store.manifest.iloc[row]["n_samples"])
    segments = long_segments(task_store, row, segment_s=10.0)
    assert len(segments) == n_samples // 3000
    assert all(s.label == "AF" and s.stop - s.start == 3000 for s in segments)


def test_non_af_record_has_no_rhythm_annotations_and_no_af_segments(task_store, task_rows):
    row = task_rows["data_35_6"]
    segments = long_segments(task_store, row, segment_s=10.0, hop_s=5.0)
    n_samples = int(task_store.manifest.iloc[row]["n_samples"])
    assert [s.start for s in segments] == list(range(0, n_samples - 3000 + 1, 1500))
    assert {s.label for s in segments} == {"non-AF"}


@pytest.mark.parametrize("record_id", ["203", "data_92_12"])
def test_segment_labels_equal_a_dense_count(task_store, task_rows, record_id):
    row = task_rows[record_id]
    n_samples = int(task_store.manifest.iloc[row]["n_samples"])
    ann = task_store.annotations(record_id)
    af = np.isin(dense_rhythm(ann.sample, ann.aux, n_samples), ["AFIB", "AFL"])  # [n_samples]
    counts = {}
    for rule in ("majority", "any"):
        segments = long_segments(task_store, row, segment_s=2.0, rule=rule)
        assert len(segments) == n_samples // 600
        for segment in segments:
            fraction = af[segment.start : segment.stop].mean()
            expected = fraction > 0.5 if rule == "majority" else fraction > 0
            assert segment.label == ("AF" if expected else "non-AF"), (segment, fraction)
        counts[rule] = sum(s.label == "AF" for s in segments)
    # both records hold AF and other rhythms; "any" can only add AF segments
    assert 0 < counts["majority"] < counts["any"] < n_samples // 600


def test_record_without_annotations_is_refused(task_store, task_rows):
    with pytest.raises(ValueError, match="E07500"):
        long_segments(task_store, task_rows["E07500"])


def test_cpsc2021_record_class_agrees_with_the_rhythm_annotations(shared_data):
    headers = sorted((shared_data / "cpsc2021").glob("*.hea"))
    assert len(headers) == 18
    for header in headers:
        path = str(header.with_suffix(""))
        label = long_record_label(wfdb.rdheader(path).comments)
        has_af = "(AFIB" in wfdb.rdann(path, "atr").aux_note
        assert label == ("AF" if has_af else "non-AF"), header.name
    assert long_record_label(["426783006"]) is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_samples"):
        rhythm_segments(None, 0)
    assert rhythm_segments(None, 10) == [(0, 10, "unknown")]


@pytest.mark.parametrize("record", ["100", "201", "232"])
def test_window_anomaly_labels_against_wfdb_annotations(shared_data, record):
    """A 10 s window is normal exactly when wfdb's annotations show only "N" beats in "(N" rhythm."""
    import wfdb

    from anyecg.io import read_record
    from anyecg.tasks.rhythm import window_anomaly_labels

    recording = read_record(shared_data / "mitdb" / f"{record}.hea")
    n = recording.signal.shape[1]
    windows = window_anomaly_labels(recording.annotations, n, 3600)
    reference = wfdb.rdann(str(shared_data / "mitdb" / record), "atr")
    rhythm_at = []  # (sample, rhythm) changes, from wfdb's aux notes
    for sample, aux in zip(reference.sample, reference.aux_note):
        if aux.startswith("("):
            rhythm_at.append((int(sample), aux.strip("\x00")[1:]))
    beat_symbols = set("NLRBAaJSVrFejnE/fQ?")
    expected = []
    for start in range(0, n - 3600 + 1, 3600):
        stop = start + 3600
        before = [name for sample, name in rhythm_at if sample <= start]
        if not before:
            continue  # rhythm unknown before the first rhythm annotation
        during = {before[-1]} | {name for sample, name in rhythm_at if start < sample < stop}
        symbols = [sym for sample, sym in zip(reference.sample, reference.symbol)
                   if start <= sample < stop and sym in beat_symbols]
        normal = during == {"N"} and symbols and all(sym == "N" for sym in symbols)
        expected.append((start, "normal" if normal else "abnormal"))
    assert [(w.start, w.label) for w in windows] == expected
    labels = [w.label for w in windows]
    if record == "232":  # sinus bradycardia with many A beats, no "(N" rhythm at all
        assert set(labels) == {"abnormal"}
    else:
        assert {"normal", "abnormal"} <= set(labels)
