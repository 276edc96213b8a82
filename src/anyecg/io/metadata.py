"""Header metadata: age, sex, labels and patient from the comment lines real WFDB headers carry.

Styles understood (one record may mix them):

- challenge `key: value` lines: `# Age: 78`, `# Sex: Male`, `# Dx: 164889003,426783006` (SNOMED
  codes, kept as strings in `labels`), and PTB's lower-case `# age: 81`, `# sex: female`;
- PhysioNet's `# <age>: 25 <sex>: M <diagnoses>: (none)` (several `<key>: value` pairs on one line);
- MIT-BIH's `# 69 M 1085 1629 x1` (age, sex, then recording details), the first such comment;
- CPSC 2021's single class line (`# paroxysmal atrial fibrillation`, ...), which becomes the label.

Every `key: value` pair is kept in `meta["fields"]` and every comment in `meta["comments"]`, so PTB's
`Reason for admission` (also `meta["diagnosis"]`), `Diagnose`, medication ... are never lost.
Unknown ages ("NaN", "?", "-1", "n/a") are None. Ages of 150 or more are None too: PTB-XL codes
patients over 89 as 300; the raw value stays in `meta["age_raw"]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_AGE = 150.0

# CPSC 2021 class comment -> label (kept as the database spells it).
CPSC2021_CLASSES: tuple[str, ...] = (
    "non atrial fibrillation",
    "paroxysmal atrial fibrillation",
    "persistent atrial fibrillation",
)

# MIT-BIH: "<age> <sex> <gain-ish numbers> x<n>"; age is -1 or "?" when unknown.
_MITDB_FIRST = re.compile(r"^\s*(-?\d+(?:\.\d+)?|\?)\s+([MF?])\b")
_KEY_VALUE = re.compile(r"^\s*([^:]+?)\s*:\s*(.*?)\s*$")
_ANGLE_PAIR = re.compile(r"<([^<>]+)>\s*:\s*([^<]*)")
_CPSC2021_RECORD = re.compile(r"^data_(\d+)_\d+$")
_PTB_PATIENT_FOLDER = re.compile(r"^patient\d+$")
# The MIT-BIH Arrhythmia Database notes that records 201 and 202 come from the same patient.
_MITDB_SAME_PATIENT = {"201": "201", "202": "201"}


@dataclass
class RecordInfo:
    """What a header says about a record, read without loading samples."""

    record_id: str
    fs: float
    n_samples: int
    raw_leads: list[str]  # as the file spells them
    leads: list[str]  # canonical names
    age: float | None = None
    sex: str | None = None  # "M" or "F"
    labels: list[str] = field(default_factory=list)
    patient_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass
class HeaderMeta:
    age: float | None = None
    sex: str | None = None
    labels: list[str] = field(default_factory=list)
    patient_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def parse_age(text: str) -> float | None:
    """Years as a float; None for unknown ("NaN", "?", "-1", "n/a", "") or implausible values."""
    try:
        age = float(text.strip())
    except ValueError:
        return None
    if age != age or age < 0 or age >= MAX_AGE:  # NaN, -1 sentinel, PTB-XL's 300
        return None
    return age


def parse_sex(text: str) -> str | None:
    """"M"/"F" from Male/Female/M/F in any case; None for anything else."""
    value = text.strip().lower()
    if value in ("m", "male"):
        return "M"
    if value in ("f", "female"):
        return "F"
    return None


def parse_codes(text: str) -> list[str]:
    """`164889003,426783006` -> ["164889003", "426783006"] (codes stay strings)."""
    return [code.strip() for code in text.split(",") if code.strip() and code.strip().lower() != "unknown"]


def parse_comments(comments: list[str]) -> HeaderMeta:
    """Age, sex, labels and `meta` from header comment lines (without the leading '#')."""
    out = HeaderMeta()
    fields: dict[str, str] = {}
    lines = [line.strip() for line in comments if line.strip()]
    mitdb_seen = False
    for line in lines:
        pairs = [(key.strip(), value.strip()) for key, value in _ANGLE_PAIR.findall(line)]
        if not pairs and (match := _KEY_VALUE.match(line)) and match.group(2):
            pairs = [(match.group(1), match.group(2))]
        for key, value in pairs:
            if not value:
                continue
            fields[key] = value
            lower = key.lower()
            if lower == "age":
                out.age = parse_age(value)
                out.meta["age_raw"] = value
            elif lower in ("sex", "gender"):
                out.sex = parse_sex(value)
            elif lower == "dx":
                out.labels.extend(code for code in parse_codes(value) if code not in out.labels)
            elif lower == "reason for admission":
                out.meta["diagnosis"] = value
        if pairs:
            continue
        if not mitdb_seen and (mitdb := _MITDB_FIRST.match(line)):
            mitdb_seen = True
            out.age = parse_age(mitdb.group(1))
            out.sex = parse_sex(mitdb.group(2))
            out.meta["age_raw"] = mitdb.group(1)
            continue
        if line.lower() in CPSC2021_CLASSES and line.lower() not in out.labels:
            out.labels.append(line.lower())
    if fields:
        out.meta["fields"] = fields
    if lines:
        out.meta["comments"] = lines
    return out


def patient_id_for(record_id: str, folder: Path | None, comments: list[str] | None = None) -> str | None:
    """The patient a record belongs to where the database says so; None means "use the record id".

    MIT-BIH 201 and 202 -> "201" (only for headers in MIT-BIH comment style); CPSC 2021
    `data_<patient>_<n>` -> `<patient>`; PTB records inside a `patientNNN` folder -> that folder.
    """
    comments = [line.strip() for line in comments or [] if line.strip()]
    if record_id in _MITDB_SAME_PATIENT and any(_MITDB_FIRST.match(line) for line in comments):
        return _MITDB_SAME_PATIENT[record_id]
    if match := _CPSC2021_RECORD.match(record_id):
        return match.group(1)
    if folder is not None and _PTB_PATIENT_FOLDER.match(folder.name):
        return folder.name
    return None


def header_meta(comments: list[str], record_id: str, folder: Path | None) -> HeaderMeta:
    """`parse_comments` plus the patient id."""
    out = parse_comments(comments)
    out.patient_id = patient_id_for(record_id, folder, comments)
    return out


# Physical units -> factor that turns them into millivolts (lower-cased; WFDB's default is mV).
_TO_MV: dict[str, float] = {
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "nv": 1e-6,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
}


def millivolt_factor(units: str | None) -> float | None:
    """Multiplier from `units` to mV; 1.0 for a missing unit (WFDB default mV), None if unknown."""
    if units is None or not units.strip():
        return 1.0
    return _TO_MV.get(units.strip().lower())
