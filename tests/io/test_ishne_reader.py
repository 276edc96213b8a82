"""ISHNE Holter against the header fields and samples decoded by hand at the standard's offsets, and
against ISHNE files written here from the standard (header, CRC, variable block)."""

from __future__ import annotations

import binascii
import struct

import numpy as np
import pytest

from anyecg.io import RecordError, find_records, iter_chunks, read_header, read_record

SAMPLE = ("ishne_holter", "ECG_P28.01.ecg")


def test_sample_equals_hand_decoding(formats_dir):
    path = formats_dir.joinpath(*SAMPLE)
    data = path.read_bytes()
    n_samples, ecg_offset = struct.unpack_from("<i", data, 14)[0], struct.unpack_from("<i", data, 22)[0]
    n_leads = struct.unpack_from("<h", data, 10 + 146)[0]
    resolution = struct.unpack_from("<12h", data, 10 + 196)  # nV per unit
    rate = struct.unpack_from("<h", data, 10 + 262)[0]
    assert (n_samples, n_leads, rate, resolution[0]) == (95573, 12, 1000, 5000)
    raw = np.frombuffer(data, dtype="<i2", offset=ecg_offset).reshape(n_samples, n_leads)
    rec = read_record(path)
    np.testing.assert_allclose(rec.signal, raw.T * 5000e-6, rtol=1e-6)  # 5000 nV = 0.005 mV per unit
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert (rec.fs, rec.patient_id, rec.age, rec.sex) == (1000.0, "ECG_P28.01", None, None)  # DOB stored as -9
    einthoven = rec.signal[0] + rec.signal[2] - rec.signal[1]  # I + III = II, up to 1-2 LSB of rounding
    assert np.abs(einthoven).max() <= 0.0101
    assert binascii.crc_hqx(data[10:522], 0xFFFF) == struct.unpack_from("<H", data, 8)[0]


def test_streamed_chunks_equal_whole_record(formats_dir):
    path = formats_dir.joinpath(*SAMPLE)
    whole = read_record(path).signal
    chunks = list(iter_chunks(path, 30_000))
    assert [start for start, _ in chunks] == [0, 30_000, 60_000, 90_000]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks], axis=1), whole)
    assert read_header(path).n_samples == 95573


def test_annotation_file_is_not_a_record(formats_dir):
    assert [p.name for p in find_records([formats_dir / "ishne_holter"])] == ["ECG_P28.01.ecg"]


def _write_ishne(path, signal: np.ndarray, *, rate=200, sex=2, birth=(15, 6, 1950), recorded=(1, 3, 2020),
                 codes=(5, 6, 11), resolution=(2500, 2500, 10000), var_block=b"note", crc=True):
    """An ISHNE 1.0 file laid out as the standard describes it (fixed header 512 bytes from byte 10)."""
    n_leads, n_samples = signal.shape
    header = bytearray(512)
    struct.pack_into("<iiiih", header, 0, len(var_block), n_samples, 522, 522 + len(var_block), 1)
    struct.pack_into("<20s", header, 98, b"P-77")
    struct.pack_into("<hh3h3h", header, 118, sex, 0, *birth, *recorded)
    struct.pack_into("<h", header, 146, n_leads)
    struct.pack_into(f"<{n_leads}h", header, 148, *codes)
    struct.pack_into(f"<{n_leads}h", header, 196, *resolution)
    struct.pack_into("<40sh", header, 222, b"Test recorder", rate)
    body = bytes(header) + var_block
    checksum = binascii.crc_hqx(body, 0xFFFF) if crc else 0
    path.write_bytes(b"ISHNE1.0" + struct.pack("<H", checksum) + body + signal.T.astype("<i2").tobytes())
    return path


def test_written_file_scales_each_lead(tmp_path):
    raw = np.arange(3 * 400, dtype=np.int16).reshape(3, 400) - 600
    path = _write_ishne(tmp_path / "holter.ecg", raw)
    rec = read_record(path)
    np.testing.assert_allclose(rec.signal, raw * np.array([[2.5e-3], [2.5e-3], [10e-3]]), rtol=1e-6)
    assert rec.leads == ["I", "II", "V1"] and rec.fs == 200.0
    assert (rec.sex, rec.age, rec.patient_id, rec.meta["device"]) == ("F", 69.0, "P-77", "Test recorder")
    assert read_record(_write_ishne(tmp_path / "nocrc.ecg", raw, crc=False)).n_samples == 400  # CRC 0: not computed


def test_damaged_files(tmp_path):
    raw = np.zeros((3, 400), dtype=np.int16)
    path = _write_ishne(tmp_path / "bad.ecg", raw)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:2000]))
    with pytest.raises(RecordError, match=r"bad\.ecg: ISHNE file is truncated: 2000 bytes, but 400 samples x 3 leads"):
        read_record(path)
    data[10 + 100] ^= 0xFF  # a byte of the patient id
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match=r"bad\.ecg: ISHNE header checksum .* does not match"):
        read_record(path)
    _write_ishne(path, raw, resolution=(2500, 0, 2500))
    with pytest.raises(RecordError, match=r"bad\.ecg: ISHNE header: lead resolution \(nV per unit\) \[2500, 0, 2500\] must be positive"):
        read_record(path)
    path.write_bytes(b"")
    with pytest.raises(RecordError, match=r"bad\.ecg: empty file \(0 bytes\)"):
        read_record(path)
