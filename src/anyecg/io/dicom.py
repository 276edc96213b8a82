"""DICOM ECG waveforms (12-lead ECG, General ECG, and Hemodynamic Waveform Storage) via pydicom.

A waveform object holds one or more multiplex groups (typically the rhythm strip and a median beat).
The recording is the first group labelled RHYTHM, else the first ORIGINAL group, else the first one;
the others are listed in `meta["groups"]`. Each channel's integer samples become mV as

    value = (raw * Channel Sensitivity * Sensitivity Correction Factor + Channel Baseline) * unit factor

with the unit from the Channel Sensitivity Units Sequence (uV, mV, V). Channel names come from the
Channel Source Sequence ("Lead I (Einthoven)" -> I). Waveform Padding Value is not turned into gaps:
writers declare 0 as padding while 0 is also a genuine sample, so every sample is kept.

Labels are the free-text statements of the Waveform Annotation Sequence (the device's interpretation);
coded measurements (PR interval, QRS axis, ...) go to `meta["measurements"]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.waveforms.numpy_handler import multiplex_array

from anyecg.io.clinical import chunks_from, header_from, read_bytes
from anyecg.io.metadata import RecordInfo, millivolt_factor, parse_age, parse_sex
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

_LEAD_PREFIX = re.compile(r"^\s*lead\s+", re.IGNORECASE)
_PARENTHESIS = re.compile(r"\s*\(.*\)\s*$")
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def channel_name(channel) -> str:
    """'Lead I (Einthoven)' -> 'I', 'Lead aVR' -> 'aVR'; the code value when there is no meaning."""
    source = channel.get("ChannelSourceSequence")
    if not source:
        return channel.get("ChannelLabel", "") or ""
    meaning = str(source[0].get("CodeMeaning", "") or source[0].get("CodeValue", ""))
    return _PARENTHESIS.sub("", _LEAD_PREFIX.sub("", meaning)).strip()


def _dataset(path: Path):
    read_bytes(path)  # a clear error for missing or 0-byte files
    try:
        return pydicom.dcmread(str(path))
    except InvalidDicomError as err:
        raise RecordError(path, f"not a DICOM file ({err})") from None
    except Exception as err:  # pydicom raises many types for damaged files
        raise RecordError(path, f"damaged DICOM file ({type(err).__name__}: {err})") from None


def _pick_group(path: Path, ds) -> int:
    groups = ds.get("WaveformSequence")
    if not groups:
        raise RecordError(path, "DICOM file has no waveform (WaveformSequence (5400,0100) is absent or empty); "
                                f"SOP class {ds.get('SOPClassUID', '?')}")
    labels = [str(group.get("MultiplexGroupLabel", "")).upper() for group in groups]
    for index, label in enumerate(labels):
        if "RHYTHM" in label:
            return index
    for index, group in enumerate(groups):
        if str(group.get("WaveformOriginality", "")).upper() == "ORIGINAL":
            return index
    return 0


def _scales(path: Path, group, index: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per channel (mV per raw unit, mV offset, units as written)."""
    gains, offsets, units = [], [], []
    for number, channel in enumerate(group.ChannelDefinitionSequence, start=1):
        where = f"WaveformSequence[{index}] channel {number}"
        unit_items = channel.get("ChannelSensitivityUnitsSequence")
        unit = str(unit_items[0].get("CodeValue", "")) if unit_items else ""
        factor = millivolt_factor(unit) if unit else None
        if factor is None:
            raise RecordError(path, f"{where}: ChannelSensitivityUnitsSequence {unit!r} is not a voltage unit (uV, mV, V)")
        sensitivity = float(channel.get("ChannelSensitivity", 1.0) or 1.0)
        correction = float(channel.get("ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
        if not np.isfinite(sensitivity * correction) or sensitivity * correction == 0:
            raise RecordError(path, f"{where}: ChannelSensitivity {sensitivity} x correction {correction} is not a usable scale")
        gains.append(sensitivity * correction * factor)
        offsets.append(float(channel.get("ChannelBaseline", 0.0) or 0.0) * factor)
        units.append(unit)
    return np.asarray(gains), np.asarray(offsets), units


def _age(ds) -> float | None:
    match = _AGE.match(str(ds.get("PatientAge", "")).strip())
    if match:
        return parse_age(str(round(int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)], 2)))
    birth, taken = str(ds.get("PatientBirthDate", "")), str(ds.get("AcquisitionDateTime", "") or ds.get("StudyDate", ""))
    if len(birth) >= 8 and len(taken) >= 8 and birth[:8].isdigit() and taken[:8].isdigit():
        years = int(taken[:4]) - int(birth[:4]) - (taken[4:8] < birth[4:8])
        return parse_age(str(years))
    return None


def _annotations(ds) -> tuple[list[str], dict[str, str]]:
    """(free-text statements, coded measurements {name: 'value unit'})."""
    statements: list[str] = []
    measurements: dict[str, str] = {}
    for item in ds.get("WaveformAnnotationSequence", []):
        text = str(item.get("UnformattedTextValue", "") or "").strip()
        if text and text not in statements:
            statements.append(text)
        concept = item.get("ConceptNameCodeSequence")
        value = item.get("NumericValue")
        if concept and value is not None and value != "":
            units = item.get("MeasurementUnitsCodeSequence")
            unit = f" {units[0].get('CodeValue', '')}" if units else ""
            measurements.setdefault(str(concept[0].get("CodeMeaning", "")), f"{value}{unit}".strip())
    return statements, measurements


def read_dicom(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    """The rhythm waveform of a DICOM ECG in mV; `fs` and `leads` are unused (the file has both)."""
    path = Path(path)
    ds = _dataset(path)
    index = _pick_group(path, ds)
    group = ds.WaveformSequence[index]
    rate = float(group.get("SamplingFrequency", 0) or 0)
    if not rate > 0:
        raise RecordError(path, f"WaveformSequence[{index}]: SamplingFrequency {group.get('SamplingFrequency')!r} is not a positive rate")
    gains, offsets, units = _scales(path, group, index)
    try:
        raw = multiplex_array(ds, index, as_raw=True)  # [samples, channels]
    except Exception as err:  # truncated WaveformData, unsupported bit depth ...
        raise RecordError(path, f"WaveformSequence[{index}] WaveformData cannot be decoded ({type(err).__name__}: {err})") from None
    if raw.size == 0:
        raise RecordError(path, f"WaveformSequence[{index}] holds no samples")
    signal = (raw.T.astype(np.float64) * gains[:, None] + offsets[:, None]).astype(np.float32)  # [L, n]
    names = [channel_name(channel) for channel in group.ChannelDefinitionSequence]
    statements, measurements = _annotations(ds)
    device = " ".join(str(ds.get(key, "") or "") for key in ("Manufacturer", "ManufacturerModelName")).strip()
    meta = {
        "format": "dicom",
        "device": device or None,
        "sop_class": getattr(ds.get("SOPClassUID"), "name", str(ds.get("SOPClassUID", ""))),
        "group": str(group.get("MultiplexGroupLabel", "") or index),
        "groups": [str(g.get("MultiplexGroupLabel", "") or k) for k, g in enumerate(ds.WaveformSequence)],
        "units": units,
        "statements": statements,
        "measurements": measurements,
        "acquired": str(ds.get("AcquisitionDateTime", "") or ds.get("StudyDate", "")) or None,
    }
    return Recording(
        signal=signal, fs=rate, leads=canonical_leads(names), record_id=path.stem,
        patient_id=str(ds.get("PatientID", "")) or None, age=_age(ds), sex=parse_sex(str(ds.get("PatientSex", ""))),
        labels=statements, source=str(path), raw_leads=names, meta=meta,
    )


def read_dicom_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    return header_from(read_dicom(path))


def iter_dicom_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                      leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """A DICOM waveform is one encoded block: read whole, then sliced."""
    return chunks_from(read_dicom(path), chunk_samples)
