"""Any ECG in: readers that turn files into `Recording`s (float32 [leads, samples] in mV).

    rec = read_record("mitdb/100")                      # WFDB: .hea, record name, or one of its files
    rec = read_record("code15/x.mat", fs=400, leads=list(STANDARD_12))   # plain .mat / .npy / .npz / .csv
    rec = read_record("export/ecg.dcm")                 # DICOM, MUSE / Philips / HL7 aECG XML, ISHNE, SCP: by content
    info = read_header("cinc2021/E07500.hea")           # metadata and length, no samples
    for start, block in iter_chunks("holter.hea", 60 * 1000):   # [leads, n] pieces of a long record
        ...
    paths = find_records(["data/"], exclude=["*/ref/*"])
    rec = check_signal(rec)                             # raise on NaN/empty, drop flat/saturated leads

`fs` and `leads` are used only where a file lacks them (plain arrays, plain .mat; a header, EDF or
.npz with its own rate and lead names wins), so one call can cover mixed sources. Every failure is a
`RecordError` naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anyecg.io.arrays import iter_array_chunks, read_array_header, read_array_record
from anyecg.io.dicom import iter_dicom_chunks, read_dicom, read_dicom_header
from anyecg.io.discover import find_records, record_kind
from anyecg.io.ecg_xml import iter_ecg_xml_chunks, read_ecg_xml, read_ecg_xml_header
from anyecg.io.edf import iter_edf_chunks, read_edf, read_edf_annotations, read_edf_header
from anyecg.io.ishne import iter_ishne_chunks, read_ishne, read_ishne_header
from anyecg.io.matlab import iter_mat_chunks, read_mat_header, read_mat_record
from anyecg.io.metadata import RecordInfo
from anyecg.io.quality import check_signal
from anyecg.io.recording import Annotations, RecordError, Recording
from anyecg.io.scp import iter_scp_chunks, read_scp, read_scp_header
from anyecg.io.snomed import snomed_abbreviation, snomed_name
from anyecg.io.wfdb_reader import iter_wfdb_chunks, read_wfdb, read_wfdb_annotations, read_wfdb_header

__all__ = [
    "Annotations", "RecordError", "RecordInfo", "Recording",
    "check_signal", "find_records", "iter_chunks", "read_annotations", "read_header", "read_record",
    "record_kind", "snomed_abbreviation", "snomed_name",
]

_READERS = {"wfdb": read_wfdb, "mat": read_mat_record, "edf": read_edf, "array": read_array_record}
_HEADERS = {"wfdb": read_wfdb_header, "mat": read_mat_header, "edf": read_edf_header, "array": read_array_header}
_CHUNKS = {"wfdb": iter_wfdb_chunks, "mat": iter_mat_chunks, "edf": iter_edf_chunks, "array": iter_array_chunks}
# Clinical exports, found by content (anyecg.io.clinical)
_READERS |= {"dicom": read_dicom, "xml": read_ecg_xml, "ishne": read_ishne, "scp": read_scp}
_HEADERS |= {"dicom": read_dicom_header, "xml": read_ecg_xml_header, "ishne": read_ishne_header, "scp": read_scp_header}
_CHUNKS |= {"dicom": iter_dicom_chunks, "xml": iter_ecg_xml_chunks, "ishne": iter_ishne_chunks, "scp": iter_scp_chunks}


def read_record(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    """Read one record, whatever its format (see module docstring)."""
    kind, file = record_kind(path)
    return _READERS[kind](file, fs=fs, leads=leads)


def read_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    """What `read_record` would return, minus the samples (WFDB and EDF read only their headers)."""
    kind, file = record_kind(path)
    return _HEADERS[kind](file, fs=fs, leads=leads)


def iter_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start sample, float32 [leads, n] mV) covering the record in order, n <= chunk_samples.

    WFDB (fixed-width formats and 212), EDF, ISHNE and .npy read only the requested span, so memory stays
    one chunk however long the record; plain .mat, .npz and .csv are loaded whole, then sliced.
    """
    if int(chunk_samples) != chunk_samples or chunk_samples < 1:
        raise ValueError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    kind, file = record_kind(path)
    return _CHUNKS[kind](file, int(chunk_samples), fs=fs, leads=leads)


def read_annotations(path: str | Path, extension: str = "atr", fs: float | None = None) -> Annotations | None:
    """Annotations of a record given by any of its paths, None if absent: WFDB `<record>.<extension>`,
    or an EDF+ file's own. With `fs`, sample indices count at that rate (the record's, see `read_record`)."""
    if Path(path).suffix.lower() in (".edf", ".bdf"):
        return read_edf_annotations(path, fs)
    return read_wfdb_annotations(path, extension, fs)
