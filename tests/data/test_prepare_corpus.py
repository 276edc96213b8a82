"""`prepare` on the wfdb-python sample records: what it stores, drops and refuses, and why."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store


@pytest.fixture(scope="module")
def samples(shared_data) -> Path:
    folder = shared_data / "wfdb-sample-data"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


def run(sources, out: Path, **options) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(manifest, skipped) of a single-process prepare."""
    prepare(PrepareConfig(sources=list(sources), out=out, workers=1, progress=False, **options))
    return pd.read_parquet(out / "manifest.parquet"), pd.read_csv(out / "skipped.csv")


def test_every_record_skipped_still_writes_manifest_and_skipped_csv(samples, tmp_path):
    manifest, skipped = run([samples / "test_edfann.edf"], tmp_path / "store")
    assert len(manifest) == 0
    assert skipped["source"].tolist() == [str(samples / "test_edfann.edf")]
    assert "no signal channels" in skipped["problem"][0]
    assert Store(tmp_path / "store").summary()["skipped"] == 1


def test_only_ecg_channels_are_stored_and_the_rest_is_listed(samples, tmp_path):
    sources = [samples / "multi-segment" / "041s", samples / "a103l.hea", samples / "p10143.hea",
               samples / "03700181.hea"]
    manifest, _ = run(sources, tmp_path / "store")
    m = manifest.set_index("record_id")
    assert m.loc["041s", "raw_leads"] == "III;I;V"
    assert m.loc["041s", "dropped_leads"].split(";") == [
        "ABP:not ECG: units 'mmHg'", "PAP:not ECG: units 'mmHg'",
        "PLETH:not ECG: plethysmography / oximetry channel", "RESP:not ECG: respiration channel"]
    assert m.loc["a103l", "raw_leads"] == "II;V" and m.loc["a103l", "dropped_leads"] == "PLETH:not ECG: units 'NU'"
    assert m.loc["p10143", "raw_leads"] == "FECG" and m.loc["p10143", "dropped_leads"].startswith("UC:not ECG")
    assert m.loc["03700181", "raw_leads"] == "MCL1"


def test_kept_channels_equal_wfdb_and_channels_option_overrides(samples, tmp_path):
    from anyecg.io import read_record
    from anyecg.io.channels import keep_ecg_channels

    record = keep_ecg_channels(read_record(samples / "a103l.hea"))
    reference = wfdb.rdrecord(str(samples / "a103l"))
    np.testing.assert_allclose(record.signal, reference.p_signal[:, :2].T, rtol=1e-6, atol=1e-7, equal_nan=True)
    everything, _ = run([samples / "a103l.hea"], tmp_path / "all", channels=["all"])
    assert everything["raw_leads"][0] == "II;V;PLETH"
    chosen, _ = run([samples / "a103l.hea"], tmp_path / "chosen", channels=["ii"])
    assert chosen["raw_leads"][0] == "II"
    assert chosen["dropped_leads"][0] == "V:not in --channels;PLETH:not in --channels"


def test_eeg_only_record_is_refused_by_channel_names(samples):
    from anyecg.io.channels import select_channels
    from anyecg.io.recording import RecordError
    from anyecg.io.wfdb_reader import parse_header

    header = parse_header(samples / "n16.hea")  # 5 EEG derivations in uV (Fp2-F4, ..., C4-A1)
    with pytest.raises(RecordError, match="no ECG channel: 'Fp2-F4' \\(EEG channel\\)"):
        select_channels("n16", header.raw_leads, [line.units for line in header.signals])


def test_skew_padding_is_trimmed_and_the_rest_equals_wfdb(samples):
    from anyecg.io import read_record
    from anyecg.io.gaps import repair_gaps

    [part] = repair_gaps(read_record(samples / "100skew.hea"))
    reference = wfdb.rdrecord(str(samples / "100skew")).p_signal.T  # last 3 samples of V5 are NaN
    assert np.isnan(reference[1, -3:]).all() and part.n_samples == reference.shape[1] - 3
    np.testing.assert_allclose(part.signal, reference[:, :-3], rtol=1e-6)
    assert part.meta["repairs"] == ["trimmed 3 samples with missing values at the end"]


def test_gappy_mimic_record_is_split_into_parts_of_one_patient(samples):
    from anyecg.io import read_record
    from anyecg.io.channels import keep_ecg_channels
    from anyecg.io.gaps import MAX_INTERPOLATED_GAP_S, MIN_PART_S, repair_gaps

    header = samples / "multi-segment" / "s25047" / "s25047-2704-05-04-10-44.hea"
    parts = repair_gaps(keep_ecg_channels(read_record(header)))  # II, V with 4.9 % missing
    reference = wfdb.rdrecord(str(header.with_suffix(""))).p_signal[:, :2].T
    assert len(parts) == 13 and len({p.patient_id for p in parts}) == 1
    for part in parts:
        assert part.n_samples >= MIN_PART_S * part.fs and np.isfinite(part.signal).all()
        start = round(part.meta["source_start_s"] * part.fs)
        expected = reference[:, start:start + part.n_samples]
        valid = np.isfinite(expected)
        np.testing.assert_allclose(part.signal[valid], expected[valid], rtol=1e-6)
        # a filled sample lies within its two valid neighbours, and no filled run is longer than the limit
        for lead in range(2):
            for a, b in zip(*_runs(~valid[lead])):
                assert b - a <= MAX_INTERPOLATED_GAP_S * part.fs
                low, high = sorted(expected[lead, [a - 1, b]])
                assert (low - 1e-6 <= part.signal[lead, a:b]).all() and (part.signal[lead, a:b] <= high + 1e-6).all()


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return edges[::2], edges[1::2]


def test_streamed_record_gets_the_same_gap_policy_and_lead_checks(samples, tmp_path):
    folder = samples / "multi-segment" / "s25047"
    whole, _ = run([folder / "s25047-2704-05-04-10-44.hea"], tmp_path / "whole")
    streamed, _ = run([folder / "s25047-2704-05-04-10-44.hea"], tmp_path / "streamed", stream_above_values=100_000)
    columns = ["record_id", "leads", "dropped_leads", "repairs", "source_start_s", "n_samples", "patient_id"]
    whole_parts = whole[columns].set_index("record_id")
    streamed_parts = streamed[columns].set_index("record_id")
    # one difference by design: the streamed record checks flat leads over the whole record, not per part
    assert list(streamed_parts.index) == list(whole_parts.index)
    assert (streamed_parts["repairs"] == whole_parts["repairs"]).all()
    np.testing.assert_allclose(streamed_parts["source_start_s"], whole_parts["source_start_s"])
    np.testing.assert_array_equal(streamed_parts["n_samples"], whole_parts["n_samples"])
    a = Store(tmp_path / "whole").signal(3, normalized=False)
    b = Store(tmp_path / "streamed").signal(3, normalized=False)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_streamed_record_drops_a_dead_electrode(shared_data, tmp_path):
    """MIT-BIH 100 with V5 made constant, as a disconnected electrode writes it, read in chunks."""
    source = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), physical=False)
    digital = source.d_signal.copy()
    digital[:, 1] = digital[0, 1]
    wfdb.wrsamp("dead", fs=source.fs, units=source.units, sig_name=source.sig_name, d_signal=digital,
                fmt=source.fmt, adc_gain=source.adc_gain, baseline=source.baseline, write_dir=str(tmp_path))
    streamed, _ = run([tmp_path / "dead.hea"], tmp_path / "streamed", stream_above_values=100_000)
    whole, _ = run([tmp_path / "dead.hea"], tmp_path / "whole")
    assert streamed["leads"][0] == whole["leads"][0] == "II"
    assert streamed["dropped_leads"][0] == whole["dropped_leads"][0] == "V5:flat: peak-to-peak 0 uV < 1 uV"


def test_constant_flac_record_is_refused_when_streamed(samples, tmp_path):
    manifest, skipped = run([samples / "flac_3_constant.hea"], tmp_path / "store")
    assert len(manifest) == 0 and skipped["problem"][0].startswith("no usable lead left: col 0: flat")


@pytest.mark.parametrize("name, ecg_rows, fs, to_mv", [
    ("03700181", [0], 500.0, 1.0),                          # MCL1 4 x 125 Hz beside ABP, RESP at 125 Hz
    ("multi-segment/041s/041s", [0, 1, 2], 500.0, 1.0),     # III, I, V 4 x 125 Hz in two segments
    ("test_generator_2", [3], 200.0, 1e-3),                 # ECG 200 x 1 Hz (uV) beside test signals
])
def test_multi_frequency_ecg_is_read_at_its_own_rate(samples, name, ecg_rows, fs, to_mv):
    from anyecg.io import read_header, read_record
    from anyecg.io.channels import keep_ecg_channels

    record = keep_ecg_channels(read_record(samples / f"{name}.hea"))
    reference = wfdb.rdrecord(str(samples / name), smooth_frames=False)
    assert record.fs == fs and read_header(samples / f"{name}.hea").fs == fs
    expected = np.stack([reference.e_p_signal[row] for row in ecg_rows]) * to_mv
    np.testing.assert_allclose(record.signal, expected, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert record.meta["channel_fs"] == [reference.fs * spf for spf in reference.samps_per_frame]


def test_ecg_channels_at_two_rates_keep_the_majority_and_name_the_other(samples):
    from anyecg.io import read_record
    from anyecg.io.channels import keep_ecg_channels

    record = keep_ecg_channels(read_record(samples / "test01_00s_frame.hea"))  # ECG_2 at 2 x 500 Hz
    reference = wfdb.rdrecord(str(samples / "test01_00s_frame"), smooth_frames=False)
    assert record.fs == 500 and record.raw_leads == ["ECG_1", "ECG_3"]
    np.testing.assert_allclose(record.signal, np.stack([reference.e_p_signal[0], reference.e_p_signal[2]]), rtol=1e-6)
    assert record.meta["dropped_leads"] == [
        {"lead": "ECG_2", "reason": "sampled at 1000 Hz, not the record's 500 Hz", "index": 1}]


def test_streamed_multi_frequency_record_matches_the_whole_read(samples, tmp_path):
    whole, _ = run([samples / "03700181.hea"], tmp_path / "whole")
    streamed, _ = run([samples / "03700181.hea"], tmp_path / "streamed", stream_above_values=100_000)
    assert whole["fs_original"][0] == streamed["fs_original"][0] == 500
    assert whole["n_samples"][0] == streamed["n_samples"][0]
    a = Store(tmp_path / "whole").signal(0, normalized=False)
    b = Store(tmp_path / "streamed").signal(0, normalized=False)
    np.testing.assert_allclose(a, b, atol=1e-3)


def _mixed_rate_edf(shared_data: Path, samples: Path, path: Path, plus: bool) -> Path:
    """60 s of MIT-BIH 100 (MLII, V5 at 360 Hz) beside 03700181's RESP at 125 Hz; a plain EDF also
    gets an `EDF Annotations` channel at 60 Hz, an EDF+ gets two annotations."""
    import pyedflib

    ecg = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=360 * 60).p_signal.T
    resp = np.nan_to_num(wfdb.rdrecord(str(samples / "03700181"), smooth_frames=False, sampto=125 * 60).e_p_signal[2])
    channels = [("ECG MLII", 360, "mV", ecg[0]), ("ECG V5", 360, "mV", ecg[1]), ("Resp", 125, "mV", resp)]
    if not plus:
        channels.append(("EDF Annotations", 60, "", np.zeros(60 * 60)))
    writer = pyedflib.EdfWriter(str(path), len(channels),
                                file_type=pyedflib.FILETYPE_EDFPLUS if plus else pyedflib.FILETYPE_EDF)
    writer.setSignalHeaders([
        {"label": label, "dimension": unit, "sample_frequency": fs, "physical_max": float(max(x.max(), 1)),
         "physical_min": float(min(x.min(), -1)), "digital_max": 32767, "digital_min": -32768, "transducer": "",
         "prefilter": ""} for label, fs, unit, x in channels])
    writer.writeSamples([np.ascontiguousarray(x, dtype=np.float64) for *_, x in channels])
    if plus:
        writer.writeAnnotation(10.0, -1, "Arousal")
        writer.writeAnnotation(30.5, -1, "Apnea")
    writer.close()
    return path


@pytest.mark.parametrize("plus", [False, True], ids=["edf-with-annotation-channel", "edf+"])
def test_mixed_rate_edf_keeps_its_ecg_channels(shared_data, samples, tmp_path, plus):
    import pyedflib

    from anyecg.io import read_record
    from anyecg.io.channels import keep_ecg_channels

    path = _mixed_rate_edf(shared_data, samples, tmp_path / "mixed.edf", plus)
    record = keep_ecg_channels(read_record(path))
    with pyedflib.EdfReader(str(path)) as reader:
        expected = np.stack([reader.readSignal(0), reader.readSignal(1)])
    assert record.fs == 360 and record.raw_leads == ["MLII", "V5"]
    np.testing.assert_allclose(record.signal, expected, rtol=1e-6, atol=1e-6)
    reasons = [d["reason"] for d in record.meta["dropped_leads"]]
    assert reasons == ["not ECG: respiration channel"] + ([] if plus else ["not ECG: marker / annotation channel"])
    if plus:
        assert record.annotations.aux == ["Arousal", "Apnea"] and record.annotations.sample.tolist() == [3600, 10980]
    manifest, skipped = run([path], tmp_path / "store")
    assert len(skipped) == 0 and manifest["leads"][0] == "II;V5" and manifest["fs_original"][0] == 360


@pytest.mark.parametrize("header_row", [True, False], ids=["named-columns", "numbers-only"])
def test_device_csv_with_trailing_delimiters_is_read_and_listed(shared_data, tmp_path, header_row):
    """10 s of MIT-BIH 100 exported as a device writes it: every line ends with a comma."""
    from anyecg.io import find_records, read_record

    reference = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=3600).p_signal  # [T, 2] mV
    folder = tmp_path / "export"
    folder.mkdir()
    lines = (["Time (s),MLII,V5,"] if header_row else []) + [
        f"{i / 360:.5f},{a:.3f},{b:.3f}," if header_row else f"{a:.3f},{b:.3f},," for i, (a, b) in enumerate(reference)]
    (folder / "device.csv").write_text("\n".join(lines) + "\n")
    assert find_records([folder]) == [folder / "device.csv"]
    leads = None if header_row else ["MLII", "V5"]
    record = read_record(folder / "device.csv", fs=360, leads=leads)
    assert record.raw_leads == ["MLII", "V5"]
    np.testing.assert_allclose(record.signal, reference.T, atol=5e-4)
    manifest, skipped = run([folder], tmp_path / "store", fs=360, leads=leads)
    assert len(skipped) == 0 and manifest["leads"][0] == "II;V5"


@pytest.mark.parametrize("header, age, sex", [
    ("test01_00s.hea", 25, "M"),                                             # <age>: 25  <sex>: M  <diagnoses>: ...
    ("12726.hea", 28, "M"),                                                  # <age>: 28  <sex>: M  <Height>: 170 ...
    ("multi-segment/s00001/s00001-2896-10-09-01-56.hea", 60, "F"),           # <age>: 60 <sex>: F
    ("100.hea", 69, "M"),                                                    # "69 M 1085 1629 x1" after another comment
])
def test_header_comments_give_age_and_sex(samples, header, age, sex):
    from anyecg.io.metadata import parse_comments
    from anyecg.io.wfdb_reader import parse_header

    comments = parse_header(samples / header).comments
    assert wfdb.rdheader(str(samples / header).removesuffix(".hea")).comments  # the reference sees them too
    meta = parse_comments(comments)
    assert (meta.age, meta.sex) == (age, sex)


def test_angle_bracket_fields_are_all_kept(samples):
    from anyecg.io.metadata import parse_comments
    from anyecg.io.wfdb_reader import parse_header

    fields = parse_comments(parse_header(samples / "12726.hea").comments).meta["fields"]
    assert {key: fields[key] for key in ("age", "sex", "Height", "Weight")} == {
        "age": "28", "sex": "M", "Height": "170", "Weight": "64"}


def test_custom_annotation_codes_get_their_defined_symbol(samples):
    from anyecg.io import read_annotations

    ours = read_annotations(samples / "12726.hea", "wabp")  # defines code 42 as "CAL" at sample 0
    reference = wfdb.rdann(str(samples / "12726"), "wabp")
    np.testing.assert_array_equal(ours.sample, reference.sample)
    undefined_for_wfdb = sum(not isinstance(b, str) for b in reference.symbol)
    assert "nan" not in ours.symbol and ours.symbol.count("CAL") == undefined_for_wfdb > 0
    assert all(a == b for a, b in zip(ours.symbol, reference.symbol) if isinstance(b, str))
    assert all(a == "CAL" for a, b in zip(ours.symbol, reference.symbol) if not isinstance(b, str))


@pytest.mark.parametrize("annotator", ["gqrsh", "gqrsl", "sqrs"])  # time resolutions 500, 125 (frames), 250 Hz
def test_annotator_option_stores_another_annotation_file_at_the_store_rate(samples, tmp_path, annotator):
    manifest, _ = run([samples / "03700181.hea"], tmp_path / "store", annotator=annotator)
    stored = Store(tmp_path / "store").annotations("03700181")
    reference = wfdb.rdann(str(samples / "03700181"), annotator)
    target_fs = Store(tmp_path / "store").recipe.target_fs
    assert manifest["n_annotations"][0] == len(reference.sample)
    np.testing.assert_array_equal(stored.sample, np.round(reference.sample * target_fs / reference.fs))


def test_files_that_are_not_records_are_listed_and_inspect_groups_reasons(samples, tmp_path):
    from anyecg.data.inspect import describe_record, describe_store, format_description

    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ["SC4001E0-PSG.wav", "huge.qrs", "test_edfann.edf", "flac_3_constant.hea", "flac_3_constant.dat",
                 "a103l.hea", "a103l.mat"]:
        shutil.copy(samples / name, folder / name)
    result = prepare(PrepareConfig(sources=[folder], out=tmp_path / "store", workers=1, progress=False))
    assert result.records == 1 and result.skipped == 2 and result.not_read == {".wav": 1, ".qrs": 1}
    skipped = pd.read_csv(tmp_path / "store" / "skipped.csv").set_index("source")["problem"]
    assert skipped[str(folder / "SC4001E0-PSG.wav")] == "unsupported file type '.wav', not read"
    assert skipped[str(folder / "huge.qrs")] == "unsupported file type '.qrs', not read"
    kinds = pd.read_csv(tmp_path / "store" / "skipped.csv").set_index("source")["kind"]
    assert kinds[str(folder / "huge.qrs")] == "not read" and kinds[str(folder / "test_edfann.edf")] == "record"
    counts = Store(tmp_path / "store").summary()
    assert (counts["skipped"], counts["not_read"]) == (2, 2)  # two records failed; two files are no records
    summary = describe_store(tmp_path / "store")
    assert summary["source_units"] == {"mV": 2} and summary["source_fs"] == {"250 Hz": 1}
    assert summary["skipped_reasons"] == {"no usable lead left": 1, "EDF file has no signal channels": 1,
                                          "unsupported file type '.wav', not read": 1,
                                          "unsupported file type '.qrs', not read": 1}
    text = format_description(summary).splitlines()
    listing = text[text.index("skipped_reasons:") + 1:][:4]  # one indented line per reason
    assert [line.split("  ")[1].strip() for line in listing] == list(summary["skipped_reasons"])
    record = describe_record(samples / "03700181.hea")
    assert record["units"] == ["mV", "mmHg", "mV"] and record["samples_per_frame"] == [4, 1, 1]
    assert record["prepare_drops"] == {"ABP": "not ECG: units 'mmHg'", "RESP": "not ECG: respiration channel"}


def test_whole_corpus_is_stored_equal_to_wfdb_or_refused_with_a_reason(samples, load_script):
    from anyecg.io import RecordError, find_records, read_header, read_record
    from anyecg.io.channels import keep_ecg_channels

    ingest = load_script("benchmarks/ingest_corpus.py")
    results = ingest.main(["--data", str(samples.parent)])
    assert results["sources_stored"] + results["sources_skipped"] == len(find_records([samples]))
    assert results["identical_to_wfdb"] == results["wfdb_sources_compared"] == results["sources_stored"]
    assert results["differing_from_wfdb"] == {}
    assert results["files_not_read"] == {".wav": 1, ".qrs": 1}
    for header in find_records([samples]):  # every refusal names the file and says why
        try:
            record = keep_ecg_channels(read_record(header))
        except RecordError as err:
            assert err.path.startswith(str(samples)) and len(err.problem) > 10 and "Errno" not in err.problem
            continue
        info = read_header(header)  # what streaming and the plan rely on agrees with the samples
        assert (info.fs, info.n_samples) == (record.fs, record.n_samples), header


def test_parts_of_two_records_with_one_name_stay_apart(samples, tmp_path, copy_records):
    folder = samples / "multi-segment" / "s25047"
    stems = [p.stem for p in folder.glob("*.hea")]
    for name in ("a", "b"):
        copy_records(folder, tmp_path / "corpus" / name, stems)
    manifest, _ = run([tmp_path / "corpus"], tmp_path / "store")
    ids = manifest["record_id"]
    assert ids.is_unique and len(ids) == 26 and ids.str.startswith(("a/", "b/")).all()
    assert manifest.groupby(ids.str[:1])["patient_id"].nunique().tolist() == [1, 1]
    assert manifest["patient_id"].nunique() == 2


def test_eeg_only_edf_is_refused_not_stored_as_ecg(samples, tmp_path):
    """Sleep-EDF's SC4001E0 channels (kept in the corpus as a WAV) written back as an EDF of EEG/EOG."""
    import pyedflib
    from scipy.io import wavfile

    _, values = wavfile.read(samples / "SC4001E0-PSG.wav")  # int16 [79500, 7]
    labels = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal"]
    channels = [np.ascontiguousarray(values[:, k], dtype=np.float64) / 100 for k in range(3)]  # uV
    writer = pyedflib.EdfWriter(str(tmp_path / "sleep.edf"), 3, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([
        {"label": label, "dimension": "uV", "sample_frequency": 100, "physical_max": 400.0, "physical_min": -400.0,
         "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""} for label in labels])
    writer.writeSamples(channels)
    writer.close()
    manifest, skipped = run([tmp_path / "sleep.edf"], tmp_path / "store")
    assert len(manifest) == 0
    assert skipped["problem"][0] == ("no ECG channel: 'EEG Fpz-Cz' (EEG / EOG / EMG channel), 'EEG Pz-Oz' "
                                     "(EEG / EOG / EMG channel), 'EOG horizontal' (EEG / EOG / EMG channel); "
                                     "choose channels with --channels")
    everything, _ = run([tmp_path / "sleep.edf"], tmp_path / "all", channels=["all"])
    assert everything["n_leads"][0] == 3  # the override stores them anyway


def test_channel_rule_on_names_from_real_headers():
    from anyecg.io.channels import channel_problem

    ecg = ["MLII", "V5", "ECG lead II", "ECG 1", "FECG", "MCL1", "col 0", "Abdomen_1", "Direct_1", "i", "vx", "EKG"]
    not_ecg = ["ABP", "PAP", "CVP", "ART", "PLETH", "RESP", "Resp. Imp.", "CO2", "SpO2", "Fp2-F4", "C4-A1", "P4-O2",
               "EEG Fpz-Cz", "EOG horizontal", "EMG submental", "UC", "squarewave", "sine 8.5 Hz", "noise",
               "EDF Annotations", "Marker", "Accelerometer_X", "DEV_Temperature", "foot GSR", "HR", "Thor"]
    assert [name for name in ecg if channel_problem(name, "mV") is not None] == []
    assert [name for name in not_ecg if channel_problem(name, "uV") is None] == []
    assert channel_problem("II", "mmHg") == "not ECG: units 'mmHg'"


def test_lone_device_csv_without_a_rate_is_reported_not_a_crash(shared_data, tmp_path):
    reference = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=720).p_signal
    (tmp_path / "device.csv").write_text("MLII,V5,\n" + "".join(f"{a:.3f},{b:.3f},\n" for a, b in reference))
    manifest, skipped = run([tmp_path / "device.csv"], tmp_path / "store")
    assert len(manifest) == 0 and skipped["problem"].tolist() == [
        "no sampling rate in this file: pass fs= (samples per second)"]


def test_streamed_edf_keeps_its_annotations(shared_data, samples, tmp_path):
    path = _mixed_rate_edf(shared_data, samples, tmp_path / "mixed.edf", plus=True)
    run([path], tmp_path / "whole")
    run([path], tmp_path / "streamed", stream_above_values=10_000)
    whole = Store(tmp_path / "whole").annotations("mixed")
    streamed = Store(tmp_path / "streamed").annotations("mixed")
    assert streamed.aux == whole.aux == ["Arousal", "Apnea"]
    np.testing.assert_array_equal(streamed.sample, whole.sample)
