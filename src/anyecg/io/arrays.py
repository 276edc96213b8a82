"""Plain arrays in (`.npy`, `.npz`, `.csv`), and the shape/rate/lead checks every reader shares.

Plain arrays carry no sampling rate and usually no lead names, so `fs` and `leads` must be given
(an `.npz` may hold them itself under the keys `fs` and `leads`; a `.csv` header row names the
leads). Values are taken to be millivolts.

Every reader treats `fs` and `leads` the same way: they describe files that lack them; a file's own
rate and lead names always win (so one call can cover a folder of mixed sources).

Orientation: arrays are [leads, samples]. A [samples, leads] array is accepted and transposed when
only its second axis matches the number of leads; a square array (as many samples as leads) is
read as [leads, samples]. A 1-D array is one lead.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anyecg.io.metadata import RecordInfo
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

# Keys tried, in order, for the signal inside an .npz (else its only array is used).
NPZ_SIGNAL_KEYS = ("signal", "ecg", "data", "val", "feats", "x")
# CSV columns that count samples or time rather than hold a lead.
CSV_INDEX_COLUMNS = frozenset(
    {"sample", "samples", "sample #", "sample#", "index", "idx", "time", "t", "time (s)", "time_s",
     "seconds", "elapsed time", "timestamp"}
)


def resolve_fs(path: str | Path, file_fs: float | None, given: float | None) -> float:
    """The record's rate: the file's own when it has one (it wins over `given`), else `given`."""
    fs = file_fs if file_fs is not None else given
    if fs is None:
        raise RecordError(path, "no sampling rate in this file: pass fs= (samples per second)")
    fs = float(fs)
    if not np.isfinite(fs) or fs <= 0:
        raise RecordError(path, f"sampling rate must be a positive number, got {fs}")
    return fs


def resolve_leads(path: str | Path, raw: list[str] | None, given: list[str] | None,
                  n_leads: int) -> tuple[list[str], list[str]]:
    """(raw_leads, canonical leads): the file's own names when it has them, else `given`."""
    if raw is not None:
        return list(raw), canonical_leads(list(raw))
    if given is None:
        raise RecordError(path, f"no lead names in this file: pass leads= ({n_leads} names, e.g. ['I', 'II', ...])")
    given = [str(name) for name in given]
    if len(given) != n_leads:
        raise RecordError(path, f"{len(given)} lead names given {given} but the record has {n_leads} leads")
    return given, canonical_leads(given)


def needs_transpose(path: str | Path, shape: tuple[int, ...], n_leads: int) -> bool:
    """Whether an array of `shape` is stored [samples, leads] (see module docstring)."""
    if len(shape) == 1:
        if n_leads != 1:
            raise RecordError(path, f"a 1-D array holds one lead, but {n_leads} lead names were given")
        return False
    if len(shape) != 2:
        raise RecordError(path, f"expected a 1-D or 2-D signal array, got shape {tuple(shape)}")
    rows, cols = shape
    if rows == n_leads:
        return False
    if cols == n_leads:
        return True
    raise RecordError(path, f"array of shape {tuple(shape)} has no axis of {n_leads} leads")


def orient(path: str | Path, array: np.ndarray, n_leads: int) -> np.ndarray:
    """View of a 1-D or 2-D array as [leads, samples] given the lead count."""
    transpose = needs_transpose(path, array.shape, n_leads)
    if array.ndim == 1:
        return array[None, :]
    return array.T if transpose else array


def as_millivolts(array: np.ndarray) -> np.ndarray:
    """float32 copy in C order (a [samples, leads] view becomes [leads, samples] memory)."""
    return np.ascontiguousarray(array, dtype=np.float32)


# --- .npy / .npz -----------------------------------------------------------------------------


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise RecordError(path, f"corrupt or unreadable .npz ({err})") from None


def _npz_signal(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    for key in NPZ_SIGNAL_KEYS:
        if key in arrays:
            return arrays[key]
    candidates = [key for key, value in arrays.items()
                  if value.ndim in (1, 2) and value.size > 1 and key not in ("leads", "fs")]
    if len(candidates) != 1:
        raise RecordError(path, f"cannot tell which array is the signal among {sorted(arrays)}; "
                                f"name it one of {NPZ_SIGNAL_KEYS}")
    return arrays[candidates[0]]


def _npz_fs_leads(arrays: dict[str, np.ndarray]) -> tuple[float | None, list[str] | None]:
    fs = float(arrays["fs"].reshape(-1)[0]) if "fs" in arrays and arrays["fs"].size == 1 else None
    leads = [str(name) for name in arrays["leads"].reshape(-1)] if "leads" in arrays else None
    return fs, leads


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise RecordError(path, f"corrupt or unreadable .npy ({err})") from None


def _numeric(path: Path, array: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise RecordError(path, f"signal array has dtype {array.dtype}, expected real numbers")
    return array


# --- .csv ------------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _without_trailing_empty(row: list[str]) -> list[str]:
    """Device exports often end every line with a delimiter: drop the empty cells at the end."""
    end = len(row)
    while end and not row[end - 1].strip():
        end -= 1
    return row[:end]


def _read_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """([rows, columns] float64, column names or None). Index/time columns are dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(path, f"cannot read CSV as text ({err})") from None
    if not text.strip():
        raise RecordError(path, "CSV file is empty")
    first = text.lstrip().split("\n", 1)[0]
    delimiter = next((d for d in (",", ";", "\t") if d in first), None)
    if delimiter:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    else:  # whitespace-separated
        reader = (line.split() for line in text.splitlines())
    rows = [_without_trailing_empty(row) for row in reader if row and any(cell.strip() for cell in row)]
    names = None
    if not all(_is_number(cell) for cell in rows[0]):
        names = [cell.strip().strip("'\"") for cell in rows[0]]
        rows = rows[1:]
    if not rows:
        raise RecordError(path, "CSV has a header row but no samples")
    width = len(rows[0])
    for number, row in enumerate(rows, start=2 if names else 1):
        if len(row) != width:
            raise RecordError(path, f"CSV line {number} has {len(row)} columns, expected {width}")
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError as err:
        raise RecordError(path, f"CSV holds a non-numeric sample ({err})") from None
    if names is not None:
        if len(names) != width:
            raise RecordError(path, f"CSV header names {len(names)} columns but rows have {width}")
        keep = [i for i, name in enumerate(names) if name.lower() not in CSV_INDEX_COLUMNS]
        values, names = values[:, keep], [names[i] for i in keep]
    return values, names


# --- readers ---------------------------------------------------------------------------------


def _load(path: Path, fs: float | None, leads: list[str] | None,
          mmap: bool = False) -> tuple[float, list[str], np.ndarray, list[str]]:
    """(fs, raw lead names, [leads, samples] view of the stored array, canonical leads)."""
    suffix = path.suffix.lower()
    file_fs, file_leads, names_are_columns = None, None, False
    if suffix == ".npy":
        array = _numeric(path, _load_npy(path, mmap))
    elif suffix == ".npz":
        arrays = _npz_arrays(path)
        array = _numeric(path, _npz_signal(path, arrays))
        file_fs, file_leads = _npz_fs_leads(arrays)
    elif suffix == ".csv":
        array, file_leads = _read_csv(path)
        names_are_columns = file_leads is not None
    else:
        raise RecordError(path, f"not an array file (.npy, .npz, .csv): {suffix!r}")
    rate = resolve_fs(path, file_fs, fs)
    if leads is None and file_leads is None:
        raise RecordError(path, "no lead names in this file: pass leads= (e.g. ['I', 'II', ...])")
    n_leads = len(file_leads) if file_leads is not None else len(leads)
    if names_are_columns and array.shape[1] == n_leads:
        signal = array.T  # CSV columns are the named leads
    else:
        signal = orient(path, array, n_leads)
    raw, canonical = resolve_leads(path, file_leads, leads, signal.shape[0])
    return rate, raw, signal, canonical


def read_array_record(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    path = Path(path)
    rate, raw, signal, canonical = _load(path, fs, leads)
    return Recording(
        signal=as_millivolts(signal), fs=rate, leads=canonical, record_id=path.stem, source=str(path),
        raw_leads=raw,
        meta={"format": path.suffix.lower().lstrip("."), "units": ["mV"] * len(raw), "units_assumed": True},
    )


def read_array_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    path = Path(path)
    rate, raw, signal, canonical = _load(path, fs, leads, mmap=True)
    return RecordInfo(
        record_id=path.stem, fs=rate, n_samples=int(signal.shape[1]), raw_leads=raw, leads=canonical,
        meta={"format": path.suffix.lower().lstrip(".")}, source=str(path),
    )


def iter_array_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                      leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """`.npy` is memory-mapped so only each chunk is read; `.npz`/`.csv` are loaded whole."""
    path = Path(path)
    _, _, signal, _ = _load(path, fs, leads, mmap=True)
    for start in range(0, signal.shape[1], chunk_samples):
        yield start, as_millivolts(signal[:, start:start + chunk_samples])  # [leads, n]
