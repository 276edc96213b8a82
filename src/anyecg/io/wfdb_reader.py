"""WFDB records: a `.hea` header plus signal files (`.dat`, `.xyz`, challenge `.mat`), `.atr` annotations.

The header is parsed here and the common signal formats are decoded with numpy straight from the
file at the right byte offset, which is several times faster than `wfdb.rdrecord` on small records
and lets `iter_wfdb_chunks` read any span without touching the rest of the file:

- fixed width: 16, 61 (big-endian 16), 160 (offset binary 16), 24, 32, 80 (offset binary 8);
- 212: two 12-bit samples packed in 3 bytes;
- challenge `.mat` signal files (MATLAB v4, `16x1+24` in the header): format 16 after a byte offset.

Records outside that (multi-segment, several samples per frame, skew, formats 8/310/311/5xx) are
read by `wfdb.rdrecord`. A record with several samples per frame is read at the rate most of its ECG
channels have (frame rate x their samples per frame, e.g. 4 x 125 Hz); `meta["channel_fs"]` gives
every channel's own rate, and a channel at another rate is dropped by the channel selection. Physical values follow WFDB
exactly: (digital - baseline) / gain, the format's invalid-sample code becomes NaN, then the
header's units are converted to millivolts.
"""

from __future__ import annotations

from functools import lru_cache

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anyecg.io.arrays import resolve_fs, resolve_leads
from anyecg.io.channels import channel_problem
from anyecg.io.metadata import RecordInfo, header_meta, millivolt_factor
from anyecg.io.recording import Annotations, RecordError, Recording

DEFAULT_FS = 250.0  # WFDB's rate when the header gives none
DEFAULT_GAIN = 200.0  # WFDB's ADC gain when the header gives none or 0

# format -> (numpy dtype of one stored unit, bytes per sample, value subtracted for offset binary)
_FIXED_WIDTH: dict[str, tuple[str, int, int]] = {
    "16": ("<i2", 2, 0),
    "61": (">i2", 2, 0),
    "160": ("<u2", 2, 32768),
    "32": ("<i4", 4, 0),
    "80": ("u1", 1, 128),
    "24": ("u1", 3, 0),  # decoded from 3 bytes
}
FAST_FORMATS = frozenset(_FIXED_WIDTH) | {"212"}
# Digital value that marks a missing sample, per format (WFDB convention).
INVALID_SAMPLE = {"80": -(2**7), "212": -(2**11), "16": -(2**15), "61": -(2**15), "160": -(2**15),
                  "24": -(2**23), "32": -(2**31)}

_RECORD_LINE = re.compile(
    r"^(?P<name>[^\s/]+)(?:/(?P<nseg>\d+))?\s+(?P<nsig>\d+)"
    r"(?:\s+(?P<fs>[0-9.eE+-]+)(?:/[0-9.eE+-]+(?:\([0-9.eE+-]*\))?)?"
    r"(?:\s+(?P<nsamp>\d+)(?:\s+.*)?)?)?\s*$"
)
_FORMAT_FIELD = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
_GAIN_FIELD = re.compile(
    r"^(?P<gain>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\((?P<baseline>[-+]?\d+)\))?(?:/(?P<units>\S*))?$"
)


@dataclass(frozen=True)
class SignalLine:
    """One signal line of a header."""

    file_name: str
    fmt: str
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    description: str


@dataclass
class WfdbHeader:
    path: Path  # the .hea file
    record_name: str
    fs: float
    n_samples: int | None
    signals: list[SignalLine]
    comments: list[str]
    n_segments: int | None = None
    segments: list[str] = field(default_factory=list)  # segment record names of a multi-segment record

    @property
    def raw_leads(self) -> list[str]:
        return [line.description for line in self.signals]

    @property
    def fast(self) -> bool:
        """True when numpy can decode every signal file directly."""
        return self.n_segments is None and all(
            line.fmt in FAST_FORMATS and line.samples_per_frame == 1 and line.skew == 0 and line.file_name != "~"
            for line in self.signals
        )

    def files(self) -> dict[str, list[int]]:
        """Signal file name -> indices of the signals stored in it, in header order."""
        groups: dict[str, list[int]] = {}
        for index, line in enumerate(self.signals):
            groups.setdefault(line.file_name, []).append(index)
        return groups


def header_path(path: str | Path) -> Path:
    """The `.hea` of a record given as its header, its stem, or one of its files."""
    path = Path(path)
    if path.suffix.lower() == ".hea":
        return path
    with_hea = path.with_name(path.name + ".hea")
    if with_hea.exists():
        return with_hea
    return path.with_suffix(".hea")


def _parse_signal_line(path: Path, number: int, line: str) -> SignalLine:
    fields = line.split(None, 8)
    if len(fields) < 2:
        raise RecordError(path, f"header line {number}: expected '<file> <format> ...', got {line!r}")
    fmt = _FORMAT_FIELD.match(fields[1])
    if fmt is None:
        raise RecordError(path, f"header line {number}: bad signal format field {fields[1]!r}")
    gain, baseline, units = DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        match = _GAIN_FIELD.match(fields[2])
        if match is None:
            raise RecordError(path, f"header line {number}: bad gain field {fields[2]!r}")
        gain = float(match.group("gain")) or DEFAULT_GAIN
        baseline = int(match.group("baseline")) if match.group("baseline") else None
        units = match.group("units") or "mV"
    try:
        adc_zero = int(fields[4]) if len(fields) > 4 else 0
    except ValueError:
        raise RecordError(path, f"header line {number}: bad ADC zero {fields[4]!r}") from None
    return SignalLine(
        file_name=fields[0],
        fmt=fmt.group("fmt"),
        samples_per_frame=int(fmt.group("spf") or 1),
        skew=int(fmt.group("skew") or 0),
        byte_offset=int(fmt.group("offset") or 0),
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,  # WFDB: baseline defaults to ADC zero
        units=units,
        description=fields[8].strip() if len(fields) > 8 else "",
    )


def parse_header(path: str | Path) -> WfdbHeader:
    """Parse a `.hea` file (record line, signal lines, comments) without reading samples.

    Parsed headers are cached by (path, modification time, size): `prepare` asks for a record's
    header and then its samples, and a header is read once. Treat the result as read-only.
    """
    path = header_path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise RecordError(path, "header file not found") from None
    except OSError as err:
        raise RecordError(path, f"cannot read header ({err.strerror})") from None
    return _parse_header_cached(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _parse_header_cached(path: Path, mtime_ns: int, size: int) -> WfdbHeader:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RecordError(path, f"cannot read header ({err.strerror})") from None
    if not data.strip():
        raise RecordError(path, "header file is empty")
    if b"\x00" in data:
        raise RecordError(path, "not a WFDB header (binary content)")
    comments: list[str] = []
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(data.decode("latin-1").splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#"):
            comments.append(line[1:].strip())
        elif line:
            lines.append((number, line))
    if not lines:
        raise RecordError(path, "header has no record line")
    number, record_line = lines[0]
    match = _RECORD_LINE.match(record_line)
    if match is None:
        raise RecordError(path, f"not a WFDB header: line {number} should be "
                                f"'<record> <n signals> <fs> <n samples>', got {record_line[:80]!r}")
    try:
        fs = float(match.group("fs")) if match.group("fs") else DEFAULT_FS
    except ValueError:
        raise RecordError(path, f"header line {number}: bad sampling rate {match.group('fs')!r}") from None
    if not np.isfinite(fs) or fs <= 0:
        raise RecordError(path, f"header line {number}: sampling rate must be positive, got {fs}")
    n_signals = int(match.group("nsig"))
    n_segments = int(match.group("nseg")) if match.group("nseg") else None
    n_samples = int(match.group("nsamp")) if match.group("nsamp") else None
    header = WfdbHeader(path=path, record_name=match.group("name"), fs=fs, n_samples=n_samples,
                        signals=[], comments=comments, n_segments=n_segments)
    if n_segments is not None:  # samples are read by wfdb; signal names come from the segments
        header.segments = [line.split()[0] for _, line in lines[1:1 + n_segments]]
        return header
    if n_signals == 0:
        raise RecordError(path, "header declares no signals")
    signal_lines = lines[1:1 + n_signals]
    if len(signal_lines) < n_signals:
        raise RecordError(path, f"header declares {n_signals} signals but has {len(signal_lines)} signal lines")
    header.signals = [_parse_signal_line(path, number, line) for number, line in signal_lines]
    return header


# --- decoding --------------------------------------------------------------------------------


def _bytes_for(fmt: str, n_values: int) -> int:
    """Bytes that hold `n_values` samples (all signals of a file, interleaved) in format `fmt`."""
    if fmt == "212":
        return (3 * n_values + 1) // 2  # an odd last sample takes 2 bytes
    return n_values * _FIXED_WIDTH[fmt][1]


def _decode(fmt: str, raw: np.ndarray) -> np.ndarray:
    """Stored bytes/units -> integer digital values (int16 for 212/80/16/61, int32 otherwise)."""
    if fmt == "212":
        if raw.size % 3:
            raw = np.concatenate([raw, np.zeros(3 - raw.size % 3, dtype=np.uint8)])
        triplets = raw.reshape(-1, 3)  # [pairs, 3] uint8
        middle = triplets[:, 1].astype(np.int16)
        values = np.empty((triplets.shape[0], 2), dtype=np.int16)  # [pairs, 2]
        np.bitwise_or(triplets[:, 0], (middle & 0x0F) << 8, out=values[:, 0], casting="unsafe")
        np.bitwise_or(triplets[:, 2], (middle & 0xF0) << 4, out=values[:, 1], casting="unsafe")
        values <<= 4  # sign-extend the 12-bit values through the int16 sign bit
        values >>= 4
        return values.reshape(-1)
    if fmt == "24":
        triplets = raw.reshape(-1, 3).astype(np.int32)  # [values, 3]
        values = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        values <<= 8  # sign-extend the 24-bit values through the int32 sign bit
        values >>= 8
        return values
    offset = _FIXED_WIDTH[fmt][2]
    if offset:  # offset binary: stored unsigned, value = stored - offset
        return raw.astype(np.int32) - offset
    return raw


def _signal_file(header: WfdbHeader, file_name: str) -> Path:
    return header.path.parent / file_name


def check_signal_files(header: WfdbHeader) -> int:
    """Raise for a missing or too short signal file; return the record length in samples."""
    n_samples = header.n_samples
    for file_name, indices in header.files().items():
        line = header.signals[indices[0]]
        formats = {header.signals[i].fmt for i in indices}
        if len(formats) > 1:
            raise RecordError(header.path, f"signal file {file_name} mixes formats {sorted(formats)}")
        file = _signal_file(header, file_name)
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise RecordError(header.path, f"missing signal file {file_name} (named in the header)") from None
        if n_samples is None:  # length not in the header: as many whole frames as the file holds
            payload = size - line.byte_offset
            n_values = payload * 2 // 3 if line.fmt == "212" else payload // _FIXED_WIDTH[line.fmt][1]
            n_samples = max(n_values // len(indices), 0)
        needed = line.byte_offset + _bytes_for(line.fmt, n_samples * len(indices))
        if size < needed:
            raise RecordError(
                header.path,
                f"signal file {file_name} is truncated: {size} bytes, but {n_samples} samples x "
                f"{len(indices)} signals in format {line.fmt} need {needed}",
            )
    return int(n_samples or 0)


def _read_file_span(header: WfdbHeader, file_name: str, indices: list[int], start: int, stop: int) -> np.ndarray:
    """Integer [stop - start, signals in file]: digital samples of one signal file."""
    line = header.signals[indices[0]]
    n_in_file = len(indices)
    first, last = start * n_in_file, stop * n_in_file  # flat (interleaved) value indices
    if line.fmt == "212":
        first_aligned = first - first % 2  # samples come in pairs of 3 bytes
        byte_start = line.byte_offset + 3 * first_aligned // 2
        n_bytes = _bytes_for("212", last - first_aligned)
        skip = first - first_aligned
    else:
        width = _FIXED_WIDTH[line.fmt][1]
        byte_start = line.byte_offset + first * width
        n_bytes = (last - first) * width
        skip = 0
    dtype = np.uint8 if line.fmt in ("212", "24") else np.dtype(_FIXED_WIDTH[line.fmt][0])
    count = n_bytes // np.dtype(dtype).itemsize
    raw = np.fromfile(_signal_file(header, file_name), dtype=dtype, count=count, offset=byte_start)
    if raw.size < count:
        raise RecordError(header.path, f"signal file {file_name} ended early: wanted {count} values "
                                       f"from byte {byte_start}, got {raw.size}")
    values = _decode(line.fmt, raw)[skip:skip + last - first]
    return values.reshape(stop - start, n_in_file)


def _physical(header: WfdbHeader, indices: list[int], digital: np.ndarray, out: np.ndarray) -> None:
    """Write mV into float32 out[indices] from integer digital values [samples, signals in file]."""
    invalid = INVALID_SAMPLE[header.signals[indices[0]].fmt]
    scratch = np.empty(digital.shape[0], dtype=np.float64)  # [T]
    for column, index in enumerate(indices):
        line = header.signals[index]
        values = digital[:, column]
        # float64 as wfdb computes it, then one rounding to float32
        np.subtract(values, np.float64(line.baseline), out=scratch)
        np.divide(scratch, line.gain, out=scratch)
        scale = millivolt_factor(line.units)
        if scale not in (None, 1.0):
            scratch *= scale
        out[index] = scratch
        missing = values == invalid
        if missing.any():
            out[index, missing] = np.nan


def read_span(header: WfdbHeader, start: int, stop: int) -> np.ndarray:
    """float32 [signals, stop - start] mV for a fast-path record (see `WfdbHeader.fast`)."""
    out = np.empty((len(header.signals), stop - start), dtype=np.float32)  # [L, T]
    for file_name, indices in header.files().items():
        digital = _read_file_span(header, file_name, indices, start, stop)  # [T, signals in file]
        _physical(header, indices, digital, out)
    return out


@dataclass(frozen=True)
class FrameLayout:
    """Samples per frame of each signal, and the one kept as the record's rate (see `record_spf`)."""

    per_signal: list[int]
    record: int

    def rates(self, frame_fs: float) -> list[float]:
        return [frame_fs * spf for spf in self.per_signal]


def record_spf(names: list[str], units: list[str], per_signal: list[int]) -> int:
    """The samples per frame that the record is read at: the one most ECG channels share (ties: the
    higher); channels at other rates are brought to it only to fill their rows, and reported."""
    ecg = [spf for name, unit, spf in zip(names, units, per_signal) if channel_problem(name, unit) is None]
    candidates = ecg or per_signal
    return max(set(candidates), key=lambda spf: (candidates.count(spf), spf)) if candidates else 1


def _to_record_rate(signals: list[np.ndarray], layout: FrameLayout, n_frames: int) -> np.ndarray:
    """float64 [signals, n_frames * layout.record] from wfdb's per-signal arrays (n_frames * spf each).

    Signals at the record's rate are taken as they are; any other is sampled at the nearest earlier
    sample (those channels are dropped by the channel selection, never stored)."""
    n_out = n_frames * layout.record
    out = np.empty((len(signals), n_out), dtype=np.float64)
    for row, (values, spf) in enumerate(zip(signals, layout.per_signal)):
        if spf == layout.record:
            out[row] = values[:n_out]
        else:
            out[row] = values[np.arange(n_out) * spf // layout.record]
    return out


def _read_with_wfdb(header: WfdbHeader, start: int | None = None,
                    stop: int | None = None) -> tuple[np.ndarray, list[str], list[str], FrameLayout]:
    """(float32 [signals, samples] mV, raw lead names, units, frame layout) via wfdb.rdrecord.

    `start`/`stop` count frames; the signal has `layout.record` samples per frame."""
    import wfdb

    try:
        record = wfdb.rdrecord(str(header.path.with_suffix("")), sampfrom=start or 0, sampto=stop, physical=True,
                               smooth_frames=False)
    except FileNotFoundError as err:
        missing = Path(err.filename or "?").name
        raise RecordError(header.path, f"missing signal file {missing} (named in the header)") from None
    except Exception as err:  # wfdb raises many types; report them all as a bad record
        raise RecordError(header.path, f"wfdb could not read the record: {type(err).__name__}: {err}") from None
    names = list(record.sig_name or [])
    units = list(record.units or ["mV"] * record.n_sig)
    per_signal = [int(spf) for spf in (record.samps_per_frame or [1] * record.n_sig)]
    # the header's own parse decides the rate where there is one, so header and samples always agree
    layout = _header_layout(header) if header.signals else FrameLayout(per_signal, record_spf(names, units, per_signal))
    n_frames = min((len(values) // spf for values, spf in zip(record.e_p_signal, per_signal)), default=0)
    signal = _to_record_rate(record.e_p_signal, layout, n_frames)
    signal *= np.array([millivolt_factor(u) or 1.0 for u in units], dtype=np.float64)[:, None]
    return signal.astype(np.float32), names, units, layout


def _header_layout(header: WfdbHeader, segments: list | None = None) -> FrameLayout:
    """The frame layout from a header (or, for a multi-segment record, its first full segment)."""
    if segments is not None:
        full = [s for s in segments if s is not None and s.samps_per_frame]
        names = list(full[0].sig_name) if full else []
        units = list(full[0].units or ["mV"] * len(names)) if full else []
        per_signal = [int(spf) for spf in full[0].samps_per_frame] if full else []
    else:
        names, units = header.raw_leads, [line.units for line in header.signals]
        per_signal = [line.samples_per_frame for line in header.signals]
    return FrameLayout(per_signal, record_spf(names, units, per_signal))


# --- public entry points -------------------------------------------------------------------


def _record_meta(header: WfdbHeader, units: list[str], layout: FrameLayout | None = None) -> dict:
    unknown = sorted({u for u in units if millivolt_factor(u) is None})
    formats = "+".join(sorted({line.fmt for line in header.signals})) or "multi-segment"
    meta = {"format": f"wfdb/{formats}", "units": units, "header": str(header.path)}
    if layout is not None and any(spf != 1 for spf in layout.per_signal):
        meta["samples_per_frame"] = layout.per_signal
        meta["frame_fs"] = header.fs
        meta["channel_fs"] = layout.rates(header.fs)
    if unknown:
        meta["unscaled_units"] = unknown  # kept as stored; not known how to turn them into mV
    return meta


def read_wfdb_header(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> RecordInfo:
    header = parse_header(path)
    if header.n_segments is not None:
        import wfdb

        try:
            layout = wfdb.rdheader(str(header.path.with_suffix("")), rd_segments=True)
        except FileNotFoundError as err:
            raise RecordError(header.path, f"missing segment header {Path(err.filename or '?').name} "
                                           "(named in the header)") from None
        except Exception as err:
            raise RecordError(header.path, f"wfdb could not read the multi-segment header: {err}") from None
        raw = list(layout.sig_name or [])
        units_by_name: dict[str, str] = {}  # the layout or first segment that has a signal gives its units
        for segment in layout.segments or []:
            if segment is not None:
                for name, unit in zip(segment.sig_name or [], segment.units or []):
                    units_by_name.setdefault(name, unit or "mV")
        units = [units_by_name.get(name, "mV") for name in raw]
        frames = _header_layout(header, layout.segments)
        n_samples = int(layout.sig_len) * frames.record
    else:
        raw, units = header.raw_leads, [line.units for line in header.signals]
        frames = _header_layout(header)
        if header.fast:
            n_samples = check_signal_files(header)  # also catches a short or missing signal file
        elif header.n_samples is not None:
            n_samples = header.n_samples * frames.record
        else:
            n_samples = _read_with_wfdb(header)[0].shape[1]
    rate = resolve_fs(header.path, header.fs, fs) * frames.record
    raw, canonical = resolve_leads(header.path, raw, leads, len(raw))
    info = header_meta(header.comments, header.record_name, header.path.parent)
    return RecordInfo(
        record_id=header.record_name, fs=rate, n_samples=n_samples, raw_leads=raw, leads=canonical,
        age=info.age, sex=info.sex, labels=info.labels, patient_id=info.patient_id,
        meta={**_record_meta(header, units, frames), **info.meta}, source=str(header.path),
    )


def read_wfdb(path: str | Path, *, fs: float | None = None, leads: list[str] | None = None) -> Recording:
    """A whole WFDB record in mV, with its `.atr` annotations when the file exists.

    A record with several samples per frame is read at the rate of its ECG channels (see `record_spf`)."""
    header = parse_header(path)
    rate = resolve_fs(header.path, header.fs, fs)
    layout = None
    if header.fast:
        n_samples = check_signal_files(header)
        signal = read_span(header, 0, n_samples)
        raw, units = header.raw_leads, [line.units for line in header.signals]
    else:
        signal, raw, units, layout = _read_with_wfdb(header)
        rate *= layout.record
    raw, canonical = resolve_leads(header.path, raw, leads, signal.shape[0])
    info = header_meta(header.comments, header.record_name, header.path.parent)
    annotations = read_wfdb_annotations(header.path, fs=rate)
    return Recording(
        signal=signal, fs=rate, leads=canonical, record_id=header.record_name, patient_id=info.patient_id,
        age=info.age, sex=info.sex, labels=info.labels, source=str(header.path), raw_leads=raw,
        annotations=annotations, meta={**_record_meta(header, units, layout), **info.meta},
    )


def iter_wfdb_chunks(path: str | Path, chunk_samples: int, *, fs: float | None = None,
                     leads: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(start, float32 [leads, n] mV) spans read straight from the file; memory stays one chunk."""
    header = parse_header(path)
    resolve_fs(header.path, header.fs, fs)
    if header.fast:
        n_samples = check_signal_files(header)
        resolve_leads(header.path, header.raw_leads, leads, len(header.signals))
        for start in range(0, n_samples, chunk_samples):
            yield start, read_span(header, start, min(start + chunk_samples, n_samples))
        return
    info = read_wfdb_header(header.path, fs=fs, leads=leads)
    spf = round(info.fs / header.fs)  # samples per frame at the record's rate
    n_frames, chunk_frames = info.n_samples // spf, max(1, chunk_samples // spf)
    for start in range(0, n_frames, chunk_frames):
        yield start * spf, _read_with_wfdb(header, start, min(start + chunk_frames, n_frames))[0]


# Standard WFDB annotation codes (ecgcodes.h) -> symbols; 0 is "not an annotation".
ANNOTATION_SYMBOLS: dict[int, str] = {
    1: "N", 2: "L", 3: "R", 4: "a", 5: "V", 6: "F", 7: "J", 8: "A", 9: "S", 10: "E", 11: "j", 12: "/",
    13: "Q", 14: "~", 16: "|", 18: "s", 19: "T", 20: "*", 21: "D", 22: '"', 23: "=", 24: "p", 25: "B",
    26: "^", 27: "t", 28: "+", 29: "u", 30: "?", 31: "!", 32: "[", 33: "]", 34: "e", 35: "n", 36: "@",
    37: "x", 38: "f", 39: "(", 40: ")", 41: "r",
}
_SKIP, _AUX, _NOTE = 59, 63, 22  # SKIP and AUX words; NOTE annotations


_TIME_RESOLUTION = re.compile(r"^##\s*time resolution:\s*([0-9.eE+-]+)")
_CUSTOM_CODE = re.compile(r"^(\d+)\s+(\S+)")


def parse_mit_annotations(data: bytes) -> Annotations | None:
    """Decode a MIT-format annotation file; None when it needs wfdb (undefined codes, other notes at 0).

    The file is a stream of 16-bit little-endian words: 6-bit code, 10-bit sample increment. Code 59
    (SKIP) carries a 32-bit increment in the next two words; 60-63 (NUM, SUB, CHN, AUX) modify the
    annotation before them, AUX holding a byte string; a zero word ends the file. NOTE annotations at
    sample 0 may define the file's time resolution (`## time resolution: 500`) or custom codes
    (`42 CAL Calibration`); both are applied, not listed.
    """
    words = np.frombuffer(data[: len(data) // 2 * 2], dtype="<u2").tolist()
    symbols = dict(ANNOTATION_SYMBOLS)
    fs = None
    samples: list[int] = []
    codes: list[int] = []
    notes: list[str] = []
    time, i, end = 0, 0, len(words) - 1  # the last word is the end marker
    while i < end:
        code = words[i] >> 10
        while code == _SKIP:
            skip = (words[i + 1] << 16) | words[i + 2]
            time += skip - 2**32 if skip >= 2**31 else skip
            i += 3
            code = words[i] >> 10
        time += words[i] & 0x3FF
        i += 1
        note = ""
        while i < len(words) and (words[i] >> 10) > _SKIP:
            if words[i] >> 10 == _AUX:
                length = words[i] & 0xFF
                start = 2 * (i + 1)
                note = data[start:start + length].decode("latin-1").rstrip("\x00")
                i += 1 + (length + 1) // 2
            else:
                i += 1
        if code == 0:
            continue  # not an annotation
        if code == _NOTE and time == 0:
            if resolution := _TIME_RESOLUTION.match(note):
                fs = float(resolution.group(1))
                continue
            if custom := _CUSTOM_CODE.match(note):
                symbols[int(custom.group(1))] = custom.group(2)
                continue
            return None  # other notes at sample 0 (program names): wfdb decides which to keep
        if code not in symbols:
            return None  # a code this file does not define
        samples.append(time)
        codes.append(code)
        notes.append(note)
    return Annotations(sample=np.asarray(samples, dtype=np.int64),
                       symbol=[symbols[code] for code in codes], aux=notes, fs=fs)


def read_wfdb_annotations(path: str | Path, extension: str = "atr", fs: float | None = None) -> Annotations | None:
    """Annotations of a record (`<record>.<extension>`), or None when there is no such file.

    With `fs`, sample indices are converted to that rate from the file's own time resolution (else
    the header's frame rate, WFDB's default)."""
    annotations = _read_annotation_file(path, extension)
    if annotations is None or fs is None:
        return annotations
    source_fs = annotations.fs or parse_header(path).fs
    if source_fs != fs:
        annotations.sample = np.round(annotations.sample * (fs / source_fs)).astype(np.int64)
    annotations.fs = fs
    return annotations


def _read_annotation_file(path: str | Path, extension: str) -> Annotations | None:
    base = header_path(path).with_suffix("")
    file = base.with_name(f"{base.name}.{extension}")
    if not file.exists():
        return None
    try:
        annotations = parse_mit_annotations(file.read_bytes())
    except IndexError:
        raise RecordError(file, "annotation file is truncated (ends inside an annotation)") from None
    if annotations is not None:
        return annotations
    import wfdb

    try:
        annotation = wfdb.rdann(str(base), extension)
    except Exception as err:  # wfdb raises many types; report them all as a bad file
        raise RecordError(file, f"unreadable annotation file: {type(err).__name__}: {err}") from None
    return Annotations(
        sample=np.asarray(annotation.sample, dtype=np.int64),
        # wfdb gives NaN for a code the file does not define
        symbol=[symbol if isinstance(symbol, str) else "unknown" for symbol in annotation.symbol],
        aux=[(note or "").rstrip("\x00") for note in (annotation.aux_note or [""] * len(annotation.symbol))],
        fs=float(annotation.fs) if annotation.fs else None,
    )
