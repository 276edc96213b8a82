"""Record-level task labels: normal vs abnormal (anomaly detection) and rhythm classes (arrhythmia).

A labelling function maps one record's label list (SNOMED CT codes from CinC headers, CPSC 2021
class names, or a user's own labels from the labels CSV) to one class, or to None when the labels say
nothing about the task; such records are left out and counted, never guessed.
`build_record_labels` applies a labelling function to a whole store manifest.

A training or evaluation example is a `Sample`: a stretch `[start, stop)` (samples at the store's
rate) of the record in manifest row `record`, with its class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

from anyecg.data.store import split_list


class Sample(NamedTuple):
    record: int  # manifest row position
    start: int  # first sample, at the store's rate
    stop: int  # one past the last sample
    label: str


SINUS_RHYTHM = "426783006"
# Codes that may accompany sinus rhythm on an ECG still called normal: respiratory sinus arrhythmia
# is a physiological variant, not a disease. Everything else (axis deviation, atrial enlargement,
# T-wave changes, ...) makes an ECG abnormal.
BENIGN_CODES: frozenset[str] = frozenset({"427393009"})
# The user's own labels for a normal ECG (labels CSV, CODE-15 `normal_ecg`), compared lower-cased.
NORMAL_NAMES: frozenset[str] = frozenset({"normal", "normal_ecg", "n"})
# CPSC 2021 record classes describe only the atrial rhythm, not the whole ECG.
CPSC2021_CLASSES: dict[str, str] = {
    "persistent atrial fibrillation": "AF",
    "paroxysmal atrial fibrillation": "AF",
    "non atrial fibrillation": "non-AF",
}


def _clean(labels: Iterable[str]) -> list[str]:
    return [str(label).strip() for label in labels if str(label).strip()]


def anomaly_label(labels: Iterable[str], benign: frozenset[str] = BENIGN_CODES) -> str | None:
    """"normal" or "abnormal" for one record; None when it cannot be told.

    Rule: a record is "normal" when every label is sinus rhythm (SNOMED 426783006), a benign code
    (`benign`, by default sinus arrhythmia 427393009) or a user label for a normal ECG ("normal",
    "normal_ecg", "N", any case), and at least one of them is sinus rhythm or a normal name (a record
    labelled only "sinus arrhythmia" is normal too). Any other label makes it "abnormal".
    None: no labels at all, or only CPSC 2021 record classes, which speak of the atrial rhythm alone.
    """
    labels = _clean(labels)
    if not labels or all(label.lower() in CPSC2021_CLASSES for label in labels):
        return None
    if all(label == SINUS_RHYTHM or label in benign or label.lower() in NORMAL_NAMES for label in labels):
        return "normal"
    return "abnormal"


# Rhythm classes in priority order: a record with several rhythm labels gets the first that applies.
# Atrial fibrillation/flutter first (it replaces the sinus rhythm), then paced rhythm (the pacemaker
# sets the rhythm), then ectopy, ventricular before atrial (the more serious finding), then the
# sinus rate classes, and plain sinus rhythm last, since it is often listed beside the others.
ARRHYTHMIA_CLASSES: dict[str, frozenset[str]] = {
    "AF": frozenset({
        "164889003",  # atrial fibrillation
        "164890007",  # atrial flutter
        "195080001",  # atrial fibrillation and flutter
        "426749004",  # chronic atrial fibrillation
        "282825002",  # paroxysmal atrial fibrillation
        "314208002",  # rapid atrial fibrillation
        "persistent atrial fibrillation", "paroxysmal atrial fibrillation",  # CPSC 2021
        "af", "afib", "afl",  # user labels, CODE-15 `AF`
    }),
    "Paced": frozenset({"10370003", "251268003", "251266004", "paced"}),  # pacing rhythm, atrial / ventricular pacing pattern
    "PVC": frozenset({"427172004", "17338001", "pvc"}),  # premature ventricular contractions, ventricular premature beats
    "PAC": frozenset({"284470004", "63593006", "pac"}),  # premature atrial contraction, supraventricular premature beats
    "STach": frozenset({"427084000", "stach", "st"}),  # sinus tachycardia (CODE-15 calls it `ST`)
    "SB": frozenset({"426177001", "sb"}),  # sinus bradycardia
    "SA": frozenset({"427393009", "sa"}),  # sinus arrhythmia
    "SR": frozenset({SINUS_RHYTHM, "sr", "nsr", "normal_ecg"}),  # a normal ECG is in sinus rhythm
    "non-AF": frozenset({"non atrial fibrillation"}),  # CPSC 2021: no AF in the record
}


def arrhythmia_label(labels: Iterable[str]) -> str | None:
    """The record's rhythm class, by the priority order of `ARRHYTHMIA_CLASSES`; None without one.

    AF > Paced > PVC > PAC > STach > SB > SA > SR > non-AF. SNOMED codes, CPSC 2021 class names and
    user labels (compared lower-cased) are recognised; labels that name no rhythm (bundle branch
    blocks, axis deviation, ...) are ignored, so a record with only those gets None.
    """
    present = {label.lower() for label in _clean(labels)}
    for name, members in ARRHYTHMIA_CLASSES.items():
        if present & members:
            return name
    return None


@dataclass
class LabelSet:
    """Per-record classes of a manifest under one labelling function.

    `labels` maps manifest row position to class for labelled records; `unlabelled` lists the rows
    the function returned None for. `counts[split][class]` counts labelled records; `rare` names each
    class with fewer than `min_count` records in some split that has labelled records, with its
    per-split counts, for the caller to merge, drop or accept.
    """

    labels: dict[int, str]
    classes: list[str]
    unlabelled: list[int]
    counts: dict[str, dict[str, int]]
    min_count: int
    rare: dict[str, dict[str, int]] = field(default_factory=dict)

    def class_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def samples(self, manifest: pd.DataFrame, split: str | None = None) -> list[Sample]:
        """Whole-record samples of the labelled records, of one split or all."""
        out = []
        for row, label in sorted(self.labels.items()):
            item = manifest.iloc[row]
            if split is None or item["split"] == split:
                out.append(Sample(row, 0, int(item["n_samples"]), label))
        return out


def build_record_labels(
    manifest: pd.DataFrame, fn: Callable[[list[str]], str | None], min_count: int = 10
) -> LabelSet:
    """Apply `fn` to every manifest row's ';'-joined `labels`; count classes per split."""
    labels: dict[int, str] = {}
    unlabelled: list[int] = []
    for row, value in enumerate(manifest["labels"].tolist()):
        label = fn(split_list(value))
        if label is None:
            unlabelled.append(row)
        else:
            labels[row] = label
    classes = sorted(set(labels.values()))
    splits = manifest["split"].astype(str).tolist()
    counts: dict[str, dict[str, int]] = {}
    for row, label in labels.items():
        per_class = counts.setdefault(splits[row], dict.fromkeys(classes, 0))
        per_class[label] += 1
    counts = dict(sorted(counts.items()))
    rare = {
        name: {split: per_class[name] for split, per_class in counts.items()}
        for name in classes
        if any(per_class[name] < min_count for per_class in counts.values())
    }
    return LabelSet(labels=labels, classes=classes, unlabelled=unlabelled, counts=counts, min_count=min_count, rare=rare)
