"""GE MUSE resting ECG XML (`<RestingECG>`), as MUSE and MAC carts export it.

Each `<Waveform>` (`Median` beat or `Rhythm` strip) holds one `<LeadData>` per stored lead: base64
little-endian integers (`LeadSampleSize` bytes each) in `WaveFormData`, scaled by
`LeadAmplitudeUnitsPerBit` in `LeadAmplitudeUnits` (MICROVOLTS on every cart seen). The recording is
the rhythm strip at `SampleBase * 10**SampleExponent` Hz. Carts store 8 leads (I, II, V1-V6); III, aVR,
aVL and aVF are derived (Einthoven, Goldberger) and listed in `meta["derived_leads"]`.

Each lead's bytes are checked against `LeadByteCountTotal` and, when present, `LeadDataCRC32`, so a
truncated or damaged block is an error rather than a short lead. Labels are the interpretation
statements (`Diagnosis`, else `OriginalDiagnosis`); a statement's lines run until the `ENDSLINE` flag.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from anyecg.io.clinical import derive_limb_leads
from anyecg.io.metadata import millivolt_factor, parse_age, parse_sex
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

_UNITS = {"MICROVOLTS": "uV", "MILLIVOLTS": "mV", "VOLTS": "V"}
_AGE_UNITS = {"YEARS": 1.0, "MONTHS": 1 / 12, "WEEKS": 7 / 365.25, "DAYS": 1 / 365.25, "HOURS": 1 / 8766}
_SAMPLE_TYPES = {1: np.dtype("<i1"), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


def _text(element: Element | None, tag: str) -> str:
    found = element.find(tag) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def _number(path: Path, where: str, element: Element, tag: str) -> float:
    text = _text(element, tag)
    try:
        value = float(text)
    except ValueError:
        raise RecordError(path, f"{where}: {tag} {text!r} is not a number") from None
    if not np.isfinite(value):
        raise RecordError(path, f"{where}: {tag} {text!r} is not a finite number")
    return value


def _rhythm(path: Path, root: Element) -> Element:
    waveforms = root.findall("Waveform")
    for waveform in waveforms:
        if _text(waveform, "WaveformType").lower() == "rhythm":
            return waveform
    kinds = [_text(waveform, "WaveformType") for waveform in waveforms]
    raise RecordError(path, f"no Rhythm <Waveform> in the MUSE file (found {kinds or 'none'})")


def _lead(path: Path, lead: Element) -> tuple[str, np.ndarray, str]:
    """(lead name, samples in mV, units as written) of one <LeadData>."""
    name = _text(lead, "LeadID")
    where = f"Rhythm lead {name or '?'}"
    encoded = _text(lead, "WaveFormData")
    if not encoded:
        raise RecordError(path, f"{where}: WaveFormData is empty")
    try:
        data = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise RecordError(path, f"{where}: WaveFormData is not valid base64 ({err})") from None
    expected_bytes = _text(lead, "LeadByteCountTotal")
    if expected_bytes and expected_bytes.isdigit() and len(data) != int(expected_bytes):
        raise RecordError(path, f"{where}: WaveFormData decodes to {len(data)} bytes, LeadByteCountTotal says {expected_bytes}")
    crc = _text(lead, "LeadDataCRC32")
    if crc.isdigit() and zlib.crc32(data) != int(crc):
        raise RecordError(path, f"{where}: WaveFormData does not match its LeadDataCRC32 (damaged data)")
    size = int(_number(path, where, lead, "LeadSampleSize")) if _text(lead, "LeadSampleSize") else 2
    if size not in _SAMPLE_TYPES or len(data) % size:
        raise RecordError(path, f"{where}: LeadSampleSize {size} does not divide the {len(data)} data bytes")
    per_bit = _number(path, where, lead, "LeadAmplitudeUnitsPerBit")
    if per_bit <= 0:
        raise RecordError(path, f"{where}: LeadAmplitudeUnitsPerBit {per_bit:g} must be positive")
    written = _text(lead, "LeadAmplitudeUnits")
    factor = millivolt_factor(_UNITS.get(written.upper(), written)) if written else None
    if factor is None:
        raise RecordError(path, f"{where}: LeadAmplitudeUnits {written!r} is not a voltage unit (MICROVOLTS, MILLIVOLTS)")
    samples = np.frombuffer(data, dtype=_SAMPLE_TYPES[size]).astype(np.float64) * (per_bit * factor)
    return name, samples, written


def _statements(root: Element) -> list[str]:
    diagnosis = root.find("Diagnosis")
    if diagnosis is None or diagnosis.find("DiagnosisStatement") is None:
        diagnosis = root.find("OriginalDiagnosis")
    statements, current = [], []
    for item in diagnosis.findall("DiagnosisStatement") if diagnosis is not None else []:
        if text := _text(item, "StmtText"):
            current.append(text)
        if any((flag.text or "").strip().upper() == "ENDSLINE" for flag in item.findall("StmtFlag")) and current:
            statements.append(" ".join(current))
            current = []
    if current:
        statements.append(" ".join(current))
    return statements


def _age(patient: Element | None) -> float | None:
    text = _text(patient, "PatientAge")
    unit = _AGE_UNITS.get(_text(patient, "AgeUnits").upper() or "YEARS")
    try:
        return parse_age(str(round(float(text) * unit, 2))) if text and unit else None
    except ValueError:
        return None


def read_muse(path: Path, root: Element) -> Recording:
    """The rhythm strip of a parsed MUSE document (see module docstring)."""
    waveform = _rhythm(path, root)
    base = _number(path, "Rhythm waveform", waveform, "SampleBase")
    exponent = _number(path, "Rhythm waveform", waveform, "SampleExponent") if _text(waveform, "SampleExponent") else 0.0
    fs = base * 10**exponent
    if fs <= 0:
        raise RecordError(path, f"Rhythm waveform: SampleBase {fs:g} is not a positive rate")
    leads = [_lead(path, lead) for lead in waveform.findall("LeadData")]
    if not leads:
        raise RecordError(path, "Rhythm waveform has no LeadData")
    lengths = {name: len(samples) for name, samples, _ in leads}
    if len(set(lengths.values())) != 1:
        raise RecordError(path, f"Rhythm leads differ in length {lengths}; one record needs one length")
    names = [name for name, _, _ in leads]
    signal, canonical, raw_names, derived = derive_limb_leads(
        np.stack([samples for _, samples, _ in leads]), canonical_leads(names), names)
    patient, test = root.find("PatientDemographics"), root.find("TestDemographics")
    measurements = root.find("RestingECGMeasurements")
    cart, muse_version = _text(test, "AcquisitionDevice"), _text(root.find("MuseInfo"), "MuseVersion")
    meta = {
        "format": "muse_xml",
        "device": ", ".join(filter(None, [f"GE {cart}".strip(), f"MUSE {muse_version}" if muse_version else ""])),
        "units": ["mV"] * len(canonical),
        "stored_units": sorted({units for _, _, units in leads}),
        "derived_leads": derived,
        "statements": _statements(root),
        "waveforms": [_text(w, "WaveformType") for w in root.findall("Waveform")],
        "acquired": " ".join(filter(None, [_text(test, "AcquisitionDate"), _text(test, "AcquisitionTime")])) or None,
        "measurements": {child.tag: (child.text or "").strip() for child in measurements} if measurements is not None else {},
    }
    return Recording(
        signal=signal.astype(np.float32), fs=float(fs), leads=canonical, record_id=path.stem,
        patient_id=_text(patient, "PatientID") or None, age=_age(patient), sex=parse_sex(_text(patient, "Gender")),
        labels=list(meta["statements"]), source=str(path), raw_leads=raw_names, meta=meta,
    )
