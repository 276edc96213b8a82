"""`local_peaks` and `xqrs_peaks` against wfdb's own functions, on real MIT-BIH recordings."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb
import wfdb.processing.qrs as wfdb_qrs
from wfdb import processing

from anyecg.signal.peaks import local_peaks, xqrs_peaks

# normal sinus (100), paced (104), AF with ventricular ectopy (201, 203), bigeminy (119)
RECORDS = ["100", "104", "119", "201", "203"]


@pytest.fixture(scope="module")
def mitdb_leads(shared_data) -> dict[str, np.ndarray]:
    """First lead (mV) of 3 minutes of each record, at 360 Hz."""
    return {name: wfdb.rdrecord(str(shared_data / "mitdb" / name), sampto=3 * 60 * 360).p_signal[:, 0] for name in RECORDS}


@pytest.mark.parametrize("radius", [1, 3, 10, 36, 90])
def test_local_peaks_equal_wfdb_on_real_signals_and_plateaus(mitdb_leads, radius):
    for name, signal in mitdb_leads.items():
        segment = signal[:20_000]
        # rounded to 0.1 mV the signal has long flat runs: ties inside one window
        for version in (segment, np.round(segment, 1)):
            expected = processing.find_local_peaks(version, radius)
            assert np.array_equal(local_peaks(version, radius), expected), (name, radius, len(expected))


def test_local_peaks_of_a_flat_signal_are_empty():
    assert local_peaks(np.full(500, 0.3), 10).size == 0 == processing.find_local_peaks(np.full(500, 0.3), 10).size


def test_xqrs_peaks_equal_wfdb_xqrs_detect(mitdb_leads):
    for name, signal in mitdb_leads.items():
        expected = processing.xqrs_detect(sig=signal, fs=360, verbose=False)
        assert len(expected) > 150, name  # 3 minutes of beats
        assert np.array_equal(xqrs_peaks(signal, 360), expected), name
    # and at the store's 300 Hz
    resampled = processing.resample_sig(mitdb_leads["201"], 360, 300)[0]
    assert np.array_equal(xqrs_peaks(resampled, 300), processing.xqrs_detect(sig=resampled, fs=300, verbose=False))


def test_wfdb_keeps_its_own_function_after_a_call(mitdb_leads):
    xqrs_peaks(mitdb_leads["100"], 360)
    assert wfdb_qrs.find_local_peaks is processing.find_local_peaks
    with pytest.raises(Exception):
        xqrs_peaks(np.array([0.0, np.nan]), 360)  # too short for XQRS's filters
    assert wfdb_qrs.find_local_peaks is processing.find_local_peaks
