"""Shared fixtures: the real PhysioNet recordings that sit beside the repository in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$ANYECG_SHARED_DATA`, else `../shared/data` beside the repository."""
    env = os.environ.get("ANYECG_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "mitdb").is_dir():
        pytest.skip(f"real data not found at {root} (set ANYECG_SHARED_DATA)")
    return root
