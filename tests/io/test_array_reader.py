"""npy / npz / CSV round trips with a given fs and leads."""

from __future__ import annotations

import numpy as np
import pytest

from anyecg.io import RecordError, read_header, read_record
from anyecg.signal.leads import STANDARD_12

LEADS = ["I", "II", "V1"]


@pytest.fixture
def real_signal(shared_data):
    """float32 [3, 3600]: 10 s of real ECG (MIT-BIH 100 at 360 Hz, both leads plus their difference)."""
    signal = read_record(shared_data / "mitdb" / "100").signal[:, :3600]
    return np.concatenate([signal, signal[:1] - signal[1:]]).astype(np.float32)


@pytest.mark.parametrize("layout", ["leads_first", "samples_first"])
def test_npy_round_trip(tmp_path, real_signal, layout):
    np.save(tmp_path / "x.npy", real_signal if layout == "leads_first" else real_signal.T)
    rec = read_record(tmp_path / "x.npy", fs=360, leads=LEADS)
    np.testing.assert_array_equal(rec.signal, real_signal)
    assert rec.signal.flags.c_contiguous and rec.signal.dtype == np.float32
    assert (rec.fs, rec.leads, rec.record_id) == (360.0, LEADS, "x")
    info = read_header(tmp_path / "x.npy", fs=360, leads=LEADS)
    assert (info.n_samples, info.fs) == (3600, 360.0)


def test_npz_round_trip_with_and_without_stored_rate_and_leads(tmp_path, real_signal):
    np.savez(tmp_path / "plain.npz", signal=real_signal)
    np.testing.assert_array_equal(read_record(tmp_path / "plain.npz", fs=360, leads=LEADS).signal, real_signal)
    np.savez(tmp_path / "full.npz", ecg=real_signal.T.astype(np.float64), fs=np.array(360.0), leads=np.array(["MLII", "V5", "d"]))
    rec = read_record(tmp_path / "full.npz")
    np.testing.assert_array_equal(rec.signal, real_signal)
    assert rec.fs == 360.0 and rec.raw_leads == ["MLII", "V5", "d"] and rec.leads == ["II", "V5", "unknown"]


def test_csv_with_header_row_and_index_column(tmp_path, real_signal):
    lines = ["'sample #','MLII','V5','d'"] + [
        f"{t}," + ",".join(f"{v:.6f}" for v in real_signal[:, t]) for t in range(real_signal.shape[1])
    ]
    (tmp_path / "rec.csv").write_text("\n".join(lines) + "\n")
    rec = read_record(tmp_path / "rec.csv", fs=360)
    assert rec.raw_leads == ["MLII", "V5", "d"] and rec.leads == ["II", "V5", "unknown"]
    np.testing.assert_allclose(rec.signal, real_signal, atol=5e-7)  # 6 decimals written


def test_csv_without_header_needs_leads(tmp_path, real_signal):
    np.savetxt(tmp_path / "bare.csv", real_signal.T, delimiter=";", fmt="%.7g")
    with pytest.raises(RecordError, match=r"bare\.csv.*pass leads="):
        read_record(tmp_path / "bare.csv", fs=360)
    rec = read_record(tmp_path / "bare.csv", fs=360, leads=LEADS)
    np.testing.assert_allclose(rec.signal, real_signal, rtol=1e-6, atol=1e-9)


def test_arrays_need_fs_and_matching_leads(tmp_path, real_signal):
    np.save(tmp_path / "x.npy", real_signal)
    with pytest.raises(RecordError, match=r"x\.npy.*pass fs="):
        read_record(tmp_path / "x.npy", leads=LEADS)
    with pytest.raises(RecordError, match=r"x\.npy.*pass leads="):
        read_record(tmp_path / "x.npy", fs=360)
    with pytest.raises(RecordError, match=r"x\.npy.*no axis of 12 leads"):
        read_record(tmp_path / "x.npy", fs=360, leads=list(STANDARD_12))
    with pytest.raises(RecordError, match=r"x\.npy.*positive"):
        read_record(tmp_path / "x.npy", fs=-5, leads=LEADS)


def test_one_dimensional_array_is_one_lead(tmp_path, real_signal):
    np.save(tmp_path / "one.npy", real_signal[0])
    rec = read_record(tmp_path / "one.npy", fs=360, leads=["II"])
    np.testing.assert_array_equal(rec.signal, real_signal[:1])
