"""EDF written by pyEDFlib from a real record reads back within the 16-bit quantisation step."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyedflib import highlevel

from anyecg.io import RecordError, iter_chunks, read_header, read_record
from anyecg.io.edf import lead_name
from anyecg.signal.leads import STANDARD_12

# Units written per lead, and the factor from mV into them.
UNITS = ["uV", "uV", "uV", "mV", "mV", "mV", "V", "mV", "mV", "mV", "mV", "uV"]
FROM_MV = {"uV": 1000.0, "mV": 1.0, "V": 0.001}


def _write_edf(path, signal_mv, fs, labels, units, header=None):
    """Write [leads, samples] mV as EDF in the given units; returns the quantisation step per lead in mV."""
    signals, headers, steps = [], [], []
    for values, label, unit in zip(signal_mv, labels, units):
        scaled = values * FROM_MV[unit]
        low, high = float(np.floor(scaled.min()) - 1), float(np.ceil(scaled.max()) + 1)
        headers.append(highlevel.make_signal_header(label, dimension=unit, sample_frequency=fs, physical_min=low, physical_max=high))
        signals.append(scaled)
        steps.append((high - low) / 65535 / FROM_MV[unit])
    highlevel.write_edf(str(path), signals, headers, header)
    return np.array(steps)


@pytest.fixture
def real_twelve_lead(shared_data):
    return read_record(shared_data / "cinc2021" / "E07500.hea")


def test_edf_round_trip_from_a_real_record(tmp_path, real_twelve_lead):
    rec0 = real_twelve_lead
    labels = [f"ECG {name}" for name in rec0.raw_leads]
    header = highlevel.make_header(sex="Male", birthdate=dt.datetime(1942, 6, 15), startdate=dt.datetime(2020, 6, 14, 8, 30))
    header["annotations"] = [[1.5, 0, "artefact start"], [4.0, 0, "artefact end"]]
    steps = _write_edf(tmp_path / "e.edf", rec0.signal, rec0.fs, labels, UNITS, header)

    rec = read_record(tmp_path / "e.edf")
    assert rec.signal.shape == rec0.signal.shape and rec.fs == rec0.fs
    assert rec.leads == list(STANDARD_12) and rec.raw_leads == list(rec0.raw_leads)
    error = np.abs(rec.signal - rec0.signal).max(axis=1)  # [leads] mV
    assert np.all(error <= steps + 1e-6), (error, steps)
    assert rec.sex == "M" and rec.age == pytest.approx(78.0, abs=0.01)
    assert rec.meta["units"] == UNITS
    np.testing.assert_array_equal(rec.annotations.sample, [750, 2000])  # onset s x 500 Hz
    assert rec.annotations.aux == ["artefact start", "artefact end"]

    info = read_header(tmp_path / "e.edf")
    assert (info.n_samples, info.fs, info.leads) == (rec.n_samples, rec.fs, rec.leads)
    pieces = [block for _, block in iter_chunks(tmp_path / "e.edf", 1234)]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), rec.signal)


def test_edf_with_different_rates_is_read_at_the_ecg_rate(tmp_path, real_twelve_lead):
    signal = real_twelve_lead.signal[:2]
    headers = [
        highlevel.make_signal_header("ECG I", dimension="mV", sample_frequency=500, physical_min=-10, physical_max=10),
        highlevel.make_signal_header("Resp", dimension="mV", sample_frequency=250, physical_min=-10, physical_max=10),
    ]
    highlevel.write_edf(str(tmp_path / "mixed.edf"), [np.ascontiguousarray(signal[0]), np.ascontiguousarray(signal[1, ::2])], headers)
    rec = read_record(tmp_path / "mixed.edf")
    assert rec.fs == 500 and rec.n_samples == signal.shape[1] and rec.meta["channel_fs"] == [500, 250]
    np.testing.assert_allclose(rec.signal[0], signal[0], atol=1e-3)  # EDF's 16-bit digitisation of +-10 mV
    pieces = [block for _, block in iter_chunks(tmp_path / "mixed.edf", 777)]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), rec.signal)


def test_edf_channel_labels():
    assert [lead_name(label) for label in ["ECG I", "EKG V2", "ECG II-REF", "ECG", "aVR", "ECG_V6"]] == [
        "I", "V2", "II", "ECG", "aVR", "V6"
    ]


def test_corrupt_edf(tmp_path):
    (tmp_path / "bad.edf").write_bytes(b"0       " + b"x" * 400)
    with pytest.raises(RecordError, match=r"bad\.edf.*not a readable EDF"):
        read_record(tmp_path / "bad.edf")
