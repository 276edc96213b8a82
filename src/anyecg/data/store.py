"""The prepared store: preprocessed signals in memory-mapped shards, one manifest row per record.

Layout of a store folder::

    recipe.json                  the preprocessing recipe every signal went through
    plan.parquet                 which source record goes to which shard (fixed at the first run)
    shards/shard-00000.f32       float32 samples, records one after another, each time-major [samples, leads]
    shards/shard-00000.parquet   one row per record of the shard: metadata, offset into the .f32 file,
                                 per-lead normalisation offset/scale
    shards/shard-00000.ann.parquet   annotations (beats, rhythm changes) at the store's sampling rate
    shards/shard-00000.skipped.parquet  records of the shard that could not be used, and why
    manifest.parquet             all shard rows, plus the split column
    skipped.csv                  every record that could not be used and every file that is no record,
                                 with why (`kind`: "record" or "not read")

Time-major storage lets a long record be appended chunk by chunk while it streams in, and makes a
window of any record one contiguous read. Signals are stored in millivolts after cleaning (filters, resampling, denoising); the recipe's
amplitude normalisation is applied on read with the stored per-lead offset and scale, so the mV
signal stays recoverable (lead generation is scored in mV).

A shard is complete when its `.parquet` index exists: writers put the samples and the index in
temporary files and rename them into place, index last, so a killed job never leaves a shard that
looks complete but is not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from anyecg.io.recording import Annotations
from anyecg.signal.normalize import apply_normalization
from anyecg.signal.recipe import Recipe

SHARD_DIR = "shards"
MANIFEST = "manifest.parquet"
RECIPE = "recipe.json"
PLAN = "plan.parquet"
SKIPPED = "skipped.csv"
NOT_READ = "not read"  # skipped.csv `kind` of a file that is no record (a README, a table), as opposed to "record"

# Manifest columns a user sees first; the rest (shard, offset, normalisation) are for readers.
MANIFEST_COLUMNS = [
    "record_id", "patient_id", "source", "format", "fs_original", "n_leads", "leads", "duration_s",
    "age", "sex", "labels", "split",
]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def split_list(value: str | float | None) -> list[str]:
    """Manifest list columns are ';'-joined strings (readable in any table tool)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return []
    return str(value).split(";")


class StoreError(RuntimeError):
    pass


@dataclass
class StoredRecord:
    """One record as read back from a store."""

    signal: np.ndarray  # float32 [leads, samples] at the recipe's rate
    fs: float
    leads: list[str]
    record_id: str
    patient_id: str
    age: float | None
    sex: str | None
    labels: list[str]
    split: str
    annotations: Annotations | None


class Store:
    """Read access to a prepared store; `len(store)` records, `store[i]` a `StoredRecord`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise StoreError(f"{self.root}: not a prepared store (no {MANIFEST}); run `anyecg prepare`")
        self.manifest = pd.read_parquet(manifest)
        self.recipe = Recipe.from_json((self.root / RECIPE).read_text())
        self._shards: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def _shard(self, shard: int) -> np.memmap:
        if shard not in self._shards:
            path = self.root / SHARD_DIR / f"{shard_name(shard)}.f32"
            self._shards[shard] = np.memmap(path, dtype=np.float32, mode="r")
        return self._shards[shard]

    @cached_property
    def _layout(self) -> dict[str, list]:
        """Where each record lies and how it is normalized, as plain lists: a training epoch reads
        thousands of windows, and a manifest row lookup (`iloc`) costs more than the read itself."""
        m = self.manifest
        return {
            "n_leads": m["n_leads"].astype(int).tolist(), "n_samples": m["n_samples"].astype(int).tolist(),
            "shard": m["shard"].astype(int).tolist(), "offset": m["offset"].astype(int).tolist(),
            "norm_offset": [np.asarray(v) for v in m["norm_offset"]], "norm_scale": [np.asarray(v) for v in m["norm_scale"]],
            "leads": [split_list(v) for v in m["leads"]], "record_id": m["record_id"].astype(str).tolist(),
            "age": [None if pd.isna(v) else float(v) for v in m["age"]],
            "sex": [None if pd.isna(v) else str(v) for v in m["sex"]],
        }

    def leads(self, index: int) -> list[str]:
        """The lead names of record `index`, in the order of its signal's rows."""
        return self._layout["leads"][index]

    def n_leads(self, index: int) -> int:
        return self._layout["n_leads"][index]

    def n_samples(self, index: int) -> int:
        return self._layout["n_samples"][index]

    def record_id(self, index: int) -> str:
        return self._layout["record_id"][index]

    def age(self, index: int) -> float | None:
        """Age in years of record `index`'s patient, None when the source does not give it."""
        return self._layout["age"][index]

    def sex(self, index: int) -> str | None:
        return self._layout["sex"][index]

    def signal(self, index: int, *, normalized: bool = True, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 [leads, stop - start]; a window is read without touching the rest of the record."""
        layout = self._layout
        n_leads, n_samples = layout["n_leads"][index], layout["n_samples"][index]
        stop = n_samples if stop is None else min(stop, n_samples)
        if not 0 <= start <= stop:
            raise IndexError(f"window [{start}, {stop}) outside record {self.record_id(index)} of {n_samples} samples")
        flat = self._shard(layout["shard"][index])
        base = layout["offset"][index]
        # [n_samples, leads] view of the record, then the requested window as [leads, stop - start]
        record = flat[base : base + n_leads * n_samples].reshape(n_samples, n_leads)
        window = np.array(record[start:stop].T, dtype=np.float32)
        if normalized:
            window = apply_normalization(window, layout["norm_offset"][index], layout["norm_scale"][index])
        return window

    @cached_property
    def _annotations(self) -> pd.DataFrame:
        parts = sorted((self.root / SHARD_DIR).glob("shard-*.ann.parquet"))
        if not parts:
            return pd.DataFrame(columns=["record_id", "sample", "symbol", "aux"])
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def annotations(self, record_id: str) -> Annotations | None:
        rows = self._annotations[self._annotations["record_id"] == record_id]
        if rows.empty:
            return None
        return Annotations(
            sample=rows["sample"].to_numpy(np.int64), symbol=rows["symbol"].tolist(), aux=rows["aux"].tolist()
        )

    def __getitem__(self, index: int) -> StoredRecord:
        row = self.manifest.iloc[index]
        return StoredRecord(
            signal=self.signal(index),
            fs=float(self.recipe.target_fs),
            leads=self.leads(index),
            record_id=self.record_id(index),
            patient_id=str(row["patient_id"]),
            age=self.age(index),
            sex=self.sex(index),
            labels=split_list(row["labels"]),
            split=str(row["split"]),
            annotations=self.annotations(self.record_id(index)),
        )

    def skipped(self) -> pd.DataFrame:
        path = self.root / SKIPPED
        return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["source", "problem", "kind"])

    def summary(self) -> dict:
        """Counts a person wants first: records, hours, labels, splits, skipped records, files not read."""
        m = self.manifest
        label_counts: dict[str, int] = {}
        for value in m["labels"]:
            for label in split_list(value):
                label_counts[label] = label_counts.get(label, 0) + 1
        skipped = self.skipped()
        is_file = skipped["kind"] == NOT_READ if "kind" in skipped else pd.Series(False, index=skipped.index)
        return {
            "records": int(len(m)),
            "patients": int(m["patient_id"].nunique()),
            "hours": round(float(m["duration_s"].sum()) / 3600.0, 3),
            "fs": self.recipe.target_fs,
            "leads": dict(sorted(pd.Series([l for v in m["leads"] for l in split_list(v)]).value_counts().items())),
            "labels": dict(sorted(label_counts.items(), key=lambda kv: (-kv[1], kv[0]))),
            "splits": {k: int(v) for k, v in m["split"].value_counts().sort_index().items()},
            "skipped": int((~is_file).sum()),  # records that could not be used
            "not_read": int(is_file.sum()),  # files that are no records
            "skipped_reasons": skipped["problem"].value_counts().to_dict() if len(skipped) else {},
        }


def read_recipe(root: Path) -> Recipe | None:
    path = root / RECIPE
    return Recipe.from_json(path.read_text()) if path.is_file() else None


def write_json(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())
