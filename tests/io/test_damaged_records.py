"""Damaged copies of real records: each gives a RecordError naming the file and the problem."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from anyecg.io import RecordError, check_signal, find_records, iter_chunks, read_header, read_record


def _load(path, **kwargs):
    """What a pipeline does with a file: read it, then check its samples."""
    return check_signal(read_record(path, **kwargs))


def test_truncated_dat(shared_data, copy_record):
    header = copy_record(shared_data / "mitdb" / "100.hea")
    dat = header.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:100_000])
    for action in (read_record, lambda p: list(iter_chunks(p, 10_000))):
        with pytest.raises(RecordError, match=r"100\.hea: signal file 100\.dat is truncated: 100000 bytes, but 650000 samples x 2 signals in format 212 need 1950000"):
            action(header)


def test_header_claiming_more_samples(shared_data, copy_record):
    header = copy_record(shared_data / "cpsc2021" / "data_101_6.hea")
    header.write_text(header.read_text().replace("data_101_6 2 200 22355", "data_101_6 2 200 99999", 1))
    with pytest.raises(RecordError, match=r"data_101_6\.hea: signal file data_101_6\.dat is truncated.*99999 samples"):
        read_record(header)


def test_truncated_challenge_mat(shared_data, copy_record):
    header = copy_record(shared_data / "cinc2021" / "E07500.hea")
    mat = header.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:5000])
    with pytest.raises(RecordError, match=r"E07500\.hea: signal file E07500\.mat is truncated"):
        read_record(mat)


def test_garbage_header(tmp_path, shared_data, copy_record):
    header = copy_record(shared_data / "mitdb" / "100.hea")
    header.write_text("this is not a header\nat all\n")
    with pytest.raises(RecordError, match=r"100\.hea: not a WFDB header: line 1"):
        read_record(header)
    header.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes() + b"\x00")
    with pytest.raises(RecordError, match=r"100\.hea: not a WFDB header \(binary content\)"):
        read_header(header)
    header.write_text("100 2 360 650000\n100.dat 212 200 11 1024 995 -22131 0 MLII\n")
    with pytest.raises(RecordError, match=r"100\.hea: header declares 2 signals but has 1 signal lines"):
        read_record(header)
    header.write_text("100 2 360 650000\n100.dat twelve 200\n100.dat 212 200\n")
    with pytest.raises(RecordError, match=r"100\.hea: header line 2: bad signal format field 'twelve'"):
        read_record(header)


@pytest.mark.parametrize("name, problem", [
    ("empty.hea", "header file is empty"),
    ("empty.mat", "corrupt or unreadable .mat"),
    ("empty.npy", "corrupt or unreadable .npy"),
    ("empty.csv", "CSV file is empty"),
    ("empty.edf", "not a readable EDF"),
])
def test_empty_files(tmp_path, name, problem):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(RecordError, match=rf"{name.replace('.', '[.]')}: {problem}"):
        read_record(tmp_path / name, fs=500, leads=["II"])


def test_missing_signal_file(shared_data, copy_record):
    header = copy_record(shared_data / "ptbdb" / "s0010_re.hea")
    header.with_suffix(".xyz").unlink()
    with pytest.raises(RecordError, match=r"s0010_re\.hea: missing signal file s0010_re\.xyz \(named in the header\)"):
        read_record(header)


def test_missing_record(tmp_path):
    with pytest.raises(RecordError, match=r"nothing: no such file"):
        read_record(tmp_path / "nothing")
    with pytest.raises(RecordError, match=r"absent\.hea: header file not found"):
        read_record(tmp_path / "absent.hea")
    with pytest.raises(RecordError, match=r"gone: no such file, folder or WFDB record"):
        find_records([tmp_path / "gone"])


def test_nan_samples_in_npy(tmp_path, shared_data):
    signal = read_record(shared_data / "cinc2021" / "E07500").signal[:2].copy()
    signal[1, 100:150] = np.nan
    np.save(tmp_path / "holes.npy", signal)
    with pytest.raises(RecordError, match=r"holes\.npy: NaN/inf samples in 1 lead\(s\): lead II \(index 1\): 50 of 5000"):
        _load(tmp_path / "holes.npy", fs=500, leads=["I", "II"])


def test_missing_fs(tmp_path, shared_data):
    np.save(tmp_path / "nofs.npy", read_record(shared_data / "cinc2021" / "E07500").signal)
    with pytest.raises(RecordError, match=r"nofs\.npy: no sampling rate in this file: pass fs="):
        read_record(tmp_path / "nofs.npy", leads=[f"L{i}" for i in range(12)])


def test_flat_record(tmp_path):
    np.save(tmp_path / "flat.npy", np.full((2, 5000), 0.25, dtype=np.float32))
    with pytest.raises(RecordError, match=r"flat\.npy: no usable lead left: I \(index 0\): flat.*II \(index 1\): flat"):
        _load(tmp_path / "flat.npy", fs=500, leads=["I", "II"])


def test_unsupported_extension(tmp_path):
    (tmp_path / "notes.txt").write_text("1,2,3\n")
    with pytest.raises(RecordError, match=r"notes\.txt: unsupported file type '\.txt'; supported: \.hea"):
        read_record(tmp_path / "notes.txt")


def test_corrupt_mat_and_npz(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(RecordError, match=r"bad\.mat: corrupt or unreadable \.mat"):
        read_record(tmp_path / "bad.mat", fs=500, leads=["II"])
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04" + bytes(50))
    with pytest.raises(RecordError, match=r"bad\.npz: corrupt or unreadable \.npz"):
        read_record(tmp_path / "bad.npz", fs=500, leads=["II"])
    scipy.io.savemat(tmp_path / "text.mat", {"val": "not a signal"})
    with pytest.raises(RecordError, match=r"text\.mat: variable .val. has dtype <U12, expected real numbers"):
        read_record(tmp_path / "text.mat", fs=500, leads=["II"])


def test_non_numeric_csv(tmp_path):
    (tmp_path / "mixed.csv").write_text("I,II\n0.1,0.2\n0.3,oops\n")
    with pytest.raises(RecordError, match=r"mixed\.csv: CSV holds a non-numeric sample"):
        read_record(tmp_path / "mixed.csv", fs=500)
    (tmp_path / "ragged.csv").write_text("0.1,0.2\n0.3\n")
    with pytest.raises(RecordError, match=r"ragged\.csv: CSV line 2 has 1 columns, expected 2"):
        read_record(tmp_path / "ragged.csv", fs=500, leads=["I", "II"])
