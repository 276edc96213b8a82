"""Philips Sierra / PageWriter / IntelliSpace ECG XML (`<restingecgdata>`, SierraECG 1.03 and
PhilipsECG 1.04.x).

The 12 leads are one base64 block in `<parsedwaveforms>`, usually XLI-compressed (LZW plus delta
coding, with III, aVR, aVL and aVF stored as residuals of I and II). Decoding is left to the `sierraecg`
library, the maintained reader of this format; samples are scaled by the signal resolution
(`signalresolution` in 1.03, `resolution` in 1.04, uV per unit). The rate is `samplingrate`, the
length `durationperchannel` (ms). Carts end the strip with a calibration block, the same in every
lead (flat, then a 0.2 s 1 mV pulse); it is not ECG, so it is cut off and its pulse height is kept in
`meta["calibration_mv"]` (with the number of samples cut in `meta["calibration_samples"]`).

Labels are the machine's interpretation statements as printed (`<statement><leftstatement>`, else
the coded `lhsstatement` of 1.04); their reasons and the overall severity (`- ABNORMAL ECG -`) are kept in `meta`.
"""

from __future__ import annotations

import binascii
from pathlib import Path
from xml.etree.ElementTree import Element

import numpy as np

from anyecg.io.metadata import parse_age, parse_sex
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

COMPRESSIONS = ("XLI", "Uncompressed")


def _text(element: Element | None, path: str) -> str:
    return (element.findtext(path) or "").strip() if element is not None else ""


def _positive(path: Path, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecordError(path, f"{field} {text!r} is not a number") from None
    if not np.isfinite(value) or value <= 0:
        raise RecordError(path, f"{field} {text!r} must be a positive number")
    return value


def _check_waveforms(path: Path, root: Element) -> Element:
    waveforms = root.find("waveforms/parsedwaveforms")
    if waveforms is None:
        raise RecordError(path, "Philips XML has no <waveforms><parsedwaveforms> (no waveform)")
    encoding = waveforms.get("dataencoding", "")
    if encoding != "Base64":
        raise RecordError(path, f"parsedwaveforms dataencoding {encoding!r} is not supported (Base64)")
    compression = waveforms.get("compressmethod") or waveforms.get("compression") or "Uncompressed"
    if compression not in COMPRESSIONS:
        raise RecordError(path, f"parsedwaveforms compression {compression!r} is unknown (supported: {', '.join(COMPRESSIONS)})")
    if not "".join((waveforms.text or "").split()):
        raise RecordError(path, "parsedwaveforms holds no data")
    return waveforms


def _decode(path: Path) -> list[tuple[str, np.ndarray]]:
    """(lead label, int samples) per lead as sierraecg decodes them (III, aVR, aVL, aVF reconstructed)."""
    from sierraecg import read_file
    from sierraecg.lib import MissingXmlAttributeError, MissingXmlElementError, UnsupportedXmlFileError

    try:
        ecg = read_file(str(path))
    except (UnsupportedXmlFileError, MissingXmlElementError, MissingXmlAttributeError) as err:
        raise RecordError(path, f"Philips XML: {err}") from None
    except (binascii.Error, ValueError, IndexError, KeyError, TypeError) as err:  # damaged base64 or XLI stream
        raise RecordError(path, f"parsedwaveforms cannot be decoded ({type(err).__name__}: {err})") from None
    return [(lead.label, np.asarray(lead.samples)) for lead in ecg.leads]


def _split_calibration(signal: np.ndarray, fs: float) -> tuple[np.ndarray, int, float | None]:
    """(ECG part, samples cut, pulse height in mV): the trailing run where all leads are equal, when
    it lasts at least 0.1 s; an ECG never has every lead equal for that long."""
    equal = np.all(signal == signal[:1], axis=0)  # [n]
    start = len(equal)
    while start > 0 and equal[start - 1]:
        start -= 1
    if len(equal) - start < 0.1 * fs or start == 0:
        return signal, 0, None
    block = signal[0, start:]
    return signal[:, :start], len(block), float(block.max() - block.min())


def _statements(root: Element) -> tuple[list[str], list[dict[str, str]], str | None]:
    """(statement texts, statements with their reasons, severity)."""
    interpretation = root.find("interpretations/interpretation")
    if interpretation is None:
        return [], [], None
    # the rendered statements (with their modifiers: "PROBABLE ..."); else the coded ones of 1.04
    found = [(_text(item, "leftstatement"), _text(item, "rightstatement")) for item in interpretation.findall("statement")]
    if not found:
        found = [(_text(item, "lhsstatement"), _text(item, "rhsstatement")) for item in interpretation.iter("unparsedstatement")]
    found = [(text, reason) for text, reason in found if text]
    severity = _text(interpretation, "severity").strip("- ").strip() or None
    return [text for text, _ in found], [{"statement": t, "reason": r} for t, r in found], severity


def _age(patient: Element | None, acquired: str) -> float | None:
    years = _text(patient, "age/years")
    if years:
        return parse_age(years)
    birth = _text(patient, "age/dateofbirth")
    if len(birth) >= 10 and len(acquired) >= 10:
        try:
            born, taken = (int(birth[:4]), birth[5:10]), (int(acquired[:4]), acquired[5:10])
        except ValueError:
            return None
        return parse_age(str(taken[0] - born[0] - (taken[1] < born[1])))
    return None


def read_philips(path: Path, root: Element) -> Recording:
    """The 12-lead strip of a parsed Philips XML document (see module docstring)."""
    waveforms = _check_waveforms(path, root)
    signal_info = root.find("dataacquisition/signalcharacteristics")
    resolution_text = _text(signal_info, "signalresolution") or _text(signal_info, "resolution") or waveforms.get("resolution", "")
    resolution_uv = _positive(path, "signalcharacteristics resolution (uV per unit)", resolution_text)
    fs = _positive(path, "signalcharacteristics samplingrate", _text(signal_info, "samplingrate"))
    duration_ms = _positive(path, "parsedwaveforms durationperchannel", waveforms.get("durationperchannel", ""))
    expected = int(round(duration_ms * fs / 1000))
    leads = _decode(path)
    for label, samples in leads:
        if len(samples) != expected:
            raise RecordError(path, f"parsedwaveforms lead {label}: {len(samples)} samples, but durationperchannel "
                                    f"{duration_ms:g} ms at {fs:g} Hz needs {expected} (damaged or truncated data)")
    names = [label for label, _ in leads]
    signal = np.stack([samples.astype(np.float64) for _, samples in leads]) * (resolution_uv / 1000)  # uV -> mV
    signal, cut, pulse_mv = _split_calibration(signal, fs)
    acquisition = root.find("dataacquisition")
    acquired = " ".join(filter(None, [acquisition.get("date", ""), acquisition.get("time", "")])) if acquisition is not None else ""
    patient = root.find("patient/generalpatientdata")
    statements, reasons, severity = _statements(root)
    machine = _text(acquisition, "machine")
    meta = {
        "format": "philips_xml",
        "device": f"Philips {machine}".strip(),
        "document": " ".join(filter(None, [_text(root, "documentinfo/documenttype"), _text(root, "documentinfo/documentversion")])),
        "units": ["mV"] * len(names),
        "resolution_uv": resolution_uv,
        "compression": waveforms.get("compressmethod") or waveforms.get("compression") or "Uncompressed",
        "calibration_mv": pulse_mv,
        "calibration_samples": cut,
        "statements": reasons,
        "severity": severity,
        "acquired": acquired or None,
    }
    return Recording(
        signal=signal.astype(np.float32), fs=fs, leads=canonical_leads(names), record_id=path.stem,
        patient_id=_text(patient, "patientid") or None, age=_age(patient, acquired),
        sex=parse_sex(_text(patient, "sex")), labels=statements, source=str(path), raw_leads=names, meta=meta,
    )
