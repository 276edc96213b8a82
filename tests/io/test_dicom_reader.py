"""DICOM ECG waveforms against pydicom's own scaled arrays and against samples decoded by hand."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from anyecg.io import RecordError, find_records, iter_chunks, read_header, read_record
from anyecg.io.dicom import channel_name

_UNIT_TO_MV = {"uV": 1e-3, "mV": 1.0}  # the sample files' units, written out independently of the reader


def _samples(formats_dir):
    return [formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm",
            formats_dir / "dicom_ecg" / "ecg-dicom-web-viewer_test_ecg.dcm",
            get_testdata_file("waveform_ecg.dcm")]


def test_every_sample_equals_pydicom_scaled_waveform(formats_dir):
    for path in _samples(formats_dir):
        rec = read_record(path)
        ds = pydicom.dcmread(path)
        group = next((k for k, g in enumerate(ds.WaveformSequence)
                      if "RHYTHM" in str(g.get("MultiplexGroupLabel", "")).upper()), 0)
        channels = ds.WaveformSequence[group].ChannelDefinitionSequence
        units = [_UNIT_TO_MV[c.ChannelSensitivityUnitsSequence[0].CodeValue] for c in channels]
        expected = ds.waveform_array(group) * np.array(units)  # pydicom applies sensitivity and baseline
        assert rec.signal.dtype == np.float32
        np.testing.assert_allclose(rec.signal, expected.T, rtol=1e-6, atol=1e-7)
        assert rec.fs == float(ds.WaveformSequence[group].SamplingFrequency)
        assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert rec.meta["format"] == "dicom"


def test_first_v1_samples_decoded_by_hand(formats_dir):
    """WaveformData is little-endian int16 interleaved [sample][channel]; V1 is channel 7 at 2.5 uV/LSB."""
    path = formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm"
    ds = pydicom.dcmread(path)
    data = ds.WaveformSequence[0].WaveformData
    first = [struct.unpack_from("<h", data, (sample * 12 + 6) * 2)[0] for sample in range(5)]
    rec = read_record(path)
    assert rec.raw_leads[6] == "V1"
    np.testing.assert_allclose(rec.signal[6, :5], np.array(first) * 2.5e-3, rtol=1e-6)
    assert np.ptp(rec.signal) < 20  # a 12-lead ECG spans a few mV, not volts or microvolts


def test_metadata_statements_and_device():
    rec = read_record(get_testdata_file("waveform_ecg.dcm"))
    assert (rec.age, rec.sex) == (42.0, "F")
    assert rec.labels == ["RITMO SINUSALE", "ECG NORMALE"]
    assert rec.meta["device"] == "Mortara Instrument, Inc. el250"
    assert rec.meta["groups"] == ["RHYTHM", "MEDIAN BEAT"]
    assert rec.meta["measurements"]["QRS Duration"] == "75 ms"


def test_hemodynamic_sop_class_at_240_hz(formats_dir):
    rec = read_record(formats_dir / "dicom_ecg" / "ecg-dicom-web-viewer_test_ecg.dcm")
    assert (rec.fs, rec.n_samples, rec.age, rec.sex) == (240.0, 2400, 55.0, "M")
    assert rec.meta["sop_class"] == "Hemodynamic Waveform Storage"


def test_padding_value_zero_keeps_genuine_zero_samples(formats_dir):
    rec = read_record(formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm")
    assert np.isfinite(rec.signal).all() and (rec.signal == 0).any()


def test_found_by_content_without_extension(formats_dir, tmp_path):
    copy = tmp_path / "export" / "ECG0001"
    copy.parent.mkdir()
    shutil.copy(formats_dir / "dicom_ecg" / "ecgtoolkit_Example.dcm", copy)
    assert find_records([copy.parent]) == [copy]
    assert read_header(copy).n_samples == 5000
    chunks = list(iter_chunks(copy, 2000))
    assert [start for start, _ in chunks] == [0, 2000, 4000]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks], axis=1), read_record(copy).signal)


def test_channel_names():
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    assert channel_name(ds.WaveformSequence[0].ChannelDefinitionSequence[0]) == "I"  # "Lead I (Einthoven)"


def test_no_waveform(tmp_path):
    path = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    with pytest.raises(RecordError, match=r"ct\.dcm: DICOM file has no waveform \(WaveformSequence"):
        read_record(path)


def test_wrong_units(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.WaveformSequence[0].ChannelDefinitionSequence[2].ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"
    ds.save_as(tmp_path / "units.dcm")
    with pytest.raises(RecordError, match=r"units\.dcm: WaveformSequence\[0\] channel 3: ChannelSensitivityUnitsSequence 'mm\[Hg\]'"):
        read_record(tmp_path / "units.dcm")


def test_truncated_waveform_data(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:1000]
    ds.save_as(tmp_path / "short.dcm")
    with pytest.raises(RecordError, match=r"short\.dcm: WaveformSequence\[0\] WaveformData cannot be decoded"):
        read_record(tmp_path / "short.dcm")


def test_empty_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(RecordError, match=r"empty\.dcm: empty file \(0 bytes\)"):
        read_record(tmp_path / "empty.dcm")
    (tmp_path / "blank").write_bytes(b"")
    with pytest.raises(RecordError, match=r"blank: empty file \(0 bytes\)"):
        read_record(tmp_path / "blank")
