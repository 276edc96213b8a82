"""Finding records on disk, and telling which reader opens a path.

`find_records` turns folders (searched recursively), glob patterns and single files into one path
per record, sorted:

- a WFDB record is its `.hea`: a file with a `.hea` of the same stem beside it (`.dat`, `.atr`,
  challenge `.mat`, found by a glob such as `*.mat`) stands for that header, and the header's own
  signal files (`.xyz`, ...) and segment headers of a multi-segment record are not listed again;
- other files count when their extension has a reader (`.mat`, `.edf`, `.bdf`, `.npy`, `.npz`,
  `.csv`), except files that are clearly not signals: a `.mat` whose only array is a strictly
  increasing integer vector (reference sample indices, e.g. CPSC 2019 `ref/R_*.mat`) and a `.csv`
  whose first data row is not all numbers (metadata tables such as CODE-15% `labels.csv`);
- clinical exports (DICOM, GE MUSE / Philips / HL7 aECG XML, ISHNE, SCP-ECG) count when their content says
  so, whatever their extension (see `anyecg.io.clinical`);
- `exclude` takes glob patterns matched against the file name and against the whole path
  (`"labels.csv"`, `"*/ref/*"`) for anything else to leave out.

A file named directly (not through a folder or glob) is always listed, as its record's header for a
WFDB file, so that reading it reports what is wrong with it.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

from anyecg.io.clinical import clinical_kind, listed_in_folder
from anyecg.io.matlab import holds_indices
from anyecg.io.recording import RecordError
from anyecg.io.wfdb_reader import parse_header

ARRAY_SUFFIXES = (".npy", ".npz", ".csv")
EDF_SUFFIXES = (".edf", ".bdf")
SIGNAL_SUFFIXES = frozenset({".mat", *EDF_SUFFIXES, *ARRAY_SUFFIXES})
SUPPORTED = (".hea (or a WFDB record name), .mat, .edf, .bdf, .npy, .npz, .csv, "
             "DICOM, GE MUSE / Philips / HL7 aECG XML, ISHNE .ecg, SCP-ECG")


def record_kind(path: str | Path) -> tuple[str, Path]:
    """("wfdb" | "mat" | "edf" | "array" | a clinical kind, the file to open); RecordError otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".hea":
        return "wfdb", path
    if suffix in EDF_SUFFIXES:
        return "edf", path
    if suffix in ARRAY_SUFFIXES:
        return "array", path
    stem_header = path.with_name(path.name + ".hea")  # "data/100" -> "data/100.hea"
    if stem_header.is_file():
        return "wfdb", stem_header
    if suffix and path.with_suffix(".hea").is_file():  # "E07500.mat", "100.dat", "100.atr"
        return "wfdb", path.with_suffix(".hea")
    if suffix == ".mat":
        return "mat", path
    if (kind := clinical_kind(path)) is not None:  # DICOM, vendor XML, ISHNE, SCP: by content, else extension
        return kind, path
    if not path.exists():
        raise RecordError(path, "no such file (nor a WFDB record with this name)")
    if path.is_file() and path.stat().st_size == 0:
        raise RecordError(path, "empty file (0 bytes)")
    raise RecordError(path, f"unsupported file type {suffix or '(no extension)'!r}; supported: {SUPPORTED}")


def _claimed_by_header(header_file: Path) -> set[Path]:
    """Files the header names as its own (signal files, segment headers)."""
    try:
        header = parse_header(header_file)
    except RecordError:
        return set()  # listed anyway; reading it will report the problem
    folder = header_file.parent
    claimed = {folder / line.file_name for line in header.signals}
    claimed.update(folder / f"{segment}.hea" for segment in header.segments if segment != "~")
    return claimed


def _csv_is_table(path: Path) -> bool:
    """True when the first data row has a non-number (a metadata table, not samples)."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as handle:
            lines = [line for line in (handle.readline() for _ in range(2)) if line.strip()]
    except OSError:
        return False
    if not lines:
        return False
    row = lines[-1].replace(";", ",").replace("\t", ",")
    cells = [cell.strip().strip("'\"") for cell in (row.split(",") if "," in row else row.split())]
    for cell in filter(None, cells):  # empty cells (a trailing delimiter) say nothing
        try:
            float(cell)
        except ValueError:
            return True
    return False


def _excluded(path: Path, patterns: Sequence[str]) -> bool:
    text = path.as_posix()
    return any(fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(text, pattern) for pattern in patterns)


def _records_among(files: Iterable[Path], ignored: list[tuple[Path, str]] | None = None) -> list[Path]:
    """One path per record among files found by walking folders or globs; files that are neither a
    record nor part of one go to `ignored` as (path, why), when a list is given."""
    files = sorted(set(files))
    present = set(files)
    headers = {file for file in files if file.suffix.lower() == ".hea"}
    claimed: set[Path] = set()
    # a file with a header of the same stem beside it (100.dat, 100.atr, E07500.mat) is that record;
    # an EDF/BDF is a whole record of its own unless the header names it
    for file in files:
        header = file.with_suffix(".hea")
        if file.suffix.lower() not in (".hea", *EDF_SUFFIXES) and (header in present or header.is_file()):
            claimed.add(file)
            headers.add(header)
    for header_file in sorted(headers):  # headers may also name other signal files, segment headers
        claimed |= _claimed_by_header(header_file)
    records = [file for file in sorted(headers) if file not in claimed]
    skip = ignored.append if ignored is not None else lambda _: None
    for file in files:
        suffix = file.suffix.lower()
        if file in claimed or suffix == ".hea":
            continue
        if suffix not in SIGNAL_SUFFIXES:
            if listed_in_folder(file):  # a clinical export recognised by its content
                records.append(file)
            else:
                skip((file, f"unsupported file type {suffix or '(no extension)'!r}, not read"))
        elif suffix == ".mat" and holds_indices(file):
            skip((file, "a .mat of sample indices (a reference list, not a signal), not read"))
        elif suffix == ".csv" and _csv_is_table(file):
            skip((file, "a .csv table with text in its first data row (metadata, not samples), not read"))
        else:
            records.append(file)
    return records


def find_records(sources: Sequence[str | Path], *, exclude: Sequence[str] = (),
                 ignored: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Record paths under `sources` (folders, globs, files, WFDB record names), sorted, one per record.

    Pass a list as `ignored` to get the files found in folders or globs that are not read, with why."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    walked: list[Path] = []
    named: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            walked.extend(file for file in path.rglob("*") if file.is_file())
        elif glob.has_magic(str(source)):
            for match in map(Path, glob.glob(str(source), recursive=True)):
                if match.is_dir():
                    walked.extend(file for file in match.rglob("*") if file.is_file())
                else:
                    walked.append(match)
        elif path.is_file() or path.with_name(path.name + ".hea").is_file():
            try:
                named.append(record_kind(path)[1])
            except RecordError:
                named.append(path)  # unsupported type: kept so that reading it says so
        else:
            raise RecordError(path, "no such file, folder or WFDB record")
    records = _records_among((file for file in walked if not _excluded(file, exclude)), ignored) + named
    records = [file for file in records if not _excluded(file, exclude)]
    unique: dict[Path, Path] = {}
    for record in records:
        unique.setdefault(record.resolve(), record)
    return sorted(unique.values(), key=lambda p: p.as_posix())
