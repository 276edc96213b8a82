"""HL7 aECG against an independent reading of the text (regex, origin + scale * digits), and against
the DICOM copy of the same recording."""

from __future__ import annotations

import re

import numpy as np
import pytest

from anyecg.io import RecordError, find_records, read_record

_SEQUENCE = re.compile(r'<code code="MDC_ECG_LEAD_(\w+)"[^>]*>\s*(?:</code>)?\s*<value xsi:type="SLIST_PQ">\s*'
                       r'(?:<!--.*?-->\s*)?<origin value="([-\d.]+)" unit="uV"\s*(?:/>|></origin>)\s*'
                       r'<scale value="([-\d.]+)" unit="uV"\s*(?:/>|></scale>)\s*(?:<!--.*?-->\s*)?<digits>(.*?)</digits>',
                       re.DOTALL)


def _rhythm_leads(path) -> dict[str, np.ndarray]:
    """{lead: mV} of the rhythm series: the sequences before any derived (representative beat) series."""
    text = path.read_text(encoding="utf-8")
    text = text.split("<derivedSeries>")[0]
    return {name: (float(origin) + float(scale) * np.array(digits.split(), dtype=float)) / 1000
            for name, origin, scale, digits in _SEQUENCE.findall(text)}


@pytest.mark.parametrize("name, fs, n_leads, n_samples", [
    ("Example_aECG.xml", 500.0, 12, 5000), ("liryc_hl7aecg_example.xml", 100.0, 12, 1000),
    ("FDA_minimum_aecg.xml", 500.0, 1, 13),
])
def test_every_sample_equals_independent_reading(formats_dir, name, fs, n_leads, n_samples):
    path = formats_dir / "hl7_aecg" / name
    rec = read_record(path)
    expected = _rhythm_leads(path)
    assert (rec.fs, rec.n_leads, rec.n_samples) == (fs, n_leads, n_samples)
    assert rec.raw_leads == list(expected)
    for k, lead in enumerate(expected.values()):
        np.testing.assert_allclose(rec.signal[k], lead, rtol=1e-6, atol=1e-7)
    assert np.ptp(rec.signal) < 20  # mV


def test_minimum_file_by_hand(formats_dir):
    rec = read_record(formats_dir / "hl7_aecg" / "FDA_minimum_aecg.xml")
    digits = [-2, -2, -2, -2, -3, -4, -3, -5, -5, -4, -6, -9, -9]  # copied from the file, 2.5 uV per digit
    np.testing.assert_allclose(rec.signal[0], np.array(digits) * 2.5e-3, rtol=1e-6)
    assert rec.leads == ["II"]


def test_same_recording_as_its_dicom_copy(formats_dir):
    """ECG Toolkit wrote ecgtoolkit_Example.dcm from this aECG: the two readers must agree."""
    aecg = read_record(formats_dir / "hl7_aecg" / "Example_aECG.xml")
    dicom = read_record(formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm")
    for lead in dicom.leads:
        np.testing.assert_allclose(aecg.signal[aecg.leads.index(lead)], dicom.signal[dicom.leads.index(lead)], atol=1e-6)


def test_metadata_and_statements(formats_dir):
    rec = read_record(formats_dir / "hl7_aecg" / "Example_aECG.xml")
    assert (rec.age, rec.sex, rec.patient_id) == (46.0, "M", "SBJ-123")  # reported age, not birth date
    assert rec.labels == ["Sinus Rhythm"]
    assert rec.meta["device"] == "Mortara Instrument, Inc. ELI250"
    mindray = read_record(formats_dir / "hl7_aecg" / "liryc_hl7aecg_example.xml")
    assert mindray.labels == ["Rythme sinusal avec ESA",
                              "--- Interprétation sans connaître le sexe/l'âge du patient ---", "ECG limite"]
    assert mindray.meta["comments"] == ["Diagnostic non confirmé."]
    assert mindray.leads[:6] == ["I", "II", "III", "aVR", "aVL", "aVF"]


def test_found_in_folder(formats_dir):
    found = find_records([formats_dir / "hl7_aecg"])
    assert [p.name for p in found] == ["Example_aECG.xml", "FDA_minimum_aecg.xml", "liryc_hl7aecg_example.xml"]


@pytest.mark.parametrize("old, new, problem", [
    ('<scale value="2.5" unit="uV"/>', '<scale value="2.5" unit="mmHg"/>', r"MDC_ECG_LEAD_II sequence: <scale> unit 'mmHg' is not a voltage unit"),
    ('<scale value="2.5" unit="uV"/>', '<scale value="x" unit="uV"/>', r"MDC_ECG_LEAD_II sequence: <scale> value 'x' is not a number"),
    ("<digits>-2 -2 -2 -2 -3 -4 -3 -5 -5 -4 -6 -9 -9 </digits>", "<digits> </digits>", r"MDC_ECG_LEAD_II sequence: <digits> is empty"),
    ("-6 -9 -9 </digits>", "-6 -9 x9 </digits>", r"MDC_ECG_LEAD_II sequence: <digits> holds a non-number"),
    ('<increment value="0.002" unit="s"/>', '<increment value="0.002" unit="furlong"/>', r"TIME_ABSOLUTE sequence: <increment> '0.002' 'furlong' is not a time interval"),
    ('xsi:type="SLIST_PQ"', 'xsi:type="SLIST_XYZ"', r"MDC_ECG_LEAD_II sequence: value type 'SLIST_XYZ' is not supported"),
])
def test_damaged_fields(formats_dir, damaged_xml, old, new, problem):
    with pytest.raises(RecordError, match=r"bad\.xml: " + problem):
        read_record(damaged_xml(formats_dir / "hl7_aecg" / "FDA_minimum_aecg.xml", old, new, every=True))
