"""The prepare job on real PhysioNet records: contents, streaming, labels, resume, bad input."""

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from anyecg.data.dataset import StoreWindows
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store, StoreError
from anyecg.io import read_record
from anyecg.signal.recipe import Recipe, clean

CINC = ["E07500", "E07501", "E07502", "E07503", "E07504", "E07505"]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory, copy_records) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for folder, records in {"cinc2021": CINC, "cpsc2021": ["data_8_4", "data_92_12"], "mitdb": ["100"],
                            "ptbdb": ["s0010_re"]}.items():
        copy_records(shared_data / folder, root / folder, records)
    return root


@pytest.fixture(scope="module")
def store(corpus, tmp_path_factory) -> Store:
    out = tmp_path_factory.mktemp("store")
    # MIT-BIH 100 (2 x 650,000 samples) is streamed in chunks here, as a 24 h Holter would be
    result = prepare(PrepareConfig(sources=[corpus], out=out, workers=2, records_per_shard=3, progress=False,
                                   stream_above_values=1_000_000))
    assert result.skipped == 0, result.skipped_reasons
    return Store(out)


def test_manifest_describes_every_record(store, corpus):
    m = store.manifest.set_index("record_id")
    assert sorted(m.index) == sorted(CINC + ["data_8_4", "data_92_12", "100", "s0010_re"])
    assert m.loc["E07500", "fs_original"] == 500 and m.loc["E07500", "n_leads"] == 12
    assert m.loc["E07500", "duration_s"] == pytest.approx(10.0)
    assert m.loc["E07500", "age"] == 78 and m.loc["E07500", "sex"] == "M"
    assert set(m.loc["E07500", "labels"].split(";")) == {"67741000119109", "426177001"}
    assert m.loc["100", "leads"] == "II;V5" and m.loc["100", "fs_original"] == 360
    assert m.loc["100", "duration_s"] == pytest.approx(650000 / 360, abs=1 / 300)
    assert m.loc["s0010_re", "n_leads"] == 15 and m.loc["s0010_re", "leads"].endswith("X;Y;Z")
    assert m.loc["data_8_4", "patient_id"] == "8"
    assert set(m["split"]) <= {"train", "val", "test"}
    for column in ["record_id", "patient_id", "source", "fs_original", "leads", "duration_s", "age", "sex", "labels", "split"]:
        assert column in store.manifest.columns


def test_stored_signal_equals_cleaning_the_source(store):
    recipe = store.recipe
    for i, row in store.manifest.iterrows():
        if row["record_id"] == "100":
            continue  # streamed: checked below with the streaming tolerance
        record = read_record(row["source"])
        expected = clean(record.signal, record.fs, recipe)
        np.testing.assert_allclose(store.signal(i, normalized=False), expected, rtol=1e-5, atol=1e-5)


def test_streamed_long_record_matches_whole_record_cleaning(store):
    i = int(np.flatnonzero(store.manifest["record_id"] == "100")[0])
    record = read_record(store.manifest.loc[i, "source"])
    expected = clean(record.signal, record.fs, store.recipe)
    got = store.signal(i, normalized=False)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < 1e-3  # mV; chunk margins make streaming near-exact


def test_normalisation_on_read(store):
    for i in range(len(store)):
        signal = store.signal(i)
        assert np.all(np.isfinite(signal))
        if store.recipe.normalization == "zscore":
            np.testing.assert_allclose(signal.mean(axis=1), 0, atol=0.02)
            np.testing.assert_allclose(signal.std(axis=1), 1, atol=0.02)


def test_annotations_follow_the_signal_to_300_hz(store, shared_data):
    ann = store.annotations("100")
    reference = wfdb.rdann(str(shared_data / "mitdb" / "100"), "atr")
    assert len(ann) == len(reference.sample)
    np.testing.assert_array_equal(ann.sample, np.round(reference.sample * 300 / 360).astype(int))
    assert ann.symbol == list(reference.symbol)


def test_windowed_read(store):
    i = int(np.flatnonzero(store.manifest["record_id"] == "100")[0])
    whole = store.signal(i)
    np.testing.assert_array_equal(store.signal(i, start=3000, stop=3600), whole[:, 3000:3600])


def test_record_accessors_agree_with_the_manifest_and_the_signal(store):
    for i, row in store.manifest.iterrows():
        assert store.record_id(i) == row["record_id"]
        assert store.leads(i) == row["leads"].split(";")
        assert (store.n_leads(i), store.n_samples(i)) == store.signal(i).shape == (row["n_leads"], row["n_samples"])
        assert store.age(i) is None if pd.isna(row["age"]) else store.age(i) == row["age"]
        assert store.sex(i) is None if pd.isna(row["sex"]) else store.sex(i) == row["sex"]
    assert {store.sex(i) for i in range(len(store))} >= {"M", "F"}  # CinC 2021 headers give both
    with pytest.raises(IndexError, match="outside record 100 "):
        store.signal(int(np.flatnonzero(store.manifest["record_id"] == "100")[0]), start=10**9)


def test_windows_carry_each_record_demographics(store):
    windows = StoreWindows(store, random_crop=False, max_window_s=10)
    items = [windows[i] for i in range(len(windows))]
    by_record = {store.record_id(item["record"]): (item["age"], item["sex"]) for item in items}
    for _, row in store.manifest.iterrows():
        age, sex = by_record[row["record_id"]]
        assert np.isnan(age) if pd.isna(row["age"]) else age == row["age"]
        assert sex == {"M": 0, "F": 1}.get(row["sex"], -1)
    assert {sex for _, sex in by_record.values()} >= {0, -1}  # known and unknown sexes both covered


def test_lead_subsets_keep_a_proper_subset_of_the_same_crop(store):
    full = StoreWindows(store, seed=3, max_window_s=10)
    cut = StoreWindows(store, seed=3, max_window_s=10, lead_subset_prob=1.0)
    sizes = []
    for epoch in range(4):
        full.set_epoch(epoch)
        cut.set_epoch(epoch)
        for i in range(len(full)):
            whole, part = full[i], cut[i]
            assert part["start"] == whole["start"]  # the subset draw leaves the crop alone
            ids = whole["lead_ids"].tolist()
            if len(ids) == 1:
                assert torch.equal(part["patches"], whole["patches"])
                continue
            kept = [ids.index(lead) for lead in part["lead_ids"].tolist()]
            assert 1 <= len(kept) < len(ids) and kept == sorted(set(kept))
            assert torch.equal(part["patches"], whole["patches"][kept])
            assert torch.equal(cut[i]["lead_ids"], part["lead_ids"])  # a function of (seed, epoch, index)
            sizes.append(len(kept))
    assert 1 in sizes and max(sizes) > 1
    never = StoreWindows(store, seed=3, max_window_s=10, lead_subset_prob=0.0)
    never.set_epoch(3)
    assert all(torch.equal(never[i]["patches"], full[i]["patches"]) for i in range(len(full)))
    with pytest.raises(ValueError, match="lead_subset_prob"):
        StoreWindows(store, lead_subset_prob=1.5)
    with pytest.raises(ValueError, match="random_crop"):
        StoreWindows(store, random_crop=False, lead_subset_prob=0.5)


def test_labels_csv_and_given_splits(corpus, tmp_path):
    csv = tmp_path / "labels.csv"
    rows = ["record,label,patient,split"]
    for k, record in enumerate(CINC):
        rows.append(f"{record},{'normal' if k % 2 else 'abnormal;AF'},pat{k // 2},{'train' if k < 4 else 'test'}")
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "store"
    prepare(PrepareConfig(sources=[corpus / "cinc2021"], out=out, labels_csv=csv, progress=False))
    m = Store(out).manifest.set_index("record_id")
    assert m.loc["E07500", "labels"] == "abnormal;AF" and m.loc["E07501", "labels"] == "normal"
    assert m.loc["E07503", "patient_id"] == "pat1"
    assert m.loc["E07505", "split"] == "test" and m.loc["E07500", "split"] == "train"


def test_generated_split_is_patient_level_and_stored(store):
    per_patient = store.manifest.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    assert store.manifest["split_source"].iloc[0].startswith("patient-level")


def test_bad_records_are_skipped_and_reported(corpus, tmp_path):
    src = tmp_path / "mixed"
    shutil.copytree(corpus / "cpsc2021", src)
    for file in src.iterdir():
        os.chmod(file, 0o644)
    data = (src / "data_92_12.dat").read_bytes()
    (src / "data_92_12.dat").write_bytes(data[: len(data) // 3])  # truncated signal file
    (src / "garbage.hea").write_text("this is not a header\n\x00\x01")
    (src / "empty.edf").write_bytes(b"")
    (src / "notes.xyz123").write_text("unsupported")
    out = tmp_path / "store"
    result = prepare(PrepareConfig(sources=[src], out=out, workers=2, records_per_shard=1, progress=False))
    store = Store(out)
    assert store.manifest["record_id"].tolist() == ["data_8_4"]
    skipped = store.skipped()
    reported = {Path(s).name: p for s, p in zip(skipped["source"], skipped["problem"])}
    assert "data_92_12.hea" in reported and "garbage.hea" in reported and "empty.edf" in reported
    assert result.skipped == len(skipped) - 1 == 3 and result.not_read == {".xyz123": 1}
    assert reported["notes.xyz123"] == "unsupported file type '.xyz123', not read"
    assert store.signal(0).shape[0] == 2  # the good record is intact


def test_rerun_with_other_sources_or_recipe_is_refused(corpus, tmp_path):
    out = tmp_path / "store"
    prepare(PrepareConfig(sources=[corpus / "cpsc2021"], out=out, progress=False))
    with pytest.raises(StoreError, match="other sources"):
        prepare(PrepareConfig(sources=[corpus / "cinc2021"], out=out, progress=False))
    with pytest.raises(StoreError, match="another recipe"):
        prepare(PrepareConfig(sources=[corpus / "cpsc2021"], out=out, recipe=Recipe(notch_hz=60.0), progress=False))


def test_rerun_naming_the_same_sources_another_way_resumes(corpus, tmp_path, monkeypatch):
    out = tmp_path / "store"
    first = prepare(PrepareConfig(sources=[corpus / "cpsc2021"], out=out, progress=False))
    before = Store(out).manifest
    monkeypatch.chdir(corpus)
    again = prepare(PrepareConfig(sources=[Path("cpsc2021")], out=out, progress=False))
    assert again.shards_reused == first.shards_written and again.shards_written == 0
    after = Store(out).manifest
    assert after["record_id"].tolist() == before["record_id"].tolist() and len(after) == 2


def test_killed_job_resumes_without_duplicates(shared_data, tmp_path, copy_records):
    # all 50 CinC 2021 records, one shard each: enough shards that the kill lands mid-way even when
    # this process polls slowly on a loaded machine
    corpus = tmp_path / "corpus"
    copy_records(shared_data / "cinc2021", corpus / "cinc2021", sorted(p.stem for p in (shared_data / "cinc2021").glob("*.hea")))
    copy_records(shared_data / "cpsc2021", corpus / "cpsc2021", ["data_8_4", "data_92_12"])
    n_records = 52
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "anyecg.cli", "prepare", str(corpus / "cinc2021"), str(corpus / "cpsc2021"),
               "--out", str(out), "--workers", "1", "--records-per-shard", "1", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "shards").glob("shard-*[0-9].parquet"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list((out / "shards").glob("shard-*[0-9].parquet")))
    assert 2 <= done_before < n_records, "the job must be killed mid-way for this test to mean anything"
    assert not (out / "manifest.parquet").exists()

    resumed = prepare(PrepareConfig(sources=[corpus / "cinc2021", corpus / "cpsc2021"], out=out, progress=False))
    assert resumed.shards_reused == done_before and resumed.shards_written == n_records - done_before
    fresh_out = tmp_path / "fresh"
    prepare(PrepareConfig(sources=[corpus / "cinc2021", corpus / "cpsc2021"], out=fresh_out, progress=False, records_per_shard=1))
    a, b = Store(out), Store(fresh_out)
    assert a.manifest["record_id"].tolist() == b.manifest["record_id"].tolist()
    assert a.manifest["split"].tolist() == b.manifest["split"].tolist()
    for i in range(len(a)):
        np.testing.assert_array_equal(a.signal(i), b.signal(i))
    assert not list((out / "shards").glob("*.tmp"))


def test_labels_csv_gives_rate_and_leads_to_plain_mat_sources(shared_data, tmp_path):
    """CODE-15 (12 leads, 400 Hz) and CPSC 2019 (1 lead, 500 Hz) carry neither in their .mat files."""
    src = tmp_path / "src"
    (src / "code15").mkdir(parents=True)
    (src / "cpsc2019").mkdir()
    code15 = pd.read_csv(shared_data / "code15" / "labels.csv").head(3)
    rows = ["record,label,fs,leads"]
    for _, exam in code15.iterrows():
        shutil.copy(shared_data / "code15" / f"code_15_{exam['exam_id']}.mat", src / "code15")
        label = "normal" if exam["normal_ecg"] else "abnormal"
        rows.append(f"code_15_{exam['exam_id']},{label},400,{';'.join(ast.literal_eval(exam['lead_order']))}")
    for stem in ["data_00014", "data_00126"]:
        shutil.copy(shared_data / "cpsc2019" / "data" / f"{stem}.mat", src / "cpsc2019")
        rows.append(f"{stem},,500,II")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "store"
    result = prepare(PrepareConfig(sources=[src], out=out, labels_csv=tmp_path / "labels.csv", progress=False))
    assert result.skipped == 0, result.skipped_reasons
    m = Store(out).manifest.set_index("record_id")
    assert m.loc["data_00014", "fs_original"] == 500 and m.loc["data_00014", "leads"] == "II"
    first = f"code_15_{code15['exam_id'].iloc[0]}"
    assert m.loc[first, "fs_original"] == 400 and m.loc[first, "n_leads"] == 12
    assert m.loc[first, "duration_s"] == pytest.approx(2934 / 400, abs=1 / 300)
