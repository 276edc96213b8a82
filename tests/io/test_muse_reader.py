"""GE MUSE XML against an independent decoding in the test (regex + base64 + struct), derived leads
against Einthoven/Goldberger, and every damaged-field case."""

from __future__ import annotations

import base64
import re
import struct

import numpy as np
import pytest

from anyecg.io import RecordError, find_records, read_header, read_record

_RHYTHM = re.compile(r"<WaveformType>Rhythm</WaveformType>(.*?)</Waveform>", re.DOTALL)
_LEAD = re.compile(r"<LeadAmplitudeUnitsPerBit>([\d.]+)</LeadAmplitudeUnitsPerBit>.*?"
                   r"<LeadID>(\w+)</LeadID>.*?<WaveFormData>(.*?)</WaveFormData>", re.DOTALL)


def _stored_leads(path) -> dict[str, np.ndarray]:
    """{lead: mV} of the rhythm strip, decoded from the text without an XML parser."""
    rhythm = _RHYTHM.search(path.read_text(encoding="latin-1")).group(1)
    leads = {}
    for per_bit, name, encoded in _LEAD.findall(rhythm):
        data = base64.b64decode("".join(encoded.split()))
        leads[name] = np.array(struct.unpack(f"<{len(data) // 2}h", data)) * float(per_bit) / 1000  # uV -> mV
    return leads


def test_every_sample_equals_independent_decoding(formats_dir):
    files = sorted((formats_dir / "muse_xml").glob("*.xml"))
    assert len(files) == 4
    for path in files:
        rec = read_record(path)
        stored = _stored_leads(path)
        assert list(stored) == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert (rec.fs, rec.n_samples, rec.signal.dtype) == (500.0, 5000, np.float32)
        for name, expected in stored.items():
            np.testing.assert_allclose(rec.signal[rec.leads.index(name)], expected, rtol=1e-6, atol=1e-7)
        lead_i, lead_ii = stored["I"], stored["II"]
        derived = {"III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2,
                   "aVL": lead_i - lead_ii / 2, "aVF": lead_ii - lead_i / 2}
        for name, expected in derived.items():
            np.testing.assert_allclose(rec.signal[rec.leads.index(name)], expected, rtol=1e-6, atol=1e-6)
        assert rec.meta["derived_leads"] == ["III", "aVR", "aVL", "aVF"]


def test_first_v1_samples_by_hand(formats_dir):
    """The first 6 base64 characters of V1 are 3 bytes: one whole int16 sample at 4.88 uV per bit."""
    path = formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml"
    rhythm = _RHYTHM.search(path.read_text(encoding="latin-1")).group(1)
    v1 = rhythm[rhythm.index("<LeadID>V1</LeadID>"):]
    encoded = v1[v1.index("<WaveFormData>") + len("<WaveFormData>"):].split()[0]
    first = struct.unpack("<h", base64.b64decode(encoded[:4])[:2])[0]
    rec = read_record(path)
    assert rec.signal[rec.leads.index("V1"), 0] == pytest.approx(first * 4.88e-3)
    assert np.ptp(rec.signal) < 20  # mV, not uV


def test_metadata_and_statements(formats_dir):
    rec = read_record(formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml")
    assert (rec.age, rec.sex, rec.patient_id) == (60.0, "M", "JAX01234")
    assert rec.labels == ["Statement Text(22)", "Statement Text(1684)", "Statement Text(1300)"]
    assert rec.meta["device"] == "GE MAC55, MUSE 9.0.9.18167"
    assert rec.meta["measurements"]["QRSDuration"] == "78"
    stripped = read_record(formats_dir / "muse_xml" / "braveheart_example1.xml")  # demographics removed
    assert (stripped.age, stripped.sex, stripped.patient_id) == (None, None, None)


def test_found_by_content(formats_dir, tmp_path):
    copy = tmp_path / "muse" / "export.txt"
    copy.parent.mkdir()
    copy.write_bytes((formats_dir / "muse_xml" / "easyRecg_muse_ecg2.xml").read_bytes())
    assert find_records([copy.parent]) == [copy]
    assert read_header(copy).n_samples == 5000


@pytest.mark.parametrize("old, new, problem", [
    ("<WaveFormData>\nIAAg", "<WaveFormData>\nI*Ag", r"Rhythm lead I: WaveFormData is not valid base64"),
    ("IAAgACAAIAAi", "IAAgACAA", r"Rhythm lead I: WaveFormData decodes to 9997 bytes, LeadByteCountTotal says 10000"),
    ("IAAgACAAIAAi", "IAAgACAAIAAj", r"Rhythm lead I: WaveFormData does not match its LeadDataCRC32"),
    ("<LeadAmplitudeUnitsPerBit>4.88<", "<LeadAmplitudeUnitsPerBit>four<", r"Rhythm lead I: LeadAmplitudeUnitsPerBit 'four' is not a number"),
    ("<LeadAmplitudeUnitsPerBit>4.88<", "<LeadAmplitudeUnitsPerBit>0<", r"Rhythm lead I: LeadAmplitudeUnitsPerBit 0 must be positive"),
    ("MICROVOLTS", "MILLIMETERS", r"Rhythm lead I: LeadAmplitudeUnits 'MILLIMETERS' is not a voltage unit"),
    ("<SampleBase>500<", "<SampleBase>0<", r"Rhythm waveform: SampleBase 0 is not a positive rate"),
])
def test_damaged_fields(formats_dir, damaged_xml, old, new, problem):
    source = formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml"
    with pytest.raises(RecordError, match=r"bad\.xml: " + problem):
        read_record(damaged_xml(source, old, new, encoding="latin-1", after="<WaveformType>Rhythm</WaveformType>"))


def test_empty_lead(formats_dir, tmp_path):
    text = (formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml").read_text(encoding="latin-1")
    rhythm = text.index("<WaveformType>Rhythm</WaveformType>")
    v2 = text.index("<LeadID>V2</LeadID>", rhythm)
    start = text.index("<WaveFormData>", v2) + len("<WaveFormData>")
    path = tmp_path / "bad.xml"
    path.write_text(text[:start] + text[text.index("</WaveFormData>", start):], encoding="latin-1")
    with pytest.raises(RecordError, match=r"bad\.xml: Rhythm lead V2: WaveFormData is empty"):
        read_record(path)


def test_truncated_file(formats_dir, tmp_path):
    path = tmp_path / "cut.xml"
    path.write_bytes((formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml").read_bytes()[:60_000])
    with pytest.raises(RecordError, match=r"cut\.xml: not well-formed XML"):
        read_record(path)
