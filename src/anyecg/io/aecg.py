"""HL7 aECG (the FDA annotated ECG, HL7 v3 `<AnnotatedECG>`).

The recording is the RHYTHM `<series>` (else the first one); its `<sequenceSet>` holds one time
sequence (`TIME_ABSOLUTE` / `TIME_RELATIVE`, whose `<increment>` gives the sampling interval) and one
`SLIST_PQ` sequence per lead, `value = origin + scale * digit` in the units of `origin` and `scale`
(uV or mV). Representative beats (`derivedSeries`) are not the recording. Lead codes
`MDC_ECG_LEAD_AVR` ... become canonical names.

Labels are the machine's statements: `MDC_ECG_INTERPRETATION_STATEMENT` / `_SUMMARY` texts and rhythm
(`MDC_ECG_RHY`) annotations of the series. Age is the reported age (LOINC 21612-7) when present,
else the years between `birthTime` and the ECG's time; sex is `administrativeGenderCode`.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from anyecg.io.metadata import millivolt_factor, parse_age, parse_sex
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_LEAD_PREFIX = "MDC_ECG_LEAD_"
_TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_STATEMENT_CODES = ("MDC_ECG_INTERPRETATION_STATEMENT", "MDC_ECG_INTERPRETATION_SUMMARY")
_REPORTED_AGE = "21612-7"
_AGE_UNITS = {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25}


def _code(element: Element | None) -> str:
    found = element.find("code") if element is not None else None
    return found.get("code", "") if found is not None else ""


def _quantity(path: Path, where: str, element: Element | None, field: str) -> float:
    """A physical quantity's value in mV (voltages) as the element's unit says."""
    if element is None:
        raise RecordError(path, f"{where}: <{field}> is missing")
    unit = element.get("unit", "")
    factor = millivolt_factor(unit)
    if factor is None or not unit:
        raise RecordError(path, f"{where}: <{field}> unit {unit!r} is not a voltage unit (uV, mV, V)")
    try:
        value = float(element.get("value", ""))
    except ValueError:
        raise RecordError(path, f"{where}: <{field}> value {element.get('value')!r} is not a number") from None
    if not np.isfinite(value):
        raise RecordError(path, f"{where}: <{field}> value {element.get('value')!r} is not finite")
    return value * factor


def _rhythm_series(path: Path, root: Element) -> Element:
    series = root.findall("component/series")
    if not series:
        raise RecordError(path, "aECG has no <component><series> (no waveform)")
    return next((item for item in series if _code(item) == "RHYTHM"), series[0])


def _interval(path: Path, sequence: Element) -> float:
    increment = sequence.find("value/increment")
    if increment is None:
        raise RecordError(path, f"{_code(sequence)} sequence: <increment> (sampling interval) is missing")
    unit = increment.get("unit", "s")
    try:
        seconds = float(increment.get("value", "")) * _SECONDS[unit]
    except (ValueError, KeyError):
        raise RecordError(path, f"{_code(sequence)} sequence: <increment> {increment.get('value')!r} {unit!r} "
                                "is not a time interval (s, ms)") from None
    if not seconds > 0:
        raise RecordError(path, f"{_code(sequence)} sequence: <increment> {seconds:g} s is not a positive interval")
    return seconds


def _lead(path: Path, sequence: Element) -> np.ndarray:
    code = _code(sequence)
    value = sequence.find("value")
    kind = value.get(_XSI_TYPE, "") if value is not None else ""
    if kind.split(":")[-1] != "SLIST_PQ":
        raise RecordError(path, f"{code} sequence: value type {kind!r} is not supported (SLIST_PQ)")
    origin = _quantity(path, f"{code} sequence", value.find("origin"), "origin")
    scale = _quantity(path, f"{code} sequence", value.find("scale"), "scale")
    if scale == 0:
        raise RecordError(path, f"{code} sequence: <scale> is 0")
    text = (value.findtext("digits") or "").split()
    if not text:
        raise RecordError(path, f"{code} sequence: <digits> is empty")
    try:
        digits = np.array(text, dtype=np.float64)
    except ValueError as err:
        raise RecordError(path, f"{code} sequence: <digits> holds a non-number ({err})") from None
    return origin + scale * digits


def _statements(series: Element) -> tuple[list[str], list[str]]:
    """(machine statements and rhythm, comments) from the series' own annotation sets."""
    statements, comments = [], []
    for annotation_set in series.findall("subjectOf/annotationSet"):
        for annotation in annotation_set.iter("annotation"):
            code, value = _code(annotation), annotation.find("value")
            if value is None:
                continue
            text = (value.text or "").strip() if code != "MDC_ECG_RHY" else value.get("displayName") or value.get("code", "")
            if not text:
                continue
            if (code in _STATEMENT_CODES or code == "MDC_ECG_RHY") and text not in statements:
                statements.append(text)
            elif code == "MDC_ECG_INTERPRETATION_COMMENT":
                comments.append(text)
    return statements, comments


def _age(root: Element, person: Element | None, taken: str) -> float | None:
    for observation in root.iter("relatedObservation"):
        value = observation.find("value")
        if _code(observation) == _REPORTED_AGE and value is not None and value.get("unit", "a") in _AGE_UNITS:
            try:
                return parse_age(str(round(float(value.get("value", "")) * _AGE_UNITS[value.get("unit", "a")], 2)))
            except ValueError:
                return None
    birth = person.find("birthTime").get("value", "") if person is not None and person.find("birthTime") is not None else ""
    if len(birth) >= 8 and len(taken) >= 8 and birth[:8].isdigit() and taken[:8].isdigit():
        return parse_age(str(int(taken[:4]) - int(birth[:4]) - (taken[4:8] < birth[4:8])))
    return None


def read_aecg(path: Path, root: Element) -> Recording:
    """The rhythm series of a parsed aECG document (see module docstring)."""
    series = _rhythm_series(path, root)
    sequences = series.findall("component/sequenceSet/component/sequence")
    times = [s for s in sequences if _code(s) in _TIME_CODES]
    if not times:
        raise RecordError(path, "RHYTHM sequenceSet has no TIME_ABSOLUTE/TIME_RELATIVE sequence (no sampling rate)")
    fs = 1.0 / _interval(path, times[0])
    fs = float(round(fs)) if abs(fs - round(fs)) < 1e-6 * fs else fs  # 0.002 s -> 500 Hz, not 499.99...
    channels = [s for s in sequences if _code(s) not in _TIME_CODES]
    if not channels:
        raise RecordError(path, "RHYTHM sequenceSet has no lead sequences")
    samples = [_lead(path, sequence) for sequence in channels]
    names = [_code(sequence).removeprefix(_LEAD_PREFIX) for sequence in channels]
    lengths = {name: len(lead) for name, lead in zip(names, samples)}
    if len(set(lengths.values())) != 1:
        raise RecordError(path, f"lead sequences differ in length {lengths}; one record needs one length")
    person = next(root.iter("subjectDemographicPerson"), None)
    subject = next(root.iter("trialSubject"), None)
    subject_id = subject.find("id") if subject is not None else None
    gender = person.find("administrativeGenderCode") if person is not None else None
    taken = times[0].find("value/head").get("value", "") if times[0].find("value/head") is not None else ""
    statements, comments = _statements(series)
    device = series.find("author/seriesAuthor")
    maker = device.findtext("manufacturerOrganization/name", "").strip() if device is not None else ""
    model = device.findtext("manufacturedSeriesDevice/manufacturerModelName", "").strip() if device is not None else ""
    meta = {
        "format": "hl7_aecg",
        "device": " ".join(filter(None, [maker, model])) or None,
        "units": ["mV"] * len(names),
        "statements": statements,
        "comments": comments,
        "series": _code(series),
        "acquired": taken or None,
    }
    return Recording(
        signal=np.stack(samples).astype(np.float32), fs=fs, leads=canonical_leads(names), record_id=path.stem,
        patient_id=(subject_id.get("extension") if subject_id is not None else None) or None,
        age=_age(root, person, taken), sex=parse_sex(gender.get("code", "") if gender is not None else ""),
        labels=list(statements), source=str(path), raw_leads=names, meta=meta,
    )
