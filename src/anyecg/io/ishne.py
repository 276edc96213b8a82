"""ISHNE Holter ECG (`.ecg`, ISHNE standard 1.0): a 522-byte header, an optional variable-length
block, then little-endian int16 samples interleaved [sample][lead].

Per lead the header gives a lead code (5 -> I ... 16 -> V6, 2-4 -> X/Y/Z) and a resolution in nV per
unit; the rate is one `int16` for all leads. The header's CRC-CCITT is checked (a stored 0 means the
writer did not compute one). Holter records run for days, so `iter_ishne_chunks` reads one span at a
time from a memory map and never loads the whole file. Annotation files (`ANN  1.0`) are not records.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anyecg.io.clinical import ISHNE_MAGIC
from anyecg.io.metadata import RecordInfo, parse_age
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

HEADER_START = 10  # magic (8) + CRC (2)
HEADER_BYTES = 512
# ISHNE 1.0 lead codes (header field "lead specification")
LEAD_CODES = {
    0: "unknown", 1: "bipolar", 2: "X", 3: "Y", 4: "Z", 5: "I", 6: "II", 7: "III", 8: "aVR", 9: "aVL",
    10: "aVF", 11: "V1", 12: "V2", 13: "V3", 14: "V4", 15: "V5", 16: "V6", 17: "ES", 18: "AS", 19: "AI",
}
_SEX = {1: "M", 2: "F"}
# var-block size, samples per lead, var-block offset, ECG offset, version, first name, last name, id,
# sex, race, birth date, record date, file date, start time (3 x int16 each), number of leads,
# lead codes, lead quality, resolution (12 x int16 each), pacemaker, recorder, sampling rate
_LAYOUT = struct.Struct("<iiiih40s40s20shh3h3h3h3hh12h12h12hh40sh")


@dataclass
class IshneHeader:
    n_samples: int
    data_offset: int
    fs: float
    codes: list[int]
    resolution_nv: list[int]
    patient_id: str
    sex: str | None
    age: float | None
    recorder: str
    record_date: str | None


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def _age(birth: tuple[int, int, int], recorded: tuple[int, int, int]) -> float | None:
    """Whole years from (day, month, year) pairs; -9 or 0 fields mean unknown."""
    if min(*birth, *recorded) <= 0:
        return None
    (bd, bm, by), (rd, rm, ry) = birth, recorded
    return parse_age(str(ry - by - ((rm, rd) < (bm, bd))))


def read_ishne_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    path = Path(path)
    header = _header(path)
    names = [LEAD_CODES.get(code, "unknown") for code in header.codes]
    return RecordInfo(
        record_id=path.stem, fs=header.fs, n_samples=header.n_samples, raw_leads=names, leads=canonical_leads(names),
        age=header.age, sex=header.sex, patient_id=header.patient_id or None, meta=_meta(header), source=str(path),
    )


def _header(path: Path) -> IshneHeader:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(HEADER_START + HEADER_BYTES)
    except OSError as err:
        raise RecordError(path, f"cannot read file ({err.strerror or err})") from None
    if size == 0:
        raise RecordError(path, "empty file (0 bytes)")
    if not head.startswith(ISHNE_MAGIC):
        raise RecordError(path, f"not an ISHNE 1.0 file (magic {head[:8]!r}, expected {ISHNE_MAGIC!r})")
    if len(head) < HEADER_START + HEADER_BYTES:
        raise RecordError(path, f"ISHNE header is truncated: {len(head)} bytes, the fixed header needs {HEADER_START + HEADER_BYTES}")
    fields = _LAYOUT.unpack_from(head, HEADER_START)
    var_size, n_samples, _, data_offset, _ = fields[:5]
    patient, sex = fields[7], fields[8]  # names (5, 6) are not read
    birth, recorded = fields[10:13], fields[13:16]
    n_leads = fields[22]
    codes, resolution = list(fields[23:35]), list(fields[47:59])
    recorder, rate = fields[60], fields[61]
    stored_crc = struct.unpack_from("<H", head, 8)[0]
    if stored_crc and var_size >= 0:
        with path.open("rb") as handle:
            handle.seek(HEADER_START)
            if binascii.crc_hqx(handle.read(HEADER_BYTES + var_size), 0xFFFF) != stored_crc:  # CRC-CCITT
                raise RecordError(path, f"ISHNE header checksum (CRC {stored_crc:#06x}) does not match its content: damaged header")
    if not 1 <= n_leads <= 12:
        raise RecordError(path, f"ISHNE header: number of leads {n_leads} is not 1-12")
    if rate <= 0:
        raise RecordError(path, f"ISHNE header: sampling rate {rate} is not positive")
    if any(r <= 0 for r in resolution[:n_leads]):
        raise RecordError(path, f"ISHNE header: lead resolution (nV per unit) {resolution[:n_leads]} must be positive")
    if n_samples < 0 or data_offset < HEADER_START + HEADER_BYTES:
        raise RecordError(path, f"ISHNE header: samples per lead {n_samples} / ECG block offset {data_offset} are not valid")
    needed = data_offset + n_samples * n_leads * 2
    if size < needed:
        raise RecordError(path, f"ISHNE file is truncated: {size} bytes, but {n_samples} samples x {n_leads} leads "
                                f"from byte {data_offset} need {needed}")
    return IshneHeader(
        n_samples=n_samples, data_offset=data_offset, fs=float(rate), codes=codes[:n_leads],
        resolution_nv=resolution[:n_leads], patient_id=_text(patient), sex=_SEX.get(sex),
        age=_age(birth, recorded), recorder=_text(recorder),
        record_date=f"{recorded[2]:04d}-{recorded[1]:02d}-{recorded[0]:02d}" if min(recorded) > 0 else None,
    )


def _meta(header: IshneHeader) -> dict:
    return {"format": "ishne", "device": header.recorder or None, "units": ["mV"] * len(header.codes),
            "resolution_nv": header.resolution_nv, "acquired": header.record_date}


def _samples(path: Path, header: IshneHeader) -> np.ndarray:
    """Memory map of the int16 samples, [samples, leads]."""
    return np.memmap(path, dtype="<i2", mode="r", offset=header.data_offset,
                     shape=(header.n_samples, len(header.codes)))


def iter_ishne_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                      leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    path = Path(path)
    header = _header(path)
    scale = (np.asarray(header.resolution_nv, dtype=np.float64) * 1e-6)[:, None]  # nV -> mV
    samples = _samples(path, header)
    for start in range(0, header.n_samples, chunk_samples):
        block = np.asarray(samples[start:start + chunk_samples]).T  # [leads, n]
        yield start, (block * scale).astype(np.float32)


def read_ishne(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    """A whole ISHNE record in mV; `fs` and `leads` are unused (the header has both)."""
    path = Path(path)
    header = _header(path)
    if header.n_samples == 0:
        raise RecordError(path, "ISHNE header: samples per lead is 0 (no ECG data)")
    scale = (np.asarray(header.resolution_nv, dtype=np.float64) * 1e-6)[:, None]
    signal = (np.asarray(_samples(path, header)).T * scale).astype(np.float32)  # [leads, samples]
    names = [LEAD_CODES.get(code, "unknown") for code in header.codes]
    return Recording(
        signal=signal, fs=header.fs, leads=canonical_leads(names), record_id=path.stem,
        patient_id=header.patient_id or None, age=header.age, sex=header.sex, source=str(path),
        raw_leads=names, meta=_meta(header),
    )
