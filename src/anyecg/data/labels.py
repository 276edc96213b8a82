"""The user's labels CSV: `record` and `label` columns, optional `patient`, `split`, `fs`, `leads`.

`record` is a file stem (`E07500`) or a path relative to one of the sources (`georgia/E07500`),
`label` one class or several separated by ';'. `fs` and `leads` (names separated by ';') serve
records whose files carry no sampling rate or lead names (plain .mat, .npy, .csv), so one
`prepare` can mix such sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from anyecg.data.splits import SPLITS


@dataclass
class LabelRow:
    labels: list[str]
    patient: str | None
    split: str | None
    fs: float | None = None
    leads: list[str] | None = None


class LabelTable:
    def __init__(self, rows: dict[str, LabelRow], path: Path):
        self.rows = rows
        self.path = path
        self.has_split = any(row.split for row in rows.values())

    @classmethod
    def read(cls, path: str | Path) -> "LabelTable":
        path = Path(path)
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read labels CSV ({err})") from None
        missing = {"record", "label"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: labels CSV needs columns 'record' and 'label'; missing {sorted(missing)}, has {list(frame.columns)}")
        duplicated = frame["record"][frame["record"].duplicated()].tolist()
        if duplicated:
            raise ValueError(f"{path}: records listed twice: {duplicated[:5]}")
        if "split" in frame.columns:
            bad = sorted(set(frame["split"]) - set(SPLITS) - {""})
            if bad:
                raise ValueError(f"{path}: unknown split names {bad}; use {list(SPLITS)}")
        rows = {}
        for number, item in enumerate(frame.to_dict("records"), start=2):
            labels = [part.strip() for part in item["label"].split(";") if part.strip()]
            leads = [part.strip() for part in item.get("leads", "").split(";") if part.strip()]
            rows[_key(item["record"])] = LabelRow(
                labels=labels, patient=item.get("patient") or None, split=item.get("split") or None,
                fs=_rate(path, number, item.get("fs", "")), leads=leads or None,
            )
        return cls(rows, path)

    def lookup(self, source: Path, sources: list[Path]) -> LabelRow | None:
        """Match by path relative to a source folder (without extension), else by file stem."""
        source = Path(source)
        for root in sources:
            if source.is_relative_to(root):
                row = self.rows.get(_key(source.relative_to(root).with_suffix("").as_posix()))
                if row is not None:
                    return row
        return self.rows.get(_key(source.stem))


def _rate(path: Path, line: int, text: str) -> float | None:
    if not text.strip():
        return None
    try:
        fs = float(text)
    except ValueError:
        fs = float("nan")
    if not fs > 0:
        raise ValueError(f"{path}: line {line}: fs must be a positive number, got {text!r}")
    return fs


def _key(record: str) -> str:
    """Normalise a record reference: forward slashes, no extension of a known record file."""
    text = record.strip().replace("\\", "/")
    for suffix in (".hea", ".mat", ".dat", ".edf", ".npy", ".npz", ".csv"):
        if text.lower().endswith(suffix):
            return text[: -len(suffix)]
    return text
