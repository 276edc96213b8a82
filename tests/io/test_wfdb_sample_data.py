"""wfdb-python's own sample-data (the field's reference corpus of WFDB layouts): every record that
`wfdb.rdrecord` reads reads equal here (a multi-frequency one at its ECG channels' own rate); every
record it cannot read (signal files left out of the copy, multi-segment layout headers) gives a
RecordError naming the file, never another exception."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import wfdb

from anyecg.io import RecordError, read_record

_TO_MV = {"mv": 1.0, "uv": 1e-3, "v": 1e3}  # other units (mmHg, NU, ...) stay as they are


def test_every_sample_record_equals_wfdb(shared_data):
    root = shared_data / "wfdb-sample-data"
    if not root.is_dir():
        pytest.skip(f"wfdb sample data not found at {root}")
    equal, refused, multi_frequency, problems = 0, 0, 0, []
    for header in sorted(root.rglob("*.hea")):
        name = header.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = wfdb.rdrecord(str(header.with_suffix("")))
        except Exception:  # wfdb cannot read it: ours must refuse it cleanly
            try:
                read_record(header)
                problems.append(f"{name}: read, but wfdb.rdrecord cannot read it")
            except RecordError as err:
                refused += 1
                assert header.name in str(err)
            continue
        record = read_record(header)
        scale = np.array([_TO_MV.get((unit or "mV").lower(), 1.0) for unit in reference.units])
        if max(reference.samps_per_frame or [1]) > 1:  # channels at several rates
            multi_frequency += 1
            problems += _compare_at_own_rate(name, record, header, scale)
            continue
        expected = (reference.p_signal * scale).T
        if record.signal.shape != expected.shape or record.fs != pytest.approx(reference.fs):
            problems.append(f"{name}: {record.signal.shape} at {record.fs} Hz, wfdb {expected.shape} at {reference.fs} Hz")
        elif not np.allclose(record.signal, expected, rtol=1e-5, atol=1e-6, equal_nan=True):
            problems.append(f"{name}: samples differ (max {np.nanmax(np.abs(record.signal - expected)):g})")
        else:
            equal += 1
    assert not problems, problems
    assert equal >= 60 and multi_frequency >= 5 and refused >= 10  # 64, 8 and 16 with the copy in shared/data


def _compare_at_own_rate(name: str, record, header, scale: np.ndarray) -> list[str]:
    """A record with several samples per frame is read at its ECG channels' own rate, not averaged to
    the frame rate: the channels at that rate equal wfdb's unsmoothed samples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = wfdb.rdrecord(str(header.with_suffix("")), smooth_frames=False)
    rates = [reference.fs * spf for spf in reference.samps_per_frame]
    rows = [i for i, rate in enumerate(rates) if rate == pytest.approx(record.fs)]
    if not rows:
        return [f"{name}: read at {record.fs} Hz, no channel has that rate ({rates})"]
    problems = []
    for i in rows:
        expected = reference.e_p_signal[i] * scale[i]
        got = record.signal[i, : len(expected)]
        if len(got) != len(expected) or not np.allclose(got, expected, rtol=1e-5, atol=1e-6, equal_nan=True):
            problems.append(f"{name}: channel {reference.sig_name[i]} differs from wfdb's unsmoothed samples")
    return problems
