"""Plain MATLAB `.mat` recordings (no WFDB header beside them), e.g. CODE-15% and CPSC 2019.

The signal is the array under the first of `SIGNAL_KEYS` present (`val`, `ecg`, `feats`, ...), else
the file's only array with more than one element. Values are taken to be millivolts. A rate stored
in the file under one of `FS_KEYS` (CODE-15% keeps `curr_sample_rate`) is used; otherwise `fs` must
be given. Lead names are never stored, so `leads` must be given; orientation follows
`anyecg.io.arrays.orient` (CPSC 2019 stores [samples, 1]).

`.mat` files that hold sample indices rather than a signal (CPSC 2019's `ref/R_*.mat` R-peak lists)
are recognised by `holds_indices` so record discovery can skip them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io

from anyecg.io.arrays import as_millivolts, needs_transpose, orient, resolve_fs, resolve_leads
from anyecg.io.metadata import RecordInfo
from anyecg.io.recording import RecordError, Recording

SIGNAL_KEYS = ("val", "ecg", "feats", "signal", "data", "ECG")
FS_KEYS = ("fs", "Fs", "FS", "sample_rate", "sampling_rate", "curr_sample_rate", "sampling_frequency")
MAX_INDEX_VECTOR = 2_000_000  # longer than any beat list of a 24 h recording
_NOT_NUMERIC = ("char", "cell", "struct")  # MATLAB classes that cannot hold samples


def _contents(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, MATLAB class) of each variable, read from the file's headers only."""
    try:
        return scipy.io.whosmat(str(path))
    except NotImplementedError:
        raise RecordError(path, "MATLAB v7.3 (HDF5) .mat files are not supported; save with -v7 or as WFDB") from None
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError ... for damaged files
        raise RecordError(path, f"corrupt or unreadable .mat ({type(err).__name__}: {err})") from None


def _load(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    try:
        return scipy.io.loadmat(str(path), variable_names=names)
    except Exception as err:  # as in _contents
        raise RecordError(path, f"corrupt or unreadable .mat ({type(err).__name__}: {err})") from None


def _signal_name(path: Path, contents: list[tuple[str, tuple[int, ...], str]]) -> str:
    names = {name for name, _, _ in contents}
    for key in SIGNAL_KEYS:
        if key in names:
            return key
    arrays = [name for name, shape, cls in contents if int(np.prod(shape)) > 1 and cls not in _NOT_NUMERIC]
    if len(arrays) != 1:
        raise RecordError(path, f"cannot tell which variable is the signal among {sorted(names)}; "
                                f"expected one of {SIGNAL_KEYS}")
    return arrays[0]


def _file_fs(path: Path, contents: list[tuple[str, tuple[int, ...], str]]) -> float | None:
    scalars = {name for name, shape, _ in contents if int(np.prod(shape)) == 1}
    key = next((key for key in FS_KEYS if key in scalars), None)
    if key is None:
        return None
    return float(np.asarray(_load(path, [key])[key]).reshape(-1)[0])


def holds_indices(path: str | Path) -> bool:
    """True for a .mat whose only array is a vector of whole, strictly increasing numbers.

    That is a list of sample indices (CPSC 2019 `ref/R_*.mat` R-peaks), never an ECG lead. The
    stored class says little (those R-peak lists are declared double), so the values are checked;
    vectors longer than MAX_INDEX_VECTOR are not loaded and count as signals.
    """
    path = Path(path)
    try:
        contents = scipy.io.whosmat(str(path))
    except Exception:  # unreadable files are left for the reader to report
        return False
    arrays = [(name, shape) for name, shape, cls in contents if int(np.prod(shape)) > 0 and cls not in _NOT_NUMERIC]
    if len(arrays) != 1:
        return False
    name, shape = arrays[0]
    if len(shape) != 2 or min(shape) != 1 or max(shape) > MAX_INDEX_VECTOR:
        return False
    try:
        values = np.asarray(_load(path, [name])[name], dtype=np.float64).reshape(-1)
    except (RecordError, ValueError, TypeError):
        return False
    return bool(np.all(values == np.round(values)) and np.all(values >= 0) and np.all(np.diff(values) > 0))


def _describe(path: Path, fs: float | None, leads: list[str] | None) -> tuple[str, tuple[int, ...], float]:
    """(signal variable, its shape without singleton extra axes, rate), from the file's headers."""
    contents = _contents(path)
    if not contents:
        raise RecordError(path, "the .mat file holds no variables")
    key = _signal_name(path, contents)
    rate = resolve_fs(path, _file_fs(path, contents), fs)
    if leads is None:
        raise RecordError(path, "no lead names in a plain .mat: pass leads= (e.g. ['I', 'II', ...])")
    shape = tuple(next(shape for name, shape, _ in contents if name == key))
    if len(shape) > 2:
        shape = tuple(n for n in shape if n != 1)
    return key, shape, rate


def _read(path: Path, fs: float | None, leads: list[str] | None):
    key, shape, rate = _describe(path, fs, leads)
    array = np.asarray(_load(path, [key])[key])
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise RecordError(path, f"variable {key!r} has dtype {array.dtype}, expected real numbers")
    if array.size <= 1:
        raise RecordError(path, f"variable {key!r} holds {array.size} value(s), not a signal")
    signal = orient(path, array.reshape(shape), len(leads))  # [leads, samples] view
    raw, canonical = resolve_leads(path, None, leads, signal.shape[0])
    return key, rate, signal, raw, canonical


def read_mat_record(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    path = Path(path)
    key, rate, signal, raw, canonical = _read(path, fs, leads)
    return Recording(
        signal=as_millivolts(signal), fs=rate, leads=canonical, record_id=path.stem, source=str(path),
        raw_leads=raw,
        meta={"format": "mat", "variable": key, "units": ["mV"] * len(raw), "units_assumed": True},
    )


def read_mat_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    path = Path(path)
    key, shape, rate = _describe(path, fs, leads)
    n_samples = shape[0] if needs_transpose(path, shape, len(leads)) else shape[-1]
    raw, canonical = resolve_leads(path, None, leads, len(leads))
    return RecordInfo(
        record_id=path.stem, fs=rate, n_samples=int(n_samples), raw_leads=raw, leads=canonical,
        meta={"format": "mat", "variable": key}, source=str(path),
    )


def iter_mat_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                    leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """MAT v5 variables cannot be read in part (they may be compressed): loaded whole, then sliced."""
    _, _, signal, _, _ = _read(Path(path), fs, leads)
    for start in range(0, signal.shape[1], chunk_samples):
        yield start, as_millivolts(signal[:, start:start + chunk_samples])  # [leads, n]
