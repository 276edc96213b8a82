"""Vendor and HL7 ECG XML: one entry point that parses the file safely and hands it to the reader
its root element names (`RestingECG` GE MUSE, `restingecgdata` Philips, `AnnotatedECG` HL7 aECG)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anyecg.io.aecg import read_aecg
from anyecg.io.clinical import XML_ROOTS, chunks_from, header_from, local_name, read_xml
from anyecg.io.metadata import RecordInfo
from anyecg.io.muse import read_muse
from anyecg.io.philips import read_philips
from anyecg.io.recording import RecordError, Recording

_READERS = {"muse": read_muse, "aecg": read_aecg, "philips": read_philips}


def read_ecg_xml(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    """The ECG of a vendor/HL7 XML export; `fs` and `leads` are unused (the file has both)."""
    path = Path(path)
    root = read_xml(path)
    name = local_name(root.tag)
    kind = XML_ROOTS.get(name)
    if kind not in _READERS:
        known = ", ".join(f"<{root}>" for root, kind in XML_ROOTS.items() if kind in _READERS)
        raise RecordError(path, f"XML root <{name}> is not an ECG format read here ({known})")
    return _READERS[kind](path, root)


def read_ecg_xml_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    return header_from(read_ecg_xml(path))


def iter_ecg_xml_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                        leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """XML waveforms are encoded whole: read whole, then sliced."""
    return chunks_from(read_ecg_xml(path), chunk_samples)
