"""SCP-ECG (EN 1064 / ISO 11073-91064) files, versions 1.x to 2.x.

Layout: file CRC (2 bytes) and length (4), then sections, each with a 16-byte header (CRC, id,
length, versions, and `SCPECG` reserved bytes). Section 0 points to the others; read here:

- 1: patient and device tags (id, age, birth date, sex, acquiring device, acquisition date);
- 2: Huffman tables (`19999` = the standard's default table), absent for uncompressed data;
- 3: leads (SCP lead codes, first and last sample), and whether reference beats were subtracted;
- 6: rhythm data: nV per unit, sample interval in us, difference coding (none, first, second),
  bimodal compression, then each lead's bytes;
- 8 / 11: the machine's interpretation statements (full text / universal codes), used as labels.

Files that rely on reference-beat subtraction (sections 4 and 5) or bimodal compression, and Huffman
tables that switch tables, are refused with a clear error rather than decoded wrongly. The file CRC
(CRC-CCITT) is checked; a stored 0 means the writer did not compute one. Stored I, II and V1-V6
without III, aVR, aVL, aVF (8-lead carts) get those four derived, listed in `meta["derived_leads"]`.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from anyecg.io.clinical import chunks_from, derive_limb_leads, header_from, read_bytes
from anyecg.io.metadata import RecordInfo, parse_age
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_leads

SECTION_HEADER = 16
DEFAULT_HUFFMAN = 19999
# SCP lead codes (section 3) for the leads models know; others keep their code as name
LEAD_CODES = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 16: "X", 17: "Y", 18: "Z",
              61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}
_AGE_UNITS = {1: 1.0, 2: 1 / 12, 3: 7 / 365.25, 4: 1 / 365.25, 5: 1 / 8766}
_SEX = {1: "M", 2: "F"}


def _default_table() -> list[tuple[int, int, int, int, int]]:
    """The standard's default Huffman table as (prefix bits, total bits, switch, value, code MSB first):
    0 -> '0', +-m (m = 1..8) -> m ones, a zero and a sign bit, then escapes '1111111110' + 8-bit and
    '1111111111' + 16-bit values."""
    table = [(1, 1, 1, 0, 0b0)]
    for magnitude in range(1, 9):
        code = ((1 << magnitude) - 1) << 2  # 'magnitude' ones, a zero, then the sign bit
        table += [(magnitude + 2, magnitude + 2, 1, magnitude, code), (magnitude + 2, magnitude + 2, 1, -magnitude, code | 1)]
    return table + [(10, 18, 1, 0, 0b1111111110), (10, 26, 1, 0, 0b1111111111)]


class _Sections:
    """Bounds of each section's payload, from the pointers of section 0."""

    def __init__(self, path: Path, data: bytes):
        self.path, self.data = path, data
        if len(data) < 6 + SECTION_HEADER:
            raise RecordError(path, f"too short for SCP-ECG ({len(data)} bytes)")
        stored_crc, size = struct.unpack_from("<HI", data, 0)
        if size != len(data):
            raise RecordError(path, f"SCP record length field says {size} bytes, the file has {len(data)}")
        if stored_crc and binascii.crc_hqx(data[2:], 0xFFFF) != stored_crc:  # CRC-CCITT
            raise RecordError(path, f"SCP file checksum (CRC {stored_crc:#06x}) does not match: damaged file")
        section_id, length = struct.unpack_from("<HI", data, 6 + 2)
        if section_id != 0 or not SECTION_HEADER < length <= len(data) - 6:
            raise RecordError(path, f"SCP section 0 header is invalid (id {section_id}, length {length})")
        self.bounds: dict[int, tuple[int, int]] = {}
        for offset in range(6 + SECTION_HEADER, 6 + length - 9, 10):
            number, size, index = struct.unpack_from("<HII", data, offset)
            if size == 0:
                continue
            start, end = index - 1 + SECTION_HEADER, index - 1 + size  # index is 1-based
            if index < 1 or end > len(data) or size < SECTION_HEADER:
                raise RecordError(path, f"SCP section {number} pointer (offset {index}, length {size}) lies outside the file")
            self.bounds[number] = (start, end)

    def payload(self, number: int) -> bytes | None:
        bounds = self.bounds.get(number)
        return self.data[bounds[0]:bounds[1]] if bounds else None


def _huffman_tables(path: Path, section: bytes | None) -> list | None:
    """None for uncompressed data; else the tables (a list of code lists)."""
    if section is None:
        return None
    count = struct.unpack_from("<H", section, 0)[0]
    if count == DEFAULT_HUFFMAN:
        return [_default_table()]
    tables, offset = [], 2
    for _ in range(count):
        n_codes = struct.unpack_from("<H", section, offset)[0]
        offset += 2
        codes = []
        for _ in range(n_codes):
            prefix, total, switch, value, code = struct.unpack_from("<BBBhI", section, offset)
            offset += 9
            msb_first = int(f"{code:032b}"[::-1][:prefix], 2)  # stored bit-reversed
            codes.append((prefix, total, switch, value, msb_first))
        tables.append(codes)
    return tables


def _huffman_decode(path: Path, lead: str, data: bytes, table: list, n: int) -> np.ndarray:
    """n values from a bit stream (MSB first)."""
    by_prefix = {(prefix, code): (total, switch, value) for prefix, total, switch, value, code in table}
    longest = max(prefix for prefix, *_ in table)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    out = np.empty(n, dtype=np.int64)
    position, count = 0, 0
    while count < n:
        code, length = 0, 0
        while True:
            if position >= len(bits):
                raise RecordError(path, f"section 6 lead {lead}: Huffman data ends after {count} of {n} samples")
            code = code << 1 | int(bits[position])
            position += 1
            length += 1
            if (length, code) in by_prefix:
                break
            if length >= longest:
                raise RecordError(path, f"section 6 lead {lead}: bit pattern {code:0{length}b} is not in the Huffman table")
        total, switch, value = by_prefix[(length, code)]
        if switch == 0:
            raise RecordError(path, f"section 6 lead {lead}: Huffman table switching is not supported")
        extra = total - length
        if extra:
            if position + extra > len(bits):
                raise RecordError(path, f"section 6 lead {lead}: Huffman data ends after {count} of {n} samples")
            raw = int("".join(map(str, bits[position:position + extra])), 2)
            position += extra
            value = raw - (1 << extra) if raw >> (extra - 1) else raw  # two's complement
        out[count] = value
        count += 1
    return out


def _undifference(values: np.ndarray, order: int) -> np.ndarray:
    if order == 1:
        return np.cumsum(values)
    if order == 2:  # x[n] = d[n] + 2 x[n-1] - x[n-2]
        out = values.copy()
        for k in range(2, len(out)):
            out[k] = values[k] + 2 * out[k - 1] - out[k - 2]
        return out
    return values


def _leads(path: Path, section: bytes | None) -> tuple[list[int], int, bool]:
    """(lead codes, samples per lead, reference beats subtracted) from section 3."""
    if section is None:
        raise RecordError(path, "SCP file has no section 3 (lead definitions)")
    n_leads, flags = section[0], section[1]
    if n_leads == 0:
        raise RecordError(path, "SCP section 3 declares 0 leads")
    codes, lengths = [], set()
    for k in range(n_leads):
        first, last, code = struct.unpack_from("<IIB", section, 2 + 9 * k)
        codes.append(code)
        lengths.add(last - max(first, 1) + 1)  # 1-based; some v1.3 writers start at 0
    if len(lengths) != 1:
        raise RecordError(path, f"SCP section 3 leads differ in length {sorted(lengths)}; one record needs one length")
    return codes, lengths.pop(), bool(flags & 1)


def _rhythm(path: Path, sections: _Sections, names: list[str], n_samples: int) -> tuple[np.ndarray, float, float]:
    """([leads, samples] integers, nV per unit, rate)."""
    section = sections.payload(6)
    if section is None:
        raise RecordError(path, "SCP file has no section 6 (rhythm data)")
    nv_per_unit, interval_us, difference, bimodal = struct.unpack_from("<HHBB", section, 0)
    if nv_per_unit == 0:
        raise RecordError(path, "SCP section 6: amplitude value multiplier (nV per unit) is 0")
    if interval_us == 0:
        raise RecordError(path, "SCP section 6: sample time interval is 0 us")
    if bimodal:
        raise RecordError(path, "SCP section 6: bimodal compression is not supported")
    if difference not in (0, 1, 2):
        raise RecordError(path, f"SCP section 6: difference coding {difference} is unknown (0, 1, 2)")
    tables = _huffman_tables(path, sections.payload(2))
    sizes = struct.unpack_from(f"<{len(names)}H", section, 6)
    offset = 6 + 2 * len(names)
    rows = []
    for name, size in zip(names, sizes):
        chunk = section[offset:offset + size]
        offset += size
        if len(chunk) < size:
            raise RecordError(path, f"SCP section 6 lead {name}: {size} bytes declared, {len(chunk)} present (truncated)")
        if tables is None:
            if size != 2 * n_samples:
                raise RecordError(path, f"SCP section 6 lead {name} holds {size // 2} samples, section 3 says {n_samples}")
            values = np.frombuffer(chunk, dtype="<i2").astype(np.int64)
        else:
            values = _huffman_decode(path, name, chunk, tables[0], n_samples)
        rows.append(_undifference(values, difference))
    rate = 1e6 / interval_us
    if abs(rate - round(rate)) < 1e-3 * rate:  # whole microseconds: 600 Hz is stored as 1667 us
        rate = float(round(rate))
    return np.stack(rows), float(nv_per_unit), rate


def _tags(section: bytes | None) -> dict[int, bytes]:
    tags: dict[int, bytes] = {}
    offset = 0
    while section is not None and offset + 3 <= len(section):
        tag, length = section[offset], struct.unpack_from("<H", section, offset + 1)[0]
        if tag == 255:
            break
        tags.setdefault(tag, section[offset + 3:offset + 3 + length])
        offset += 3 + length
    return tags


def _string(raw: bytes | None) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip() if raw else ""


def _age(tags: dict[int, bytes]) -> float | None:
    if len(tags.get(4, b"")) >= 3:
        value, unit = struct.unpack_from("<HB", tags[4])
        if value and unit in _AGE_UNITS:
            return parse_age(str(round(value * _AGE_UNITS[unit], 2)))
    birth, taken = tags.get(5, b""), tags.get(25, b"")
    if len(birth) >= 4 and len(taken) >= 4:
        (by, bm, bd), (ty, tm, td) = struct.unpack_from("<HBB", birth), struct.unpack_from("<HBB", taken)
        if by and ty:
            return parse_age(str(ty - by - ((tm, td) < (bm, bd))))
    return None


def _device(tags: dict[int, bytes]) -> str | None:
    """Model (bytes 8-13 of tag 14) and the manufacturer string that ends the tag."""
    raw = tags.get(14, b"")
    model = _string(raw[8:14])
    strings = [part.decode("latin-1").strip() for part in raw[36 + (raw[35] if len(raw) > 35 else 0):].split(b"\x00")]
    maker = next((s for s in reversed(strings) if s.isprintable() and len(s) > 1 and s.lower() != "unknown"), "")
    return " ".join(part for part in (maker, model) if part) or None


def _statements(sections: _Sections) -> list[str]:
    """Section 8 (text) or 11 (universal statements): confirmed, date, time, count, then statements."""
    out = []
    for number, text_offset in ((8, 3), (11, 4)):  # section 11 has a statement type byte before the text
        section = sections.payload(number)
        if not section or len(section) < 9:
            continue
        offset = 9
        for _ in range(section[8]):
            if offset + 3 > len(section):
                break
            length = struct.unpack_from("<H", section, offset + 1)[0]
            text = _string(section[offset + text_offset:offset + 3 + length])
            offset += 3 + length
            if text and text not in out:
                out.append(text)
        if out:
            break
    return out


def read_scp(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    """An SCP-ECG file's rhythm data in mV; `fs` and `leads` are unused (the file has both)."""
    path = Path(path)
    sections = _Sections(path, read_bytes(path))
    codes, n_samples, subtracted = _leads(path, sections.payload(3))
    if subtracted:
        raise RecordError(path, "SCP section 3: reference beat subtraction (sections 4/5) is not supported")
    names = [LEAD_CODES.get(code, f"code {code}") for code in codes]
    values, nv_per_unit, rate = _rhythm(path, sections, names, n_samples)
    signal, canonical, raw, derived = derive_limb_leads(values * (nv_per_unit * 1e-6), canonical_leads(names), names)
    tags = _tags(sections.payload(1))
    taken = tags.get(25, b"")
    statements = _statements(sections)
    meta = {
        "format": "scp_ecg",
        "device": _device(tags),
        "units": ["mV"] * len(canonical),
        "nv_per_unit": nv_per_unit,
        "derived_leads": derived,
        "statements": statements,
        "acquired": "{:04d}-{:02d}-{:02d}".format(*struct.unpack_from("<HBB", taken)) if len(taken) >= 4 else None,
    }
    return Recording(
        signal=signal.astype(np.float32), fs=rate, leads=canonical, record_id=path.stem,
        patient_id=_string(tags.get(2)) or None, age=_age(tags),
        sex=_SEX.get(tags.get(8, b"\x00")[0] if tags.get(8) else 0), labels=statements, source=str(path),
        raw_leads=raw, meta=meta,
    )


def read_scp_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    return header_from(read_scp(path))


def iter_scp_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                    leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """SCP leads are compressed whole: read whole, then sliced."""
    return chunks_from(read_scp(path), chunk_samples)
