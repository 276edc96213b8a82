"""find_records: one path per record, non-ECG files skipped, deterministic order."""

from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import wfdb

from anyecg.io import find_records, read_record

EXPECTED = {"mitdb": 48, "cinc2021": 50, "code15": 10, "cpsc2021": 18, "cpsc2019": 50, "ptbdb": 1}


def test_shared_data_gives_one_path_per_record(shared_data):
    # only the databases listed here: the shared folder also holds corpora other tests cover
    records = find_records([shared_data / name for name in EXPECTED])
    by_database = Counter(path.relative_to(shared_data).parts[0] for path in records)
    assert dict(by_database) == EXPECTED
    suffixes: dict[str, set[str]] = {}
    for path in records:
        suffixes.setdefault(path.relative_to(shared_data).parts[0], set()).add(path.suffix)
    assert suffixes == {"mitdb": {".hea"}, "cinc2021": {".hea"}, "cpsc2021": {".hea"}, "ptbdb": {".hea"},
                        "code15": {".mat"}, "cpsc2019": {".mat"}}
    assert not any("ref" in path.parts or path.name == "labels.csv" for path in records)
    assert records == sorted(records, key=lambda p: p.as_posix())
    assert find_records([shared_data / name for name in EXPECTED]) == records  # deterministic


def test_globs_files_stems_and_exclude(shared_data):
    expected = sorted(p.name for p in (shared_data / "mitdb").glob("10*.hea"))
    assert len(expected) == 10
    assert [p.name for p in find_records([str(shared_data / "mitdb" / "10*")])] == expected

    named = find_records([shared_data / "mitdb" / "100", shared_data / "cinc2021" / "E07500.mat",
                          shared_data / "mitdb" / "100.dat"])
    assert [p.name for p in named] == ["E07500.hea", "100.hea"]  # 100 named twice, listed once

    every_mat = find_records([str(shared_data / "**" / "*.mat")])
    by_folder = Counter((p.parent.name, p.suffix) for p in every_mat if p.parent.name != "wfdb-sample-data")
    # challenge .mat files stand for their headers; CPSC 2019 R-peak lists are not records
    assert by_folder == {("code15", ".mat"): 10, ("data", ".mat"): 50, ("cinc2021", ".hea"): 50}

    kept = find_records([shared_data / "cpsc2019"], exclude=["*/data/data_000*"])
    removed = sorted((shared_data / "cpsc2019" / "data").glob("data_000*.mat"))
    assert 0 < len(removed) and len(kept) == 50 - len(removed)
    assert not any(p.name.startswith("data_000") for p in kept)
    assert find_records([shared_data / "code15"], exclude=["code_15_4*"]) == [
        p for p in find_records([shared_data / "code15"]) if not p.name.startswith("code_15_4")
    ]


def test_mixed_folder_reads_end_to_end(tmp_path, shared_data):
    folder = tmp_path / "mixed"
    shutil.copytree(shared_data / "cpsc2019", folder / "cpsc2019")
    shutil.copy(shared_data / "code15" / "labels.csv", folder / "labels.csv")
    for file in (shared_data / "mitdb").glob("100.*"):
        shutil.copy(file, folder / file.name)
    np.save(folder / "extra.npy", np.zeros((2, 10)))
    (folder / "notes.txt").write_text("not a record")
    records = find_records([folder])
    names = [p.name for p in records]
    assert names.count("100.hea") == 1 and "extra.npy" in names
    assert not {"labels.csv", "notes.txt", "100.dat", "100.atr"} & set(names)
    assert sum(p.parent.name == "data" for p in records) == 50 and len(records) == 52
    assert read_record(folder / "100.hea").n_samples == 650000


def test_multi_segment_record_is_listed_once(tmp_path):
    t = np.arange(300) / 250
    for name in ("seg_1", "seg_2"):
        wfdb.wrsamp(name, fs=250, units=["mV"], sig_name=["II"], p_signal=np.sin(t)[:, None], fmt=["16"], write_dir=str(tmp_path))
    (tmp_path / "multi.hea").write_text("multi/2 1 250 600\nseg_1 300\nseg_2 300\n")
    assert [p.name for p in find_records([tmp_path])] == ["multi.hea"]
