"""Plain MATLAB .mat records (CODE-15%, CPSC 2019) equal scipy.io.loadmat."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from anyecg.io import RecordError, read_header, read_record, record_kind
from anyecg.io.matlab import holds_indices
from anyecg.signal.leads import STANDARD_12

TWELVE = list(STANDARD_12)


def test_code15_equals_loadmat_and_uses_the_rate_inside(shared_data):
    files = sorted((shared_data / "code15").glob("*.mat"))
    assert len(files) == 10
    for file in files:
        content = scipy.io.loadmat(file)
        rec = read_record(file, leads=TWELVE)  # the file stores curr_sample_rate, so no fs needed
        assert read_record(file, fs=500, leads=TWELVE).fs == 400.0  # and the file's own rate wins
        np.testing.assert_array_equal(rec.signal, content["feats"].astype(np.float32))
        assert rec.fs == float(content["curr_sample_rate"][0, 0]) == 400.0
        assert rec.leads == TWELVE and rec.record_id == file.stem
        assert read_header(file, leads=TWELVE).n_samples == content["feats"].shape[1]


def test_cpsc2019_samples_by_one_is_turned_into_one_lead(shared_data):
    files = sorted((shared_data / "cpsc2019" / "data").glob("*.mat"))
    assert len(files) == 50
    for file in files:
        ecg = scipy.io.loadmat(file)["ecg"]  # [5000, 1]
        rec = read_record(file, fs=500, leads=["ECG"])
        assert rec.signal.shape == (1, ecg.shape[0])
        np.testing.assert_array_equal(rec.signal[0], ecg[:, 0].astype(np.float32))
        assert rec.leads == ["unknown"] and rec.raw_leads == ["ECG"]
        assert read_header(file, fs=500, leads=["ECG"]).n_samples == ecg.shape[0]


def test_missing_fs_or_leads_names_the_argument(shared_data):
    file = shared_data / "cpsc2019" / "data" / "data_00014.mat"
    with pytest.raises(RecordError, match=r"data_00014\.mat.*pass fs="):
        read_record(file, leads=["ECG"])
    with pytest.raises(RecordError, match=r"data_00014\.mat.*pass leads="):
        read_record(file, fs=500)
    with pytest.raises(RecordError, match=r"no axis of 3 leads"):
        read_record(file, fs=500, leads=["I", "II", "III"])


def test_challenge_mat_with_header_is_a_wfdb_record(shared_data):
    kind, path = record_kind(shared_data / "cinc2021" / "E07500.mat")
    assert (kind, path.name) == ("wfdb", "E07500.hea")
    assert record_kind(shared_data / "code15" / "code_15_438277.mat")[0] == "mat"


def test_orientation_and_single_array_files(tmp_path):
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((3, 800)).astype(np.float32)  # [leads, samples]
    scipy.io.savemat(tmp_path / "rows.mat", {"whatever": signal, "fs": 250.0})
    scipy.io.savemat(tmp_path / "cols.mat", {"val": signal.T})
    for name in ("rows.mat", "cols.mat"):
        rec = read_record(tmp_path / name, fs=250, leads=["I", "II", "V1"])
        np.testing.assert_array_equal(rec.signal, signal)
        assert read_header(tmp_path / name, fs=250, leads=["I", "II", "V1"]).n_samples == 800
    scipy.io.savemat(tmp_path / "two.mat", {"a": signal, "b": signal})
    with pytest.raises(RecordError, match=r"two\.mat.*cannot tell which variable"):
        read_record(tmp_path / "two.mat", fs=250, leads=["I", "II", "V1"])


def test_reference_index_files_are_recognised(shared_data):
    references = sorted((shared_data / "cpsc2019" / "ref").glob("R_*.mat"))
    assert references and all(holds_indices(file) for file in references)
    assert not any(holds_indices(file) for file in sorted((shared_data / "cpsc2019" / "data").glob("*.mat")))
    assert not holds_indices(shared_data / "code15" / "code_15_438277.mat")
