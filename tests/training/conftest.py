from pathlib import Path

import pytest

from anyecg.data.prepare import PrepareConfig, prepare


@pytest.fixture(scope="session")
def small_store(shared_data, tmp_path_factory, copy_records) -> Path:
    """A store of 16 real 12-lead CinC 2021 records and 4 two-lead CPSC 2021 records."""
    src = tmp_path_factory.mktemp("train_src")
    for folder, stems in {
        "cinc2021": sorted(p.stem for p in (shared_data / "cinc2021").glob("*.hea"))[:16],
        "cpsc2021": ["data_8_4", "data_92_12", "data_101_6", "data_35_4"],
    }.items():
        copy_records(shared_data / folder, src / folder, stems)
    out = tmp_path_factory.mktemp("train_store")
    prepare(PrepareConfig(sources=[src], out=out, progress=False))
    return out
