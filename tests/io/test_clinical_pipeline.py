"""Clinical exports through the rest of the toolkit: prepare (good files stored, bad ones skipped with
their problem), the HTTP service's upload reader, and inspect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from anyecg.data.inspect import describe_record
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store


def _folder(formats_dir: Path, target: Path) -> Path:
    target.mkdir()
    shutil.copy(formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm", target / "ECG0001")  # no extension
    shutil.copy(formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml", target / "muse.xml")
    shutil.copy(formats_dir / "hl7_aecg" / "Example_aECG.xml", target / "aecg.xml")
    shutil.copy(formats_dir / "philips_sierra_xml" / "129DYPRG.XML", target / "philips.XML")
    shutil.copy(formats_dir / "ishne_holter" / "ECG_P28.01.ecg", target / "holter.ecg")
    shutil.copy(get_testdata_file("CT_small.dcm"), target / "ct.dcm")  # DICOM without a waveform
    (target / "empty.dcm").write_bytes(b"")
    (target / "cut.xml").write_bytes((formats_dir / "muse_xml" / "easyRecg_muse_ecg2.xml").read_bytes()[:50_000])
    muse = (formats_dir / "muse_xml" / "easyRecg_muse_ecg1.xml").read_text(encoding="latin-1")
    (target / "bad_base64.xml").write_text(muse.replace("<WaveFormData>\nIAAg", "<WaveFormData>\nI*Ag"), encoding="latin-1")
    philips = (formats_dir / "philips_sierra_xml" / "129DYPRG.XML").read_text(encoding="utf-8")
    (target / "zip.xml").write_text(philips.replace('compressmethod="XLI"', 'compressmethod="ZIP"'), encoding="utf-8")
    (target / "notes.xml").write_text("<notes/>")  # not an ECG: not a record, listed as not read
    for file in target.iterdir():
        file.chmod(0o644)
    return target


def test_prepare_stores_good_exports_and_skips_bad_ones(formats_dir, tmp_path):
    source = _folder(formats_dir, tmp_path / "exports")
    # the Holter record (12 x 95573 values) goes through the streamed path
    result = prepare(PrepareConfig(sources=[source], out=tmp_path / "store", progress=False,
                                   stream_above_values=200_000))
    store = Store(tmp_path / "store")
    rows = store.manifest.set_index("record_id")
    assert sorted(rows.index) == ["ECG0001", "aecg", "holter", "muse", "philips"]
    assert rows.loc["muse", "format"] == "muse_xml" and rows.loc["holter", "format"] == "ishne"
    assert rows.loc["philips", "header_labels"].startswith("Sinus bradycardia;")
    assert rows.loc["muse", "sex"] == "M" and rows.loc["muse", "age"] == 60.0
    skipped = {Path(s).name: p for s, p in zip(store.skipped()["source"], store.skipped()["problem"])}
    assert result.skipped == 5 and result.not_read == {".xml": 1}
    assert set(skipped) == {"ct.dcm", "empty.dcm", "cut.xml", "bad_base64.xml", "zip.xml", "notes.xml"}
    assert "not read" in skipped["notes.xml"]
    assert "no waveform" in skipped["ct.dcm"]
    assert "empty file" in skipped["empty.dcm"]
    assert "not well-formed XML" in skipped["cut.xml"]
    assert "Rhythm lead I: WaveFormData is not valid base64" in skipped["bad_base64.xml"]
    assert "parsedwaveforms compression 'ZIP' is unknown" in skipped["zip.xml"]


def test_upload_reader_and_inspect(formats_dir, tmp_path):
    service = pytest.importorskip("anyecg.serve.service")
    source = _folder(formats_dir, tmp_path / "exports")
    ecg = service.read_uploaded_record(source, ["ECG0001"], service.ServeLimits())
    assert ecg.signal.shape == (12, 5000) and ecg.fs == 500.0
    with pytest.raises(service.InputError, match=r"cannot read the uploaded record ct\.dcm: DICOM file has no waveform"):
        service.read_uploaded_record(source, ["ct.dcm"], service.ServeLimits())
    info = describe_record(source / "philips.XML")
    assert info["device"] == "Philips HeartstartMRx" and info["format"] == "philips_xml"
    assert info["labels"][0] == "Sinus bradycardia"
    assert describe_record(source / "muse.xml")["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
