"""WFDB records read by anyecg equal wfdb's own reader, on every real record and on every format."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from anyecg.io import read_annotations, read_header, read_record
from anyecg.io.wfdb_reader import parse_header
from anyecg.signal.leads import STANDARD_12


def _assert_matches_wfdb(header, reference_mv):
    rec = read_record(header)
    reference = reference_mv(header)
    wfdb_record = wfdb.rdheader(str(header.with_suffix("")))
    assert rec.signal.dtype == np.float32
    assert rec.signal.shape == reference.shape
    # Same float64 arithmetic as wfdb, one rounding to float32: equal to wfdb's values cast to float32.
    np.testing.assert_array_equal(rec.signal, reference.astype(np.float32), err_msg=str(header))
    assert rec.fs == wfdb_record.fs
    assert rec.raw_leads == wfdb_record.sig_name
    assert rec.record_id == wfdb_record.record_name
    info = read_header(header)
    assert (info.n_samples, info.fs, info.leads) == (rec.n_samples, rec.fs, rec.leads)


@pytest.mark.parametrize("database", ["mitdb", "cinc2021", "cpsc2021", "ptbdb"])
def test_every_real_wfdb_record_matches_wfdb(shared_data, reference_mv, database):
    headers = sorted((shared_data / database).glob("*.hea"))
    assert headers, f"no headers in {database}"
    for header in headers:
        _assert_matches_wfdb(header, reference_mv)


def test_record_can_be_named_by_stem_or_signal_file(shared_data):
    by_header = read_record(shared_data / "cinc2021" / "E07500.hea")
    for other in (shared_data / "cinc2021" / "E07500", shared_data / "cinc2021" / "E07500.mat"):
        np.testing.assert_array_equal(read_record(other).signal, by_header.signal)
    assert read_record(shared_data / "mitdb" / "100").source.endswith("100.hea")


def test_ptb_fifteen_leads_across_two_signal_files(shared_data, reference_mv):
    header = shared_data / "ptbdb" / "s0010_re.hea"
    assert set(parse_header(header).files()) == {"s0010_re.dat", "s0010_re.xyz"}
    rec = read_record(header)
    assert rec.leads == list(STANDARD_12) + ["X", "Y", "Z"]
    assert rec.raw_leads[-3:] == ["vx", "vy", "vz"]
    assert rec.signal.shape == (15, 38400) and rec.fs == 1000
    np.testing.assert_array_equal(rec.signal[12:], reference_mv(header)[12:].astype(np.float32))


def test_mitdb_lead_names_are_canonical(shared_data):
    assert read_record(shared_data / "mitdb" / "100").leads == ["II", "V5"]  # MLII is modified lead II
    assert read_record(shared_data / "mitdb" / "201").leads == ["II", "V1"]


def test_format_is_recorded(shared_data):
    assert read_record(shared_data / "mitdb" / "100").meta["format"] == "wfdb/212"
    assert read_header(shared_data / "cinc2021" / "E07500").meta["format"] == "wfdb/16"  # MATLAB v4 payload


def _same_annotations(ours, theirs):
    assert ours is not None
    np.testing.assert_array_equal(ours.sample, theirs.sample)
    assert ours.symbol == list(theirs.symbol)
    assert ours.aux == [note.rstrip("\x00") for note in theirs.aux_note]


@pytest.mark.parametrize("database", ["mitdb", "cpsc2021"])
def test_annotations_equal_wfdb_rdann(shared_data, database):
    files = sorted((shared_data / database).glob("*.atr"))
    assert files
    for file in files:
        _same_annotations(read_annotations(file), wfdb.rdann(str(file.with_suffix("")), "atr"))


def test_read_record_attaches_annotations(shared_data):
    rec = read_record(shared_data / "cpsc2021" / "data_101_6")
    reference = wfdb.rdann(str(shared_data / "cpsc2021" / "data_101_6"), "atr")
    _same_annotations(rec.annotations, reference)
    assert {"(AFIB", "(N"} <= set(rec.annotations.aux)
    mitdb = read_record(shared_data / "mitdb" / "100")
    assert mitdb.annotations.symbol[:2] == ["+", "N"] and mitdb.annotations.aux[0] == "(N"
    assert read_record(shared_data / "cinc2021" / "E07500").annotations is None  # no .atr
    assert read_annotations(shared_data / "cinc2021" / "E07500") is None


def _written(tmp_path, name, signal, fmt, units=None, samps_per_frame=None):
    """Write `signal` [samples, leads] with wfdb.wrsamp in format(s) `fmt`; return the .hea path."""
    n_leads = signal.shape[1]
    wfdb.wrsamp(
        name, fs=250, units=units or ["mV"] * n_leads, sig_name=[f"V{i + 1}" for i in range(n_leads)],
        p_signal=signal, fmt=[fmt] * n_leads if isinstance(fmt, str) else fmt, write_dir=str(tmp_path),
        samps_per_frame=samps_per_frame,
    )
    return tmp_path / f"{name}.hea"


def _test_signal(n_samples, n_leads, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 250
    signal = np.stack([np.sin(2 * np.pi * (1 + k) * t) * (1 + k) + 0.05 * rng.standard_normal(n_samples) for k in range(n_leads)], axis=1)
    signal[5, 0] = np.nan  # becomes the format's invalid-sample code
    return signal


@pytest.mark.parametrize("fmt", ["16", "212", "24", "32", "80"])
def test_fast_path_formats_match_wfdb(tmp_path, reference_mv, fmt):
    # 3 leads x 1001 samples: an odd number of values, so format 212 ends on a half-filled triplet
    header = _written(tmp_path, f"rec{fmt}", _test_signal(1001, 3), fmt)
    assert parse_header(header).fast
    rec = read_record(header)
    reference = reference_mv(header)
    assert np.isnan(rec.signal[0, 5]) and np.isnan(reference[0, 5])
    np.testing.assert_array_equal(rec.signal, reference.astype(np.float32))


@pytest.mark.parametrize("fmt", ["61", "160"])
def test_byte_order_and_offset_formats_match_wfdb(tmp_path, reference_mv, fmt):
    """wfdb cannot write 61 (big-endian) or 160 (offset binary): re-encode a format-16 record by hand."""
    header = _written(tmp_path, f"rec{fmt}", _test_signal(700, 2), "16")
    digital = np.fromfile(tmp_path / f"rec{fmt}.dat", dtype="<i2")
    stored = digital.astype(">i2") if fmt == "61" else (digital.astype(np.int32) + 32768).astype("<u2")
    stored.tofile(tmp_path / f"rec{fmt}.dat")
    header.write_text(header.read_text().replace(".dat 16 ", f".dat {fmt} "))
    assert {line.fmt for line in parse_header(header).signals} == {fmt}
    rec = read_record(header)
    reference = reference_mv(header)
    assert np.isnan(rec.signal[0, 5]) and np.isnan(reference[0, 5])
    np.testing.assert_array_equal(rec.signal, reference.astype(np.float32))


def test_several_samples_per_frame_go_through_wfdb(tmp_path):
    t = np.arange(1000) / 500
    wfdb.wrsamp("spf", fs=250, units=["mV", "mV"], sig_name=["I", "II"], fmt=["16", "16"],
                e_p_signal=[np.sin(2 * np.pi * t), np.cos(2 * np.pi * t[::2])], samps_per_frame=[2, 1],
                write_dir=str(tmp_path))
    header = tmp_path / "spf.hea"
    assert not parse_header(header).fast
    record = wfdb.rdrecord(str(tmp_path / "spf"), smooth_frames=False)
    rec = read_record(header)  # one ECG channel at each rate: the higher rate is the record's
    assert rec.fs == 500 and rec.signal.shape == (2, 1000) and rec.meta["channel_fs"] == [500, 250]
    np.testing.assert_allclose(rec.signal[0], record.e_p_signal[0], rtol=1e-6, atol=1e-7)


def test_units_are_converted_to_millivolts(tmp_path, reference_mv):
    signal = np.nan_to_num(_test_signal(400, 3))
    header = _written(tmp_path, "units", signal * [1000.0, 1.0, 0.001], "16", units=["uV", "mV", "V"])
    rec = read_record(header)
    reference = reference_mv(header)  # converted with the reference's own unit table
    np.testing.assert_allclose(rec.signal, reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rec.signal, signal.T, atol=0.01)  # same size in all three leads
    assert rec.meta["units"] == ["uV", "mV", "V"]


def test_multi_segment_record_is_read_through_wfdb(tmp_path, reference_mv):
    first = _written(tmp_path, "seg_1", np.nan_to_num(_test_signal(300, 2)), "16")
    _written(tmp_path, "seg_2", np.nan_to_num(_test_signal(200, 2, seed=1)), "16")
    assert first.exists()
    (tmp_path / "multi.hea").write_text("multi/2 2 250 500\nseg_1 300\nseg_2 200\n")
    rec = read_record(tmp_path / "multi.hea")
    assert rec.signal.shape == (2, 500)
    np.testing.assert_allclose(rec.signal, reference_mv(tmp_path / "multi.hea"), rtol=1e-6, atol=1e-7)
    assert read_header(tmp_path / "multi.hea").n_samples == 500


def test_the_files_own_rate_and_leads_win_over_arguments(shared_data):
    """fs/leads describe files that lack them, so one call can cover a folder of mixed sources."""
    header = shared_data / "mitdb" / "100.hea"
    rec = read_record(header, fs=500, leads=list(STANDARD_12))
    assert (rec.fs, rec.leads, rec.raw_leads) == (360.0, ["II", "V5"], ["MLII", "V5"])
    info = read_header(header, fs=500, leads=list(STANDARD_12))
    assert (info.fs, info.leads) == (360.0, ["II", "V5"])


def test_header_without_length_takes_it_from_the_file(tmp_path, reference_mv):
    header = _written(tmp_path, "nolen", np.nan_to_num(_test_signal(1001, 3)), "212")
    lines = header.read_text().splitlines()
    assert lines[0] == "nolen 3 250 1001"
    header.write_text("\n".join(["nolen 3 250"] + lines[1:]) + "\n")
    rec = read_record(header)
    assert rec.n_samples == read_header(header).n_samples == 1001
    np.testing.assert_array_equal(rec.signal, reference_mv(header).astype(np.float32))
