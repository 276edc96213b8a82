"""Canonical lead names, the aliases real headers use, and present-lead masks."""

from __future__ import annotations

import re

import numpy as np

# Index in this tuple is the lead id models embed (the "lead embedding" vocabulary).
CANONICAL_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF",
    "V1", "V2", "V3", "V4", "V5", "V6",
    "X", "Y", "Z",
    "unknown",
)
STANDARD_12: tuple[str, ...] = CANONICAL_LEADS[:12]
LEAD_INDEX: dict[str, int] = {name: i for i, name in enumerate(CANONICAL_LEADS)}
UNKNOWN = "unknown"

# Spellings seen in real headers, lower-cased with spaces, dashes and underscores removed.
_ALIASES: dict[str, str] = {
    "i": "I", "ii": "II", "iii": "III", "avr": "aVR", "avl": "aVL", "avf": "aVF",
    "leadi": "I", "leadii": "II", "leadiii": "III",
    "mli": "I", "mlii": "II", "mliii": "III",  # MIT-BIH "modified limb lead"
    "di": "I", "dii": "II", "diii": "III",  # Portuguese/Spanish naming (CODE)
    "vx": "X", "vy": "Y", "vz": "Z", "x": "X", "y": "Y", "z": "Z",
    "ecg": UNKNOWN, "ecg1": UNKNOWN, "ecg2": UNKNOWN, "": UNKNOWN,
}
for _k in range(1, 7):
    _ALIASES[f"v{_k}"] = f"V{_k}"
    _ALIASES[f"mv{_k}"] = f"V{_k}"  # MIT-BIH modified precordial leads
    _ALIASES[f"lead{_k}"] = UNKNOWN

_STRIP = re.compile(r"[\s\-_'.]+")


def canonical_lead(name: str) -> str:
    """Map a header's lead name to the canonical vocabulary; anything unrecognised is "unknown"."""
    key = _STRIP.sub("", str(name)).lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith("lead") and key[4:] in _ALIASES:
        return _ALIASES[key[4:]]
    return UNKNOWN


def canonical_leads(names: list[str]) -> list[str]:
    return [canonical_lead(n) for n in names]


def lead_ids(leads: list[str]) -> np.ndarray:
    """int64 [len(leads)] indices into CANONICAL_LEADS (names must already be canonical)."""
    try:
        return np.array([LEAD_INDEX[name] for name in leads], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"lead {err.args[0]!r} is not canonical; known: {list(CANONICAL_LEADS)}") from None


def present_mask(leads: list[str], vocabulary: tuple[str, ...] = STANDARD_12) -> np.ndarray:
    """bool [len(vocabulary)]: which leads of `vocabulary` the recording has."""
    have = set(leads)
    return np.array([name in have for name in vocabulary], dtype=bool)
