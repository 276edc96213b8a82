"""Multi-label targets from a store's labels, and fixed windows for supervised models.

`build_vocabulary` turns the manifest's `labels` column (';'-joined codes, SNOMED CT for the
challenge databases) into a class list. A class seen in fewer than `min_count` records is left
out and returned in a dict with its count, so the caller can report it; `encode` gives a record's
multi-hot vector, ignoring labels outside the vocabulary. `MultiLabelWindows` yields windows of a
store in a fixed-input model's signal contract (e.g. 10 s, 500 Hz, 12 lead slots for ECGFounder)
with their targets; `collate_multilabel` stacks them into the batch dict those models train on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from anyecg.data.store import Store, split_list
from anyecg.models.contract import SignalContract, to_model_input


@dataclass(frozen=True)
class MultiLabelTarget:
    """The class vocabulary of a multi-label task, with the counts it was built from."""

    classes: tuple[str, ...]  # sorted label codes; index = output unit
    counts: tuple[int, ...]  # records carrying each class
    n_records: int  # records counted

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct, got {list(self.classes)}")
        if len(self.counts) != len(self.classes):
            raise ValueError(f"{len(self.counts)} counts for {len(self.classes)} classes")
        if any(c < 0 or c > self.n_records for c in self.counts):
            raise ValueError(f"counts {list(self.counts)} must lie in [0, n_records={self.n_records}]")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            raise KeyError(f"label {label!r} is not in the vocabulary of {self.num_classes} classes") from None

    def encode(self, labels: Iterable[str]) -> np.ndarray:
        """float32 [K] multi-hot; labels outside the vocabulary are ignored."""
        positions = {name: i for i, name in enumerate(self.classes)}
        vector = np.zeros(self.num_classes, dtype=np.float32)
        for label in labels:
            if label in positions:
                vector[positions[label]] = 1.0
        return vector

    def decode(self, vector: np.ndarray | Sequence[float], threshold: float = 0.5) -> list[str]:
        """Classes whose score in `vector [K]` reaches `threshold`."""
        vector = np.asarray(vector)
        if vector.shape != (self.num_classes,):
            raise ValueError(f"vector shape {vector.shape} does not match {self.num_classes} classes")
        return [name for name, score in zip(self.classes, vector) if score >= threshold]

    def pos_weight(self, max_weight: float | None = None) -> np.ndarray:
        """float32 [K]: negatives / positives per class (BCE pos_weight), capped at `max_weight`."""
        counts = np.asarray(self.counts, dtype=np.float64)
        weights = (self.n_records - counts) / np.maximum(counts, 1.0)
        if max_weight is not None:
            weights = np.minimum(weights, max_weight)
        return weights.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "counts": list(self.counts), "n_records": self.n_records}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "MultiLabelTarget":
        return cls(tuple(values["classes"]), tuple(int(c) for c in values["counts"]), int(values["n_records"]))


def build_vocabulary(
    manifest: pd.DataFrame, *, min_count: int = 1, splits: Sequence[str] | None = None
) -> tuple[MultiLabelTarget, dict[str, int]]:
    """(vocabulary, {label: count} of the classes below `min_count`) from a manifest's `labels`.

    A label counts once per record. `splits` restricts the counting to those splits (e.g.
    `["train"]`, so validation records do not decide the classes).
    """
    if "labels" not in manifest.columns:
        raise ValueError(f"manifest has no 'labels' column; columns: {list(manifest.columns)}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    rows = manifest
    if splits is not None:
        if "split" not in manifest.columns:
            raise ValueError(f"splits {list(splits)} requested but the manifest has no 'split' column")
        rows = manifest[manifest["split"].isin(list(splits))]
    counts = Counter(label for value in rows["labels"] for label in set(split_list(value)))
    kept = sorted(label for label, count in counts.items() if count >= min_count)
    below = {label: count for label, count in sorted(counts.items()) if count < min_count}
    target = MultiLabelTarget(tuple(kept), tuple(counts[label] for label in kept), int(len(rows)))
    return target, below


def encode_manifest(manifest: pd.DataFrame, target: MultiLabelTarget) -> np.ndarray:
    """float32 [N, K]: the multi-hot targets of every manifest row."""
    if not len(manifest):
        return np.zeros((0, target.num_classes), dtype=np.float32)
    return np.stack([target.encode(split_list(value)) for value in manifest["labels"]])


@dataclass
class FixedWindow:
    position: int  # index into the dataset's records (and targets)
    record: int  # row of the store manifest
    start: int  # first sample, at the store's rate


class MultiLabelWindows(Dataset):
    """Windows of a store in a model's signal contract, with multi-hot targets.

    A window spans `contract.window_s` seconds of the stored signal (z-scored per lead at the
    store's rate) and goes through `to_model_input`: leads placed in the contract's slots, rate
    converted to `contract.fs`, shorter records zero-padded. `random_crop=True` (training): one
    window per record at a fresh random start each epoch (seeded by seed, epoch and index).
    `random_crop=False` (evaluation): every record tiled into consecutive windows; a last piece
    shorter than half a window is dropped unless it is the record's only one.

    Records sharing no lead with the contract cannot be placed; they are left out and listed in
    `excluded` ({record_id: reason}).
    """

    def __init__(
        self,
        store: Store,
        target: MultiLabelTarget,
        contract: SignalContract,
        split: str | None = None,
        *,
        random_crop: bool = True,
        seed: int = 0,
    ):
        self.store = store
        self.target = target
        self.contract = contract
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0
        self.store_fs = float(store.recipe.target_fs)
        self.window_samples = int(round(contract.window_s * self.store_fs))  # at the store's rate
        manifest = store.manifest
        self.excluded: dict[str, str] = {}
        candidates = np.arange(len(manifest)) if split is None else np.flatnonzero(manifest["split"].to_numpy() == split)
        wanted, rows = set(contract.leads), []
        for row, record_id, leads in zip(
            candidates, manifest["record_id"].to_numpy()[candidates], manifest["leads"].to_numpy()[candidates]
        ):
            names = split_list(leads)
            if wanted & set(names):
                rows.append(int(row))
            else:
                self.excluded[str(record_id)] = f"leads {names} share none with the model's {list(contract.leads)}"
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = encode_manifest(manifest.iloc[self.rows], target)  # [N, K]
        self.windows = [] if random_crop else [w for i in range(len(self.rows)) for w in self._tiles(i)]

    def _length(self, position: int) -> int:
        return self.store.n_samples(int(self.rows[position]))

    def _tiles(self, position: int) -> list[tuple[int, int]]:
        """(position in self.rows, start) of each evaluation window of one record."""
        length, size = self._length(position), self.window_samples
        starts = list(range(0, max(length, 1), size))
        if len(starts) > 1 and length - starts[-1] < size / 2:
            starts.pop()
        return [(position, start) for start in starts]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows) if self.random_crop else len(self.windows)

    def window(self, index: int) -> FixedWindow:
        if not self.random_crop:
            position, start = self.windows[index]
            return FixedWindow(position, int(self.rows[position]), start)
        slack = max(0, self._length(index) - self.window_samples)
        start = int(np.random.default_rng([self.seed, self.epoch, index]).integers(slack + 1))
        return FixedWindow(index, int(self.rows[index]), start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.window(index)
        signal = self.store.signal(ref.record, start=ref.start, stop=ref.start + self.window_samples)  # [L, T_src]
        leads = self.store.leads(ref.record)
        x, lead_mask = to_model_input(signal, self.store_fs, leads, self.contract)  # [C, T], [C]
        return {
            "x": torch.from_numpy(x),
            "lead_mask": torch.from_numpy(lead_mask),
            "targets": torch.from_numpy(self.targets[ref.position]),
            "record": ref.record,
            "start": ref.start,
        }


def collate_multilabel(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack windows: `x [B, C, T]`, `lead_mask [B, C]`, `targets [B, K]`, `record [B]`, `start [B]`."""
    return {
        "x": torch.stack([item["x"] for item in items]),
        "lead_mask": torch.stack([item["lead_mask"] for item in items]),
        "targets": torch.stack([item["targets"] for item in items]),
        "record": torch.tensor([item["record"] for item in items], dtype=torch.long),
        "start": torch.tensor([item["start"] for item in items], dtype=torch.long),
    }
