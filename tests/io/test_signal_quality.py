"""check_signal: unusable records raise, unusable leads are dropped and reported."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anyecg.io import RecordError, Recording, check_signal, read_record


def _record(signal, fs=500.0, leads=None):
    signal = np.asarray(signal, dtype=np.float32)
    leads = leads or [f"V{i + 1}" for i in range(signal.shape[0])]
    return Recording(signal=signal, fs=fs, leads=leads, record_id="r1", source="/data/r1.hea", raw_leads=list(leads))


@pytest.fixture
def ecg(shared_data):
    return read_record(shared_data / "cinc2021" / "E07500")


def test_clean_real_records_pass_unchanged(shared_data, ecg):
    assert check_signal(ecg) is ecg
    mitdb = read_record(shared_data / "mitdb" / "100")
    assert check_signal(mitdb) is mitdb


def test_real_flat_leads_are_dropped_and_reported(shared_data):
    rec = read_record(shared_data / "cinc2021" / "JS20004")  # V2, V4, V6 are all zeros in this record
    assert np.ptp(rec.signal[[7, 9, 11]], axis=1).max() == 0
    checked = check_signal(rec)
    assert checked.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V3", "V5"]
    assert [d["lead"] for d in checked.meta["dropped_leads"]] == ["V2", "V4", "V6"]
    assert all(d["reason"].startswith("flat") for d in checked.meta["dropped_leads"])
    np.testing.assert_array_equal(checked.signal, rec.signal[[0, 1, 2, 3, 4, 5, 6, 8, 10]])
    assert checked.raw_leads == [rec.raw_leads[i] for i in (0, 1, 2, 3, 4, 5, 6, 8, 10)]
    assert "dropped_leads" not in rec.meta  # the input is not modified


def test_saturated_lead_is_dropped(ecg):
    signal = ecg.signal.copy()
    signal[3] = np.clip(signal[3], -0.02, 0.02)  # clipping amplifier: most samples at the rails
    at_rails = np.mean((signal[3] == signal[3].min()) | (signal[3] == signal[3].max()))
    assert at_rails > 0.5
    checked = check_signal(dataclasses.replace(ecg, signal=signal))
    assert [(d["lead"], d["index"]) for d in checked.meta["dropped_leads"]] == [("aVR", 3)]
    assert checked.meta["dropped_leads"][0]["reason"].startswith("saturated")


def test_tiny_but_real_signal_is_kept():
    t = np.arange(5000) / 500
    signal = np.stack([np.sin(2 * np.pi * t) * 0.002, np.full(5000, 0.3) + 1e-4 * np.sin(t)])  # 4 uV and 0.2 uV p-p
    checked = check_signal(_record(signal))
    assert checked.leads == ["V1"] and checked.meta["dropped_leads"][0]["lead"] == "V2"


def test_no_lead_left_raises():
    with pytest.raises(RecordError, match=r"r1\.hea: no usable lead left.*V1.*flat.*V2.*flat"):
        check_signal(_record(np.zeros((2, 1000))))


def test_nan_and_inf_are_counted_per_lead(ecg):
    signal = ecg.signal.copy()
    signal[1, 10:13] = np.nan
    signal[7, 0] = np.inf
    with pytest.raises(RecordError, match=r"E07500\.hea: NaN/inf samples in 2 lead\(s\): lead II \(index 1\): 3 of 5000, lead V2 \(index 7\): 1 of 5000"):
        check_signal(dataclasses.replace(ecg, signal=signal))


@pytest.mark.parametrize("fs, message", [(0.0, "not positive"), (float("nan"), "not positive"), (-360.0, "not positive"),
                                         (1e6, "outside the plausible range"), (5.0, "outside the plausible range")])
def test_bad_sampling_rates(fs, message):
    with pytest.raises(RecordError, match=message):
        check_signal(_record(np.ones((1, 100)), fs=fs))


def test_empty_record():
    with pytest.raises(RecordError, match=r"r1\.hea: record has no samples"):
        check_signal(_record(np.zeros((2, 0))))
