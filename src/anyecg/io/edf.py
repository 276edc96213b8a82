"""EDF / EDF+ / BDF recordings via pyEDFlib.

Channel labels become leads after dropping the modality prefix EDF files put in front
(`ECG I`, `EKG V2`, `ECG II-REF` -> `I`, `V2`, `II`); physical dimensions uV/mV/V become mV. Channels
may have different rates (sleep studies): the record's `fs` is the rate of most of its ECG channels
(see `record_rate`), `meta["channel_fs"]` lists every channel's own, and a channel at another rate is
dropped by the channel selection (anyecg.io.channels). EDF+ annotations are kept as
`Annotations` (onset converted to a sample index, the text in `aux`). Sex and age come from the
EDF+ patient fields when present.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np

from anyecg.io.arrays import resolve_fs, resolve_leads
from anyecg.io.channels import channel_problem
from anyecg.io.metadata import RecordInfo, millivolt_factor, parse_sex
from anyecg.io.recording import Annotations, RecordError, Recording

_PREFIX = re.compile(r"^\s*(?:ecg|ekg)[\s_:-]*", re.IGNORECASE)
_REFERENCE_SUFFIX = re.compile(r"[\s_-]*ref\s*$", re.IGNORECASE)


def lead_name(label: str) -> str:
    """EDF channel label without modality prefix or reference suffix: 'ECG II-REF' -> 'II'."""
    stripped = _REFERENCE_SUFFIX.sub("", _PREFIX.sub("", label.strip()))
    return stripped or label.strip()


@contextmanager
def _open(path: Path):
    import pyedflib

    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as err:
        raise RecordError(path, f"not a readable EDF/BDF file ({err})") from None
    try:
        yield reader
    finally:
        reader.close()


def _age(reader) -> float | None:
    try:
        birth = datetime.strptime(reader.getBirthdate().strip(), "%d %b %Y")
    except ValueError:
        return None
    start = reader.getStartdatetime()
    years = (start - birth).days / 365.25
    return round(years, 2) if 0 <= years < 150 else None


def record_rate(labels: list[str], units: list[str], rates: list[float]) -> float:
    """The record's rate: the one most ECG channels share (ties: the higher); sleep studies record
    ECG at 256-512 Hz beside slower channels, and plain EDF may carry an `EDF Annotations` channel."""
    ecg = [rate for label, unit, rate in zip(labels, units, rates) if channel_problem(label, unit) is None]
    candidates = ecg or rates
    return max(set(candidates), key=lambda rate: (candidates.count(rate), rate))


def _describe(path: Path, reader, fs: float | None, leads: list[str] | None):
    labels = [label.strip() for label in reader.getSignalLabels()]
    if not labels:
        raise RecordError(path, "EDF file has no signal channels")
    rates = [float(rate) for rate in reader.getSampleFrequencies()]
    counts = np.asarray(reader.getNSamples(), dtype=np.int64)
    units = [reader.getPhysicalDimension(i).strip() for i in range(len(labels))]
    file_rate = record_rate(labels, units, rates)
    rate = resolve_fs(path, file_rate, fs)
    raw, canonical = resolve_leads(path, [lead_name(label) for label in labels], leads, len(labels))
    meta = {"format": path.suffix.lower().lstrip("."), "units": units, "channel_labels": labels}
    if len(set(rates)) > 1:
        meta["channel_fs"] = rates  # channels at another rate are dropped by the channel selection
    unknown = sorted({u for u in units if millivolt_factor(u) is None})
    if unknown:
        meta["unscaled_units"] = unknown
    n_samples = int(min(count for count, r in zip(counts, rates) if r == file_rate))
    return rate, raw, canonical, n_samples, units, meta


def _read_span(reader, units: list[str], start: int, n: int, channel_fs: list[float] | None = None,
               record_fs: float | None = None) -> np.ndarray:
    """float32 [channels, n] mV from sample `start` at the record's rate; a channel at another rate is
    sampled at the nearest earlier sample, only to fill its row."""
    out = np.empty((len(units), n), dtype=np.float32)  # [L, n]
    for channel, unit in enumerate(units):
        scale = millivolt_factor(unit) or 1.0
        if channel_fs is None or channel_fs[channel] == record_fs:
            out[channel] = reader.readSignal(channel, start, n) * scale
            continue
        ratio = channel_fs[channel] / record_fs
        first, last = int(start * ratio), int((start + n - 1) * ratio) + 1
        values = reader.readSignal(channel, first, last - first)
        index = np.minimum((np.arange(start, start + n) * ratio).astype(np.int64) - first, values.size - 1)
        out[channel] = values[index] * scale if values.size else np.nan
    return out


def read_edf_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    path = Path(path)
    with _open(path) as reader:
        rate, raw, canonical, n_samples, _, meta = _describe(path, reader, fs, leads)
        return RecordInfo(
            record_id=path.stem, fs=rate, n_samples=n_samples, raw_leads=raw, leads=canonical,
            age=_age(reader), sex=parse_sex(reader.getSex() or ""), meta=meta, source=str(path),
        )


def read_edf(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    path = Path(path)
    with _open(path) as reader:
        rate, raw, canonical, n_samples, units, meta = _describe(path, reader, fs, leads)
        signal = _read_span(reader, units, 0, n_samples, meta.get("channel_fs"), rate)
        return Recording(
            signal=signal, fs=rate, leads=canonical, record_id=path.stem, age=_age(reader),
            sex=parse_sex(reader.getSex() or ""), source=str(path), raw_leads=raw,
            annotations=_annotations(reader, rate), meta=meta,
        )


def read_edf_annotations(path: str | Path, fs: float | None = None) -> Annotations | None:
    """EDF+ annotations with sample indices at `fs` (default: the record's rate); None when there are none."""
    path = Path(path)
    with _open(path) as reader:
        return _annotations(reader, fs if fs is not None else _describe(path, reader, None, None)[0])


def _annotations(reader, rate: float) -> Annotations | None:
    onsets, _, texts = reader.readAnnotations()
    if not len(onsets):
        return None
    return Annotations(
        sample=np.round(np.asarray(onsets, dtype=np.float64) * rate).astype(np.int64),
        symbol=[""] * len(onsets),
        aux=[str(text) for text in texts],
    )


def iter_edf_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                    leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    path = Path(path)
    with _open(path) as reader:
        rate, _, _, n_samples, units, meta = _describe(path, reader, fs, leads)
        for start in range(0, n_samples, chunk_samples):
            yield start, _read_span(reader, units, start, min(chunk_samples, n_samples - start), meta.get("channel_fs"),
                                    rate)
