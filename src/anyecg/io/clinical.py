"""What the clinical-export readers (DICOM, vendor XML, ISHNE, SCP-ECG) share: telling the format
from a file's first bytes, hardened XML parsing, limb leads derived from I and II, and header/chunk
views of formats that are read whole.

Formats are recognised by content, so a DICOM file without extension or a MUSE export named `.txt`
still reads: `DICM` at byte 128 (DICOM Part 10), the ISHNE magic `ISHNE1.0`, `SCPECG` in the first
section header of an SCP-ECG file, or the root element of an XML file (`RestingECG` GE MUSE,
`restingecgdata` Philips, `AnnotatedECG` HL7 aECG). Files whose content says nothing fall back to
their extension (`.dcm`, `.ecg`, `.scp`, `.xml`), so a damaged file still reaches its reader, which
then names what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from anyecg.io.metadata import RecordInfo
from anyecg.io.recording import RecordError, Recording

SNIFF_BYTES = 4096
XML_ROOTS = {"RestingECG": "muse", "restingecgdata": "philips", "AnnotatedECG": "aecg"}
SUFFIX_KINDS = {".dcm": "dicom", ".dicom": "dicom", ".ecg": "ishne", ".scp": "scp", ".xml": "xml"}
ISHNE_MAGIC = b"ISHNE1.0"
SCP_MARKER = b"SCPECG"  # reserved bytes of section 0's header, bytes 16-21 of the file

_COMMENTS = re.compile(r"<!--.*?-->", re.DOTALL)
_FIRST_ELEMENT = re.compile(r"<(?![?!])(?:[\w.-]+:)?([\w.-]+)")


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(SNIFF_BYTES)
    except OSError:
        return b""


def _as_text(head: bytes) -> str:
    """The start of a file as text, whatever its XML encoding (UTF-8, Latin-1, UTF-16 with or without BOM)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return head[3:].decode("utf-8", errors="ignore")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return head.decode("utf-16", errors="ignore")
    if head[:2] == b"<\x00":
        return head.decode("utf-16-le", errors="ignore")
    if head[:2] == b"\x00<":
        return head.decode("utf-16-be", errors="ignore")
    return head.decode("latin-1")


def xml_root_name(head: bytes) -> str | None:
    """Name (without namespace prefix) of the first element in the start of an XML file, or None."""
    text = _COMMENTS.sub("", _as_text(head)).lstrip("\ufeff \t\r\n")
    if not text.startswith("<"):
        return None
    match = _FIRST_ELEMENT.search(text)
    return match.group(1) if match else None


def sniff_kind(path: str | Path) -> str | None:
    """"dicom" | "ishne" | "scp" | "xml" from the file's content alone; None when it shows none of them."""
    head = _head(Path(path))
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(ISHNE_MAGIC):
        return "ishne"
    if head[16:22] == SCP_MARKER:
        return "scp"
    if xml_root_name(head) in XML_ROOTS:
        return "xml"
    return None


def clinical_kind(path: str | Path) -> str | None:
    """The clinical reader for a file: by content, else by extension; None when neither applies."""
    path = Path(path)
    if not path.is_file():
        return None
    return sniff_kind(path) or SUFFIX_KINDS.get(path.suffix.lower())


def listed_in_folder(path: str | Path) -> bool:
    """Whether a file found by walking a folder is a clinical record: its content says so, or it has a
    DICOM/ISHNE/SCP extension (a damaged one is listed so that reading it reports the problem). Other XML
    counts only by content, since folders also hold unrelated XML."""
    path = Path(path)
    return sniff_kind(path) is not None or SUFFIX_KINDS.get(path.suffix.lower()) in ("dicom", "ishne", "scp")


def read_xml(path: Path) -> Element:
    """The parsed document with element names stripped of their namespace (writers differ in them);
    entity declarations and external references are refused (defusedxml)."""
    data = read_bytes(path)
    try:
        root = fromstring(data)
    except DefusedXmlException as err:
        raise RecordError(path, f"XML refused: {type(err).__name__} ({err}); entity declarations and "
                                "external references are not allowed") from None
    except ParseError as err:
        raise RecordError(path, f"not well-formed XML ({err})") from None
    for element in root.iter():
        if isinstance(element.tag, str):  # comments and processing instructions have no name
            element.tag = local_name(element.tag)
    return root


def read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RecordError(path, f"cannot read file ({err.strerror or err})") from None
    if not data:
        raise RecordError(path, "empty file (0 bytes)")
    return data


def local_name(tag: str) -> str:
    """'{urn:hl7-org:v3}sequence' -> 'sequence'."""
    return tag.rsplit("}", 1)[-1]


def derive_limb_leads(signal: np.ndarray, leads: list[str], raw: list[str]
                      ) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Add III, aVR, aVL, aVF (Einthoven, Goldberger) from I and II when the file stores only those two.

    `leads` are canonical names, `raw` the file's. Returns (signal [L', n], leads, raw names (a derived
    lead's raw name is its canonical one), the derived names). Limb leads come first in the standard
    order; leads already present are left alone; with I or II missing nothing is derived.
    """
    if "I" not in leads or "II" not in leads:
        return signal, leads, raw, []
    lead_i, lead_ii = signal[leads.index("I")], signal[leads.index("II")]
    formulas = {"III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2,
                "aVL": lead_i - lead_ii / 2, "aVF": lead_ii - lead_i / 2}
    derived = [name for name in formulas if name not in leads]
    if not derived:
        return signal, leads, raw, []
    stored = list(zip(leads, raw, signal))
    limb = {name: (raw_name, row) for name, raw_name, row in stored if name in ("I", "II", *formulas)}
    limb |= {name: (name, formulas[name]) for name in derived}
    rows = [(name, *limb[name]) for name in ("I", "II", *formulas)]
    rows += [item for item in stored if item[0] not in limb]
    return (np.stack([row for _, _, row in rows]).astype(np.float32), [name for name, _, _ in rows],
            [raw_name for _, raw_name, _ in rows], derived)


def header_from(record: Recording) -> RecordInfo:
    """`RecordInfo` of a record that had to be read whole (formats without a separate header)."""
    return RecordInfo(
        record_id=record.record_id, fs=record.fs, n_samples=record.n_samples, raw_leads=record.raw_leads,
        leads=record.leads, age=record.age, sex=record.sex, labels=list(record.labels),
        patient_id=record.patient_id, meta=record.meta, source=record.source,
    )


def chunks_from(record: Recording, chunk_samples: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, record.n_samples, chunk_samples):
        yield start, record.signal[:, start:start + chunk_samples]  # [leads, n]
