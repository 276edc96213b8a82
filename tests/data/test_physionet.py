"""The PhysioNet corpus labels CSV: CODE-15% and CPSC 2019 records prepare beside WFDB ones."""

import json
import shutil

import numpy as np
import pandas as pd

from anyecg.data.physionet import CODE15_LABELS, corpus_labels_csv
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.families import pretrain_family, usable_rows
from anyecg.training.loop import TrainConfig


def test_corpus_labels_csv_matches_the_code15_table(shared_data, tmp_path):
    table = pd.read_csv(corpus_labels_csv(shared_data, tmp_path / "labels.csv"), dtype=str, keep_default_na=False)
    exams = pd.read_csv(shared_data / "code15" / "labels.csv")
    assert len(table) == len(exams) + len(list((shared_data / "cpsc2019" / "data").glob("*.mat")))
    for _, exam in exams.iterrows():
        row = table[table["record"] == f"code_15_{exam['exam_id']}"].iloc[0]
        expected = [name for name in CODE15_LABELS if exam[name]] or (["normal_ecg"] if exam["normal_ecg"] else [])
        assert (row["label"].split(";") if row["label"] else []) == expected
        assert float(row["fs"]) == float(exam["sample_rate"]) and len(row["leads"].split(";")) == 12
    assert set(table[table["record"].str.startswith("data_")]["leads"]) == {"unknown"}


def test_mixed_store_and_ecgfm_pretraining_leave_out_unnamed_leads(shared_data, copy_records, tmp_path):
    src = tmp_path / "src"
    copy_records(shared_data / "cinc2021", src / "cinc2021", ["E07500", "E07501", "E07502", "E07503"])
    (src / "code15").mkdir()
    shutil.copy(shared_data / "code15" / "code_15_1238362.mat", src / "code15")
    (src / "cpsc2019").mkdir()
    for mat in sorted((shared_data / "cpsc2019" / "data").glob("*.mat"))[:2]:
        shutil.copy(mat, src / "cpsc2019")
    result = prepare(PrepareConfig(sources=[src], out=tmp_path / "store", labels_csv=corpus_labels_csv(shared_data, tmp_path / "l.csv"),
                                   progress=False))
    assert result.skipped == 0, result.skipped_reasons
    store = Store(tmp_path / "store")
    rows = np.arange(len(store.manifest))
    kept, left_out = usable_rows(store, rows, ("I", "II", "V1"))
    assert sorted(left_out) == sorted(m.stem for m in sorted((shared_data / "cpsc2019" / "data").glob("*.mat"))[:2])
    assert len(kept) == len(rows) - 2
    store.manifest["split"] = "train"  # every record, so the unnamed-lead ones are offered to pretraining
    store.manifest.to_parquet(tmp_path / "store" / "manifest.parquet")
    metrics = pretrain_family("ecgfm", tmp_path / "store", "ecgfm-tiny", tmp_path / "fm",
                              TrainConfig(max_steps=1, batch_size=2, warmup_steps=1, save_every=1))
    assert np.isfinite(metrics["loss"])
    saved = json.loads((tmp_path / "fm" / "final" / "config.json").read_text())
    assert sorted(saved["records_without_usable_leads"]) == sorted(left_out)


def test_pretraining_corpus_leaves_out_every_downstream_test_patient(shared_data, tmp_path):
    from anyecg.data.physionet import pretraining_corpus
    from anyecg.tasks.beats import DS1, DS2, PACED

    labels = pd.read_csv(pretraining_corpus(shared_data, tmp_path / "corpus"), dtype=str, keep_default_na=False)
    assert labels.shape[0] == len(set(labels["record"]))
    linked = {path.relative_to(tmp_path / "corpus").as_posix() for path in (tmp_path / "corpus").rglob("*")
              if path.is_file()}
    assert not (tmp_path / "corpus" / "cpsc2021").exists()
    mitdb = {name.split("/")[1].split(".")[0] for name in linked if name.startswith("mitdb/")}
    assert mitdb == set(DS1) and not mitdb & (set(DS2) | set(PACED))
    ptbxl = pd.read_csv(shared_data / "ptbxl" / "labels.csv", dtype={"record": str})
    folds = dict(zip(ptbxl["record"], ptbxl["strat_fold"]))
    kept = {name.split("/")[1][:-4] for name in linked if name.startswith("ptbxl/")}
    assert kept == {record for record, fold in folds.items() if fold <= 8}
    # every linked PTB-XL record has its rate, leads and patient in the CSV
    rows = labels[labels["record"].str.startswith("ptbxl/")]
    assert set(rows["record"].str[6:]) == kept and (rows["fs"] == "250").all() and rows["patient"].str.len().gt(6).all()
    assert {"cinc2021", "code15", "cpsc2019", "ptbdb"} <= {name.split("/")[0] for name in linked}
