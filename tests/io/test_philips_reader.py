"""Philips Sierra/PageWriter XML against ecgdatakit's independent XLI decoder, and amplitudes against
the 1 mV calibration pulse the carts store after the ECG in every lead."""

from __future__ import annotations

import numpy as np
import pytest

from anyecg.io import RecordError, find_records, read_record

ecgdatakit = pytest.importorskip("ecgdatakit")

STANDARD = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _files(formats_dir):
    files = sorted((formats_dir / "philips_sierra_xml").iterdir())
    assert len(files) == 5
    return files


def test_every_sample_equals_ecgdatakit(formats_dir):
    for path in _files(formats_dir):
        rec = read_record(path)
        reference = ecgdatakit.FileParser.parse(path)
        assert [lead.label for lead in reference.leads] == rec.raw_leads
        assert all(lead.units == "mV" and lead.sampling_rate == rec.fs for lead in reference.leads)
        expected = np.stack([np.asarray(lead.samples, dtype=np.float64) for lead in reference.leads])  # [12, 5500]
        cut = rec.meta["calibration_samples"]
        assert rec.n_samples + cut == expected.shape[1] == 5500 and 200 <= cut <= 240
        np.testing.assert_allclose(rec.signal, expected[:, :rec.n_samples], rtol=1e-6, atol=1e-7)
        assert (rec.leads, rec.fs, rec.signal.dtype) == (STANDARD, 500.0, np.float32)


def test_calibration_pulse_reads_one_millivolt(formats_dir):
    """The cut block (the same in every lead) holds the cart's 1 mV pulse: 200 units at 5 uV/unit."""
    for path in _files(formats_dir):
        rec = read_record(path)
        strip = np.stack([np.asarray(lead.samples, dtype=np.float64)
                          for lead in ecgdatakit.FileParser.parse(path).leads])[:, rec.n_samples:]
        assert (strip == strip[:1]).all()  # not ECG: every lead equal
        np.testing.assert_allclose(strip[:, 5350 - rec.n_samples:5450 - rec.n_samples], 1.0, atol=1e-6)
        assert rec.meta["calibration_mv"] == pytest.approx(1.0)


def test_limb_leads_follow_einthoven(formats_dir):
    rec = read_record(formats_dir / "philips_sierra_xml" / "2020-5-18_15-48-11.xml")
    lead_i, lead_ii, lead_iii = rec.signal[:3].astype(np.float64)
    assert np.abs(lead_iii - (lead_ii - lead_i)).max() <= 0.0051  # within one 5 uV unit of rounding


def test_metadata_and_statements(formats_dir):
    rec = read_record(formats_dir / "philips_sierra_xml" / "129DYPRG.XML")
    assert (rec.age, rec.sex, rec.patient_id) == (50.0, "M", "1112010721168bdc")
    assert rec.labels == ["Sinus bradycardia", "Nonspecific intraventricular conduction delay",
                          "Inferior infarct, acute (LCx)", ">>> Acute MI <<<"]
    assert rec.meta["severity"] == "ABNORMAL ECG"
    assert rec.meta["statements"][0] == {"statement": "Sinus bradycardia", "reason": "rate< 50"}
    assert (rec.meta["device"], rec.meta["document"]) == ("Philips HeartstartMRx", "SierraECG 1.03")
    touch = read_record(formats_dir / "philips_sierra_xml" / "3191723_ZZDEMOPTONLY_1-04_orig.xml")  # UTF-16
    assert touch.labels[1] == "PROBABLE LEFT VENTRICULAR HYPERTROPHY"  # printed form, with its modifier
    assert (touch.age, touch.sex) == (60.0, "M")  # born 1950-01-01, recorded 2010-01-19


def test_found_in_folder(formats_dir):
    assert find_records([formats_dir / "philips_sierra_xml"]) == _files(formats_dir)


@pytest.mark.parametrize("old, new, problem", [
    ('compressmethod="XLI"', 'compressmethod="ZIP"', r"parsedwaveforms compression 'ZIP' is unknown"),
    ('dataencoding="Base64"', 'dataencoding="Hex"', r"parsedwaveforms dataencoding 'Hex' is not supported"),
    ("<signalresolution>5<", "<signalresolution>0<", r"signalcharacteristics resolution \(uV per unit\) '0' must be a positive number"),
    ("<samplingrate>500<", "<samplingrate>fast<", r"signalcharacteristics samplingrate 'fast' is not a number"),
    ("<documentversion>1.03<", "<documentversion>9.99<", r"Philips XML: Files of type SierraECG 9.99 are unsupported"),
])
def test_damaged_fields(formats_dir, damaged_xml, old, new, problem):
    with pytest.raises(RecordError, match=r"bad\.xml: " + problem):
        read_record(damaged_xml(formats_dir / "philips_sierra_xml" / "129DYPRG.XML", old, new))


def test_truncated_waveform_block(formats_dir, tmp_path):
    text = (formats_dir / "philips_sierra_xml" / "129DYPRG.XML").read_text(encoding="utf-8")
    start = text.index(">", text.index("<parsedwaveforms")) + 1
    end = text.index("</parsedwaveforms>")
    path = tmp_path / "bad.xml"
    path.write_text(text[:start] + text[start:start + (end - start) // 2] + text[end:], encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.xml: parsedwaveforms cannot be decoded \(Error: Incorrect padding\)"):
        read_record(path)
    path.write_text(text[:start] + text[end:], encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.xml: parsedwaveforms holds no data"):
        read_record(path)
