"""A small prepared store of real records for the task tests: MIT-BIH 203 and 208, CPSC 2021
paroxysmal / persistent / non-AF records, and CinC 2021 headers with hand-checked codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store

RECORDS = {
    "mitdb": ["203", "208"],
    "cpsc2021": ["data_92_12", "data_8_4", "data_35_6"],
    "cinc2021": ["E07500", "E07504", "E07506", "JS20003"],
}


@pytest.fixture(scope="session")
def task_store(shared_data, tmp_path_factory, copy_records) -> Store:
    corpus = tmp_path_factory.mktemp("task-corpus")
    for folder, records in RECORDS.items():
        copy_records(shared_data / folder, corpus / folder, records)
    out = tmp_path_factory.mktemp("task-store")
    result = prepare(PrepareConfig(sources=[corpus], out=out, progress=False))
    assert result.skipped == 0, result.skipped_reasons
    return Store(out)


@pytest.fixture(scope="session")
def task_rows(task_store) -> dict[str, int]:
    """record_id -> manifest row position."""
    ids = task_store.manifest["record_id"].tolist()
    assert len(ids) == len(set(ids)), ids
    return {record_id: row for row, record_id in enumerate(ids)}


@pytest.fixture(scope="session")
def task_sources(task_store) -> dict[str, Path]:
    """record_id -> source path without extension, as wfdb reads it."""
    m = task_store.manifest
    return {record_id: Path(source).with_suffix("") for record_id, source in zip(m["record_id"], m["source"])}
