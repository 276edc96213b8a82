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

    record = keep_ecg_channels(read_record(samples / "multi-segment" / "041s" / "041s.hea"))
    reference = wfdb.rdrecord(str(samples / "multi-segment" / "041s" / "041s"))
    np.testing.assert_allclose(record.signal, reference.p_signal[:, :3].T, rtol=1e-6, atol=1e-6, equal_nan=True)
    everything, _ = run([samples / "a103l.hea"], tmp_path / "all", channels=["all"])
    assert everything["raw_leads"][0] == "II;V;PLETH"
    chosen, _ = run([samples / "a103l.hea"], tmp_path / "chosen", channels=["ii"])
    assert chosen["raw_leads"][0] == "II" and chosen["dropped_leads"][0] == "V:not in --channels;PLETH:not in --channels"


def test_eeg_only_record_is_refused_by_channel_names(samples):
    from anyecg.io.channels import select_channels
    from anyecg.io.recording import RecordError
    from anyecg.io.wfdb_reader import parse_header

    header = parse_header(samples / "n16.hea")  # 5 EEG derivations in uV (Fp2-F4, ..., C4-A1)
    with pytest.raises(RecordError, match="no ECG channel: 'Fp2-F4' \\(EEG channel\\)"):
        select_channels("n16", header.raw_leads, [line.units for line in header.signals])
