"""Chunked reading: pieces concatenate to the whole record, and memory does not grow with length."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import wfdb

from anyecg.io import iter_chunks, read_record
from anyecg.signal.leads import STANDARD_12


def _concatenated(path, chunk, **kwargs):
    starts, pieces = [], []
    for start, block in iter_chunks(path, chunk, **kwargs):
        assert block.dtype == np.float32 and block.shape[1] <= chunk
        starts.append(start)
        pieces.append(block)
    assert starts == list(range(0, starts[-1] + 1, chunk))
    return np.concatenate(pieces, axis=1)


@pytest.mark.parametrize(
    "relative, chunk",
    [
        ("mitdb/100.hea", 77_777),  # format 212, odd chunk: spans start inside a packed byte triplet
        ("mitdb/208.hea", 360 * 60),
        ("cinc2021/E07500.hea", 999),  # MATLAB v4 signal file behind a byte offset
        ("ptbdb/s0010_re.hea", 4096),  # two signal files
        ("cpsc2021/data_101_6.hea", 5000),
    ],
)
def test_chunks_concatenate_to_the_whole_record(shared_data, relative, chunk):
    path = shared_data / relative
    np.testing.assert_array_equal(_concatenated(path, chunk), read_record(path).signal)


def test_chunks_of_plain_mat_and_arrays(shared_data, tmp_path):
    mat = shared_data / "code15" / "code_15_1238362.mat"
    whole = read_record(mat, leads=list(STANDARD_12)).signal
    np.testing.assert_array_equal(_concatenated(mat, 1000, leads=list(STANDARD_12)), whole)
    np.save(tmp_path / "x.npy", whole.T)  # [samples, leads] on disk
    np.testing.assert_array_equal(_concatenated(tmp_path / "x.npy", 700, fs=400, leads=list(STANDARD_12)), whole)


def test_chunk_size_must_be_positive(shared_data):
    with pytest.raises(ValueError, match="chunk_samples"):
        iter_chunks(shared_data / "mitdb" / "100", 0)


FS = 1000
N_LEADS = 12


def _write_long_record(folder, name, n_samples, block=600_000):
    """A format-16 WFDB record of n_samples x 12 leads at 1 kHz: data streamed in blocks, header by wfdb.

    Sample t of lead k holds ((7 t + 1000 k) mod 20000) - 10000, so any span can be recomputed.
    """
    sums = np.zeros(N_LEADS, dtype=np.int64)
    with open(folder / f"{name}.dat", "wb") as handle:
        for start in range(0, n_samples, block):
            digital = _expected_digital(start, min(start + block, n_samples))  # [leads, samples]
            sums += digital.sum(axis=1)
            handle.write(digital.T.astype("<i2").tobytes())
    checksum = [int(s % 65536) - 65536 if s % 65536 > 32767 else int(s % 65536) for s in sums]
    record = wfdb.Record(
        record_name=name, n_sig=N_LEADS, fs=FS, sig_len=n_samples, file_name=[f"{name}.dat"] * N_LEADS,
        fmt=["16"] * N_LEADS, adc_gain=[200.0] * N_LEADS, baseline=[0] * N_LEADS, units=["mV"] * N_LEADS,
        adc_res=[16] * N_LEADS, adc_zero=[0] * N_LEADS, init_value=[int(v) for v in _expected_digital(0, 1)[:, 0]],
        checksum=checksum, block_size=[0] * N_LEADS, sig_name=list(STANDARD_12),
    )
    record.wrheader(write_dir=str(folder))
    return folder / f"{name}.hea"


def _expected_digital(start, stop):
    t = np.arange(start, stop, dtype=np.int64)
    return ((7 * t[None, :] + 1000 * np.arange(N_LEADS)[:, None]) % 20000) - 10000  # [leads, samples]


def _stream_peak(header, chunk):
    """Peak traced allocation while streaming the whole record, checking a few chunks on the way."""
    tracemalloc.start()
    try:
        total = 0
        for start, block in iter_chunks(header, chunk):
            if start % (50 * chunk) == 0:
                np.testing.assert_array_equal(block, (_expected_digital(start, start + block.shape[1]) / 200.0).astype(np.float32))
            total += block.shape[1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return total, peak


def test_streaming_memory_stays_one_chunk_however_long_the_record(tmp_path):
    """A 1 h x 12 lead x 1 kHz record (86 MB; a 24 h Holter is the same at 24x the disk) streams
    within a few chunks of memory, the same peak as a 10 min record."""
    chunk = 10 * FS  # 10 s pieces: 480 kB as float32 [12, 10000]
    short = _write_long_record(tmp_path, "ten_minutes", 600 * FS)
    long = _write_long_record(tmp_path, "one_hour", 3600 * FS)
    file_bytes = (tmp_path / "one_hour.dat").stat().st_size
    assert file_bytes == 3600 * FS * N_LEADS * 2

    n_short, peak_short = _stream_peak(short, chunk)
    n_long, peak_long = _stream_peak(long, chunk)
    assert (n_short, n_long) == (600 * FS, 3600 * FS)
    chunk_bytes = N_LEADS * chunk * 4
    assert peak_long < 10 * chunk_bytes < file_bytes / 15
    assert peak_long < 1.25 * peak_short + 100_000  # no growth with record length

    # and a span in the middle equals wfdb's own reader
    start = 1_234_567
    record = wfdb.rdrecord(str(tmp_path / "one_hour"), sampfrom=start, sampto=start + chunk)
    block = next(b for s, b in iter_chunks(long, chunk) if s == (start // chunk) * chunk)
    offset = start - (start // chunk) * chunk
    np.testing.assert_array_equal(block[:, offset:], record.p_signal[: chunk - offset].T.astype(np.float32))
