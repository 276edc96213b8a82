"""Every code block of README.md runs, in order, on a folder `my-ecgs/` of real PhysioNet records.

Blocks run as written except for these cuts, so the whole README takes minutes on a CPU:
step and seed counts drop to 2 and 1, pretraining batches to 4, `torchrun` starts 2 processes instead of 8 with the tiny
preset, the demo runs `--quick`, and `pip install` lines are skipped (the test environment is the
installed package). Later blocks use what earlier ones made (store/, runs/), as a reader would.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"

# Records copied into my-ecgs/: all 50 CinC 2021 12-lead records with SNOMED labels (anomaly,
# arrhythmia); MIT-BIH records with MLII, four of DS1 and four of DS2 (beats), with V1 (lead
# generation; prepare's seeded patient split puts 106 in the test split) and AF episodes (201, 203,
# 210, 221: long recordings); CPSC 2021 AF and non-AF records.
MITDB = ["100", "101", "105", "106", "201", "203", "210", "221"]
CPSC2021 = ["data_8_4", "data_35_6", "data_92_12", "data_21_7"]

CUTS = [
    (re.compile(r"--steps \d+"), "--steps 2"),
    (re.compile(r"--seeds \d+"), "--seeds 1"),
    (re.compile(r"--nproc_per_node=\d+"), "--nproc_per_node=2"),
    (re.compile(r"--preset anyecg-(b|l|xl)\b"), "--preset anyecg-tiny"),
    (re.compile(r"anyecg demo --out (\S+)"), r"anyecg demo --out \1 --quick"),
]


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, code, line number) of every fenced block."""
    blocks, language, lines, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if language is None:
                language, lines, start = line[3:].strip(), [], number
            else:
                blocks.append((language, "\n".join(lines), start))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def runnable(language: str, code: str) -> str | None:
    """The block as the test runs it, or None for blocks that are not commands to run here."""
    if language not in ("bash", "python"):
        return None
    if language == "bash":
        if "python -m pytest" in code:
            return None  # the test command itself
        code = re.sub(r"^pip install .*? && ", "", code, flags=re.M)  # keep what follows the install
        code = "\n".join(part for part in code.splitlines() if not part.startswith("pip install"))
    for pattern, replacement in CUTS:
        code = pattern.sub(replacement, code)
    # training commands that rely on the default step count get 2 steps too, and pretraining
    # batches of 4 (a default batch of 32 whole-budget windows is most of a 2-step run's time)
    lines = []
    for line in code.splitlines():
        if "--steps" not in line and re.search(r"anyecg (finetune|pretrain)", line):
            line = with_option(line, "--steps 2")
        if "--batch-size" not in line and re.search(r"anyecg(\.cli)? pretrain", line):
            line = with_option(line, "--batch-size 4")
        lines.append(line)
    return "\n".join(lines)


def with_option(line: str, option: str) -> str:
    """`line` with `option` added after the command, before any trailing comment."""
    return re.sub(r"^([^#]*?)(\s*(#.*)?)$", rf"\1 {option}\2", line)


BLOCKS = [(language, runnable(language, code), line) for language, code, line in code_blocks(README.read_text())]
BLOCKS = [block for block in BLOCKS if block[1]]


@pytest.fixture(scope="module")
def workdir(shared_data, tmp_path_factory, copy_records) -> Path:
    root = tmp_path_factory.mktemp("readme")
    ecgs = root / "my-ecgs"
    cinc = sorted(p.stem for p in (shared_data / "cinc2021").glob("*.hea"))
    copy_records(shared_data / "cinc2021", ecgs, cinc)
    copy_records(shared_data / "mitdb", ecgs, MITDB)
    copy_records(shared_data / "cpsc2021", ecgs / "cpsc2021", CPSC2021)
    return root


def test_readme_has_blocks_to_run():
    languages = [language for language, _, _ in BLOCKS]
    assert languages.count("bash") >= 6 and languages.count("python") >= 2, languages


@pytest.mark.parametrize("language, code, line", BLOCKS, ids=[f"line{line}-{language}" for language, _, line in BLOCKS])
def test_readme_block_runs(workdir, language, code, line):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1"}
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    # its own process group, so nothing it started (a server, a hung command) outlives the test
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=600)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, f"README block at line {line} failed:\n{code}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
