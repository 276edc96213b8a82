"""Independent references for the reader tests: wfdb's own reader, and copies of real records."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

# Written out here rather than imported so the reference does not share the reader's table.
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "v": 1e3}


def wfdb_millivolts(header: Path, sampfrom: int = 0, sampto: int | None = None) -> np.ndarray:
    """float64 [leads, samples] in mV as wfdb.rdrecord reads the record."""
    record = wfdb.rdrecord(str(header.with_suffix("")), sampfrom=sampfrom, sampto=sampto)
    scale = np.array([_UNIT_TO_MV[(unit or "mV").lower()] for unit in record.units])
    return (record.p_signal * scale).T


@pytest.fixture
def reference_mv():
    return wfdb_millivolts


@pytest.fixture
def copy_record(tmp_path):
    """Copy every file of a real record (same stem) into tmp_path; returns the copied .hea or file."""

    def copy(source: Path, folder: str = "copy") -> Path:
        target = tmp_path / folder
        target.mkdir(parents=True, exist_ok=True)
        for file in source.parent.glob(source.stem + ".*"):
            shutil.copy(file, target / file.name)
        return target / source.name

    return copy


@pytest.fixture
def formats_dir(shared_data) -> Path:
    """Real clinical export samples (`formats/MANIFEST.tsv` names their sources and licences)."""
    root = shared_data / "formats"
    if not (root / "MANIFEST.tsv").is_file():
        pytest.skip(f"clinical format samples not found at {root}")
    return root


@pytest.fixture
def damaged_xml(tmp_path):
    """Write tmp_path/bad.xml: an XML export with its first `old` (from `after` on) replaced by `new`,
    or every one with `every=True`; `old` must be there, so a damage that misses fails loudly."""

    def damage(source: Path, old: str, new: str, *, encoding: str = "utf-8", after: str = "", every: bool = False) -> Path:
        text = source.read_text(encoding=encoding)
        start = text.index(after) if after else 0
        assert old in text[start:], f"{old!r} is not in {source.name}"
        path = tmp_path / "bad.xml"
        path.write_text(text[:start] + text[start:].replace(old, new, -1 if every else 1), encoding=encoding)
        return path

    return damage
