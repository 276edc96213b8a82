"""Shared fixtures: the real PhysioNet recordings that sit beside the repository in ../shared/data,
and the repository's scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$ANYECG_SHARED_DATA`, else `../shared/data` beside the repository."""
    env = os.environ.get("ANYECG_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests run small models: one intra-op thread each, so concurrent test and training
    processes on a 2-core machine do not oversubscribe it (two threads ran up to 10x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def load_script():
    """`load(relative_path)`: a repository script (scripts/, benchmarks/) imported as a module."""
    loaded = []

    def load(relative_path: str):
        path = REPO_ROOT / relative_path
        spec = importlib.util.spec_from_file_location(f"{path.stem}_script", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
        spec.loader.exec_module(module)
        loaded.append(spec.name)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "mitdb").is_dir():
        pytest.skip(f"real data not found at {root} (set ANYECG_SHARED_DATA)")
    return root


def _copy_records(source: Path, dest: Path, stems: Iterable[str]) -> Path:
    """Every file of each record (header, signal files, annotations) from `source` into `dest`, writable."""
    dest.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        files = sorted(source.glob(f"{stem}.*"))
        if not files:
            raise FileNotFoundError(f"no files of record {stem!r} in {source}")
        for file in files:
            shutil.copy(file, dest / file.name)
            os.chmod(dest / file.name, 0o644)  # the shared data is read-only; tests damage or rewrite copies
    return dest


@pytest.fixture(scope="session")
def copy_records():
    """`copy_records(source_folder, dest_folder, record_stems) -> dest_folder`."""
    return _copy_records
