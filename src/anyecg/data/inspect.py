"""`anyecg inspect`: what a record file or a prepared store holds, as a dict and as text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from anyecg.data.store import MANIFEST, Store
from anyecg.io import read_record
from anyecg.io.snomed import snomed_abbreviation


def is_store(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def describe_record(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> dict:
    record = read_record(path, fs=fs, leads=leads)
    info = {
        "record_id": record.record_id,
        "source": record.source,
        "fs": record.fs,
        "leads": record.leads,
        "raw_leads": record.raw_leads,
        "samples": record.n_samples,
        "duration_s": round(record.duration_s, 3),
        "age": record.age,
        "sex": record.sex,
        "patient_id": record.patient_id,
        "labels": [_label_text(label) for label in record.labels],
    }
    for key in ("format", "device", "derived_leads"):  # clinical exports say which device wrote them
        if record.meta.get(key):
            info[key] = record.meta[key]
    if record.annotations is not None:
        ann = record.annotations
        info["annotations"] = {
            "count": len(ann),
            "symbols": dict(Counter(ann.symbol).most_common()),
            "rhythms": dict(Counter(a for a in ann.aux if a.startswith("(")).most_common()),
        }
    return info


def describe_store(path: str | Path) -> dict:
    summary = Store(path).summary()
    summary["labels"] = {_label_text(label): n for label, n in summary["labels"].items()}
    return summary


def format_description(info: dict) -> str:
    """Aligned `key: value` lines; nested dicts indented one level."""
    width = max(len(k) for k in info)
    lines = []
    for key, value in info.items():
        if isinstance(value, (list, dict)) and not value:
            lines.append(f"{key:<{width}}  -")
        elif isinstance(value, dict) and all(not isinstance(v, dict) for v in value.values()):
            lines.append(f"{key:<{width}}  " + ", ".join(f"{k}: {v}" for k, v in value.items()))
        elif isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend("  " + line for line in format_description(value).splitlines())
        elif isinstance(value, list):
            lines.append(f"{key:<{width}}  " + ", ".join(map(str, value)))
        else:
            lines.append(f"{key:<{width}}  {'-' if value is None else value}")
    return "\n".join(lines)


def _label_text(label: str) -> str:
    abbreviation = snomed_abbreviation(label) if label.isdigit() else None
    return f"{label} ({abbreviation})" if abbreviation else label
