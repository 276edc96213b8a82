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
