"""wfdb-python's own sample-data (the field's reference corpus of WFDB layouts): every record that
`wfdb.rdrecord` reads reads equal here; every record it cannot read (signal files left out of the copy,
multi-segment layout headers) gives a RecordError naming the file, never another exception."""

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
    equal, refused, problems = 0, 0, []
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
        expected = (reference.p_signal * scale).T
        if record.signal.shape != expected.shape or record.fs != pytest.approx(reference.fs):
            problems.append(f"{name}: {record.signal.shape} at {record.fs} Hz, wfdb {expected.shape} at {reference.fs} Hz")
        elif not np.allclose(record.signal, expected, rtol=1e-5, atol=1e-6, equal_nan=True):
            problems.append(f"{name}: samples differ (max {np.nanmax(np.abs(record.signal - expected)):g})")
        else:
            equal += 1
    assert not problems, problems
    assert equal >= 70 and refused >= 10  # 72 and 16 with the copy in shared/data
