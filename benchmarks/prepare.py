"""`anyecg prepare` throughput and memory on real records, against a naive per-lead loop.

    python benchmarks/prepare.py [--data PATH] [--copies N] [--workers N]

Corpora, built in a temporary folder from ../shared/data:
- 12-lead: the 50 CinC 2021 records (10 s, 500 Hz), copied `--copies` times into subfolders;
- MIT-BIH: all 48 records (2 leads, 360 Hz, 30 min each).
The baseline is the naive loop of benchmarks/preprocess.py (butter + filtfilt, iirnotch + filtfilt,
FFT resample and pywt per lead, after `wfdb.rdrecord`), timed in the same run on the same records.
`prepare` is timed end to end as a user runs it (a fresh `anyecg prepare` process: reading, cleaning,
writing shards, manifest, splits), and as a marginal rate between two corpus sizes, which leaves out
the fixed start-up cost (imports, loading compiled kernels). Memory is the peak resident size of the prepare process tree for
two corpus sizes: flat means the ratio stays near 1 while the record count grows 4x.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wfdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess import DEFAULT_DATA, naive  # noqa: E402  (the shared naive baseline)


def build_corpus(data: Path, root: Path, copies: int) -> tuple[Path, Path]:
    twelve = root / "cinc"
    for k in range(copies):
        shutil.copytree(data / "cinc2021", twelve / f"copy{k:03d}")
    mit = root / "mitdb"
    mit.mkdir()
    for record in sorted(p.stem for p in (data / "mitdb").glob("*.hea")):
        for suffix in (".hea", ".dat", ".atr"):
            shutil.copy(data / "mitdb" / f"{record}{suffix}", mit / f"{record}{suffix}")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return twelve, mit


def naive_rate(folder: Path, limit: int) -> float:
    """Records per second of read (wfdb) + naive per-lead cleaning, over at most `limit` records."""
    headers = sorted(folder.rglob("*.hea"))[:limit]
    start = time.perf_counter()
    for header in headers:
        record = wfdb.rdrecord(str(header.with_suffix("")))
        naive(record.p_signal.T[None], record.fs)
    return len(headers) / (time.perf_counter() - start)


def run_prepare(sources: list[Path], out: Path, workers: int) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB over the process tree, records prepared) of one fresh prepare run."""
    code = (
        "import resource, sys, json\n"
        "from anyecg.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(json.dumps({'rc': rc, 'peak_kib': peak}))\n"
    )
    command = [sys.executable, "-c", code, "prepare", *map(str, sources), "--out", str(out),
               "--workers", str(workers), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    records = int(done.stdout.split("records: ")[1].split(" prepared")[0])
    return seconds, stats["peak_kib"] / 1024, records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ANYECG_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--copies", type=int, default=16, help="copies of the 50 CinC records (default 800 records)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        twelve, mit = build_corpus(args.data, root, args.copies)
        naive_12 = naive_rate(twelve, 50)
        naive_mit = naive_rate(mit, 48)

        # warm-up run: compiled kernels are cached on first use, as on any machine after install
        run_prepare([twelve / "copy000"], root / "warmup", args.workers)
        seconds_12, peak_full, n_12 = run_prepare([twelve], root / "store12", args.workers)
        quarter = [twelve / f"copy{k:03d}" for k in range(max(1, args.copies // 4))]
        seconds_quarter, peak_quarter, n_quarter = run_prepare(quarter, root / "store12q", args.workers)
        seconds_mit, _, n_mit = run_prepare([mit], root / "storemit", args.workers)

    results = {
        "cinc2021_12_lead": {
            "records": n_12,
            "naive_loop_rps": round(naive_12, 1),
            "prepare_rps": round(n_12 / seconds_12, 1),
            "prepare_x_naive": round(n_12 / seconds_12 / naive_12, 1),
            # records/s once running: the fixed start-up cost (imports, compiled kernels, discovery) cancels
            "prepare_marginal_rps": round((n_12 - n_quarter) / (seconds_12 - seconds_quarter), 1),
            "prepare_marginal_x_naive": round((n_12 - n_quarter) / (seconds_12 - seconds_quarter) / naive_12, 1),
            "startup_s": round(seconds_quarter - n_quarter * (seconds_12 - seconds_quarter) / (n_12 - n_quarter), 2),
        },
        "mitdb_30_min": {
            "records": n_mit,
            "naive_loop_rps": round(naive_mit, 3),
            "prepare_rps": round(n_mit / seconds_mit, 3),
            "prepare_x_naive": round(n_mit / seconds_mit / naive_mit, 1),
        },
        "memory": {
            "records_small": n_quarter,
            "records_large": n_12,
            "peak_rss_mib_small": round(peak_quarter, 1),
            "peak_rss_mib_large": round(peak_full, 1),
            "peak_ratio_large_over_small": round(peak_full / peak_quarter, 2),
        },
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for name, value in results.items():
        print(name, value, file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
