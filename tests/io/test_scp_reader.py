"""SCP-ECG against samples decoded by hand (uncompressed and default-Huffman files), against the
DICOM copy of the same recording, and the non-compliant vendor files as clear errors."""

from __future__ import annotations

import re
import shutil
import struct

import numpy as np
import pytest

from anyecg.io import RecordError, find_records, read_header, read_record

WELCH_ALLYN = "welchallyn_cardiocontrol_ECG_20170504_163507_123456789.SCP"


def _section(data: bytes, number: int) -> bytes:
    """A section's payload, found through the pointers of section 0 (10 bytes each after its header)."""
    length = struct.unpack_from("<I", data, 6 + 4)[0]
    for offset in range(6 + 16, 6 + length, 10):
        section, size, index = struct.unpack_from("<HII", data, offset)
        if section == number:
            return data[index - 1 + 16:index - 1 + size]
    raise KeyError(number)


def test_uncompressed_v13_file_by_hand(formats_dir):
    """ECG Viewer's demo: 8 leads of raw int16 at 183 nV per unit, 1000 Hz, first sample index 0."""
    path = formats_dir / "scp_ecg" / "ecgviewer_demo_v13.scp"
    rhythm = _section(path.read_bytes(), 6)
    nv, interval = struct.unpack_from("<HH", rhythm, 0)
    assert (nv, interval) == (183, 1000)
    lead_bytes = struct.unpack_from("<8H", rhythm, 6)
    v1_start = 6 + 16 + lead_bytes[0] + lead_bytes[1]  # header, 8 lengths, then leads I and II
    v1 = struct.unpack_from("<5h", rhythm, v1_start)
    rec = read_record(path)
    np.testing.assert_allclose(rec.signal[rec.leads.index("V1"), :5], np.array(v1) * 183e-6, rtol=1e-6)
    assert (rec.fs, rec.n_samples, rec.sex, rec.patient_id) == (1000.0, 10000, "M", "12-678-QW")
    assert rec.meta["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
    lead_i, lead_ii = rec.signal[0].astype(float), rec.signal[1].astype(float)
    np.testing.assert_allclose(rec.signal[2], lead_ii - lead_i, atol=1e-6)


_DEFAULT_CODE = re.compile(r"1111111111([01]{16})|1111111110([01]{8})|(1{1,8})0([01])|(0)")


def _default_huffman(data: bytes, n: int) -> list[int]:
    """The standard's default table, matched on the bit string with a regular expression."""
    bits = "".join(f"{byte:08b}" for byte in data)
    values, position = [], 0
    while len(values) < n:
        match = _DEFAULT_CODE.match(bits, position)
        wide, narrow, ones, sign, _ = match.groups()
        if wide or narrow:
            raw = int(wide or narrow, 2)
            width = len(wide or narrow)
            values.append(raw - (1 << width) if raw >> (width - 1) else raw)
        elif ones:
            values.append(-len(ones) if sign == "1" else len(ones))
        else:
            values.append(0)
        position = match.end()
    return values


def test_huffman_first_difference_file_by_hand(formats_dir):
    """Welch Allyn: default Huffman table, first differences, 3750 nV per unit, 1667 us (600 Hz)."""
    path = formats_dir / "scp_ecg" / WELCH_ALLYN
    data = path.read_bytes()
    assert struct.unpack_from("<H", _section(data, 2), 0)[0] == 19999  # the default table
    rhythm = _section(data, 6)
    nv, interval, difference = struct.unpack_from("<HHB", rhythm, 0)
    assert (nv, interval, difference) == (3750, 1667, 1)
    size_i = struct.unpack_from("<H", rhythm, 6)[0]
    lead_i = np.cumsum(_default_huffman(rhythm[6 + 16:6 + 16 + size_i], 200)) * 3750e-6
    rec = read_record(path)
    np.testing.assert_allclose(rec.signal[0, :200], lead_i, rtol=1e-6, atol=1e-7)
    assert (rec.fs, rec.n_samples, rec.age, rec.sex) == (600.0, 6000, 104.0, "M")
    assert rec.labels == ["sinusrytm (långsam)", "hög P-amplitud", "normal EKG-variant"]
    assert rec.meta["device"] == "Welch Allyn Cardio Control MDW14"


def test_second_difference_file_equals_its_dicom_copy(formats_dir):
    """ECG Toolkit wrote Example.scp (default Huffman, second differences) and Example.dcm from one ECG."""
    scp = read_record(formats_dir / "scp_ecg" / "ecgtoolkit_Example.scp")
    dicom = read_record(formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm")
    assert scp.fs == dicom.fs and sorted(scp.leads) == sorted(dicom.leads)
    for lead in dicom.leads:
        np.testing.assert_allclose(scp.signal[scp.leads.index(lead)], dicom.signal[dicom.leads.index(lead)], atol=1e-6)
    assert (scp.age, scp.sex, scp.patient_id) == (49.0, "M", "SBJ-123")  # born 1953-05-08, recorded 2002-11-22


def test_found_by_content(formats_dir, tmp_path):
    copy = tmp_path / "scp" / "export"
    copy.parent.mkdir()
    shutil.copy(formats_dir / "scp_ecg" / WELCH_ALLYN, copy)
    assert find_records([copy.parent]) == [copy]
    assert read_header(copy).n_samples == 6000


@pytest.mark.parametrize("name, problem", [
    ("contec_ECG90A_0000050.scp", r"SCP section 6 lead I holds 32767 samples, section 3 says 37855"),
    ("healforce_prince180D_62.SCP", r"SCP record length field says 1928331264 bytes, the file has 32768"),
])
def test_non_compliant_vendor_files(formats_dir, name, problem):
    with pytest.raises(RecordError, match=re.escape(name) + ": " + problem):
        read_record(formats_dir / "scp_ecg" / name)


def test_damaged_files(formats_dir, tmp_path):
    data = bytearray((formats_dir / "scp_ecg" / WELCH_ALLYN).read_bytes())
    path = tmp_path / "bad.scp"
    damaged = data.copy()
    damaged[5000] ^= 0x55
    path.write_bytes(bytes(damaged))
    with pytest.raises(RecordError, match=r"bad\.scp: SCP file checksum .* does not match"):
        read_record(path)
    path.write_bytes(bytes(data[:15000]))
    with pytest.raises(RecordError, match=r"bad\.scp: SCP record length field says 21910 bytes, the file has 15000"):
        read_record(path)
    rhythm = data.index(_section(bytes(data), 6))
    unknown = data.copy()
    unknown[0:2] = b"\x00\x00"  # no file checksum, so the edited field is what the reader sees
    unknown[rhythm + 4] = 7  # difference coding
    path.write_bytes(bytes(unknown))
    with pytest.raises(RecordError, match=r"bad\.scp: SCP section 6: difference coding 7 is unknown"):
        read_record(path)
    path.write_bytes(b"")
    with pytest.raises(RecordError, match=r"bad\.scp: empty file \(0 bytes\)"):
        read_record(path)


# The standard's default Huffman table written out: (code, total bits, value); the last two are
# escapes followed by an 8- or 16-bit value.
_TABLE = [("0", 1, 0), ("100", 3, 1), ("101", 3, -1), ("1100", 4, 2), ("1101", 4, -2), ("11100", 5, 3),
          ("11101", 5, -3), ("111100", 6, 4), ("111101", 6, -4), ("1111100", 7, 5), ("1111101", 7, -5),
          ("11111100", 8, 6), ("11111101", 8, -6), ("111111100", 9, 7), ("111111101", 9, -7),
          ("1111111100", 10, 8), ("1111111101", 10, -8), ("1111111110", 18, 0), ("1111111111", 26, 0)]


def _with_section_2(data: bytes, payload: bytes) -> bytes:
    """The file rebuilt with another section 2 payload: later sections move, section 0 follows them."""
    length = struct.unpack_from("<I", data, 6 + 4)[0]
    pointers = [struct.unpack_from("<HII", data, offset) for offset in range(6 + 16, 6 + length, 10)]
    present = sorted((index, number, size) for number, size, index in pointers if size)
    blobs = {number: data[index - 1:index - 1 + size] for index, number, size in present}
    header = bytearray(blobs[2][:16])
    struct.pack_into("<I", header, 4, 16 + len(payload))
    blobs[2] = bytes(header) + payload
    starts, position = {}, 7
    for _, number, _ in present:
        starts[number], position = position, position + len(blobs[number])
    section_0 = bytearray(blobs[0])
    for k, (number, size, _) in enumerate(pointers):
        if size:
            struct.pack_into("<HII", section_0, 16 + 10 * k, number, len(blobs[number]), starts[number])
    blobs[0] = bytes(section_0)
    body = b"".join(blobs[number] for _, number, _ in present)
    return struct.pack("<HI", 0, 6 + len(body)) + body  # checksum 0: not computed


def test_huffman_table_stored_in_the_file(formats_dir, tmp_path):
    """The default table spelled out in section 2 (codes stored bit-reversed) decodes the same samples."""
    original = formats_dir / "scp_ecg" / WELCH_ALLYN
    payload = struct.pack("<HH", 1, len(_TABLE)) + b"".join(
        struct.pack("<BBBhI", len(code), total, 1, value, int(code[::-1], 2)) for code, total, value in _TABLE)
    path = tmp_path / "own_table.scp"
    path.write_bytes(_with_section_2(original.read_bytes(), payload))
    np.testing.assert_array_equal(read_record(path).signal, read_record(original).signal)
