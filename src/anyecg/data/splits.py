"""Seeded, stratified, patient-level train/val/test splits.

No patient appears in two splits: recordings of one person are correlated, and a split that
shares patients between train and test overstates every metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def _stratum(labels: list[str], frequency: dict[str, int]) -> str:
    """A multi-label record is stratified by its rarest label; unlabelled records form one stratum."""
    if not labels:
        return "<none>"
    return min(labels, key=lambda label: (frequency[label], label))


def patient_split(
    patients: list[str],
    labels: list[list[str]],
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> list[str]:
    """Assign each record a split so that whole patients move together.

    Patients are ordered by the stratum of their records (the rarest label any of their records
    carries), shuffled with `seed` inside each stratum, and dealt one by one to the split furthest
    below its target share of the records dealt so far. Consecutive patients of one stratum thus
    spread over the splits in proportion, and so do all records together, even for tiny data sets.
    Deterministic for a given input and seed.
    """
    if len(patients) != len(labels):
        raise ValueError(f"{len(patients)} patient ids but {len(labels)} label lists")
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")

    frequency: dict[str, int] = {}
    for record_labels in labels:
        for label in record_labels:
            frequency[label] = frequency.get(label, 0) + 1

    records = pd.DataFrame({"patient": patients, "stratum": [_stratum(l, frequency) for l in labels]})
    rarest = lambda strata: min(strata, key=lambda s: (frequency.get(s, 0), s))  # noqa: E731
    by_patient = records.groupby("patient", sort=True).agg(n=("stratum", "size"), stratum=("stratum", rarest))

    rng = np.random.default_rng(seed)
    by_patient["shuffle"] = rng.permutation(len(by_patient))
    by_patient["rarity"] = by_patient["stratum"].map(lambda s: frequency.get(s, 0))
    ordered = by_patient.sort_values(["rarity", "stratum", "shuffle"])

    targets = np.asarray(fractions, dtype=float)
    counts = np.zeros(len(SPLITS))
    assignment: dict[str, str] = {}
    for patient, n in zip(ordered.index, ordered["n"].to_numpy()):
        deficit = targets * (counts.sum() + n) - counts
        choice = int(np.argmax(deficit))
        assignment[patient] = SPLITS[choice]
        counts[choice] += n
    return [assignment[p] for p in patients]
