"""`anyecg inspect`: what a record file or a prepared store holds, as a dict and as text."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from anyecg.data.prepare import skip_reason
from anyecg.data.store import MANIFEST, Store
from anyecg.io import RecordError, read_record
from anyecg.io.channels import keep_ecg_channels
from anyecg.io.snomed import snomed_abbreviation


SHORT_DICT = 3  # longer dicts (skip reasons, label counts) get one line per entry


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
        "units": record.meta.get("units", []),
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
    for key in ("samples_per_frame", "channel_fs"):  # records whose channels have different rates
        if key in record.meta:
            info[key] = record.meta[key]
    try:
        kept = keep_ecg_channels(record)
        info["prepare_drops"] = {d["lead"]: d["reason"] for d in kept.meta.get("dropped_leads", [])}
    except RecordError as err:
        info["prepare_drops"] = {"(all)": err.problem}
    if record.annotations is not None:
        ann = record.annotations
        info["annotations"] = {
            "count": len(ann),
            "symbols": dict(Counter(ann.symbol).most_common()),
            "rhythms": dict(Counter(a for a in ann.aux if a.startswith("(")).most_common()),
        }
    return info


def describe_store(path: str | Path) -> dict:
    store = Store(path)
    summary = store.summary()
    summary["labels"] = {_label_text(label): n for label, n in summary["labels"].items()}
    manifest = store.manifest
    # what the sources were before cleaning: rates (frame rate x samples per frame) and units
    summary["source_fs"] = {f"{fs:g} Hz": n for fs, n in Counter(manifest["fs_original"]).most_common()}
    if "units" in manifest.columns:
        units = Counter(unit for value in manifest["units"] for unit in value.split(";") if unit)
        summary["source_units"] = dict(units.most_common())
    skipped = store.skipped()
    reasons = Counter(map(skip_reason, skipped["problem"])) if len(skipped) else Counter()
    summary["skipped_reasons"] = dict(reasons.most_common())
    return summary


def format_description(info: dict) -> str:
    """Aligned `key: value` lines; nested dicts, and dicts of more than SHORT_DICT entries, indented one level."""
    width = max(len(k) for k in info)
    lines = []
    for key, value in info.items():
        if isinstance(value, (list, dict)) and not value:
            lines.append(f"{key:<{width}}  -")
        elif (isinstance(value, dict) and len(value) <= SHORT_DICT
              and not any(isinstance(v, dict) for v in value.values())):
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
