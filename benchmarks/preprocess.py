"""Preprocessing throughput on real records: a naive per-lead scipy loop vs `clean` vs `clean_batch`.

    python benchmarks/preprocess.py [--data PATH] [--mitdb-records N] [--repeats N]

Data: the 50 CinC 2021 records (12 leads x 5000 samples at 500 Hz; the .mat key `val` at gain
1000 / mV, loaded once with scipy.io.loadmat) and MIT-BIH records (2 leads at 360 Hz) cut into 10 s
pieces. The naive baseline is what a per-lead script usually looks like: design and run
butter + filtfilt (band-pass 0.1-75 Hz), iirnotch + filtfilt, scipy.signal.resample (FFT) and a
pywt denoising, one lead at a time. Rates are records per second, best of `--repeats` runs;
ratios are against the naive loop timed in the same run. The last line printed is one JSON object.
Timings are wall-clock on a shared machine: other processes running at the same time lower them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pywt
import scipy.io
import scipy.signal
import wfdb

from anyecg.signal.recipe import Recipe, clean, clean_batch, default_workers

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def naive_clean_lead(x: np.ndarray, fs: float) -> np.ndarray:
    b, a = scipy.signal.butter(4, [0.1, 75.0], btype="bandpass", fs=fs)
    y = scipy.signal.filtfilt(b, a, x)
    b, a = scipy.signal.iirnotch(50.0, 30.0, fs=fs)
    y = scipy.signal.filtfilt(b, a, y)
    y = scipy.signal.resample(y, int(round(len(y) * 300 / fs)))
    coeffs = pywt.wavedec(y, "db6")
    threshold = np.median(np.abs(coeffs[-1])) / 0.6745 * np.sqrt(2 * np.log(len(y)))
    coeffs = coeffs[:1] + [pywt.threshold(d, threshold, mode="hard") for d in coeffs[1:]]
    return pywt.waverec(coeffs, "db6")


def naive(signals: np.ndarray, fs: float) -> list:
    return [[naive_clean_lead(lead, fs) for lead in record] for record in signals]


def best_rate(fn, n_records: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_records / best


def measure(signals: np.ndarray, fs: float, repeats: int, naive_records: int) -> dict:
    recipe = Recipe()
    subset = signals[:naive_records]
    rates = {
        "naive_per_lead_rps": best_rate(lambda: naive(subset, fs), len(subset), 1),
        "clean_per_record_rps": best_rate(lambda: [clean(s, fs, recipe) for s in signals], len(signals), repeats),
        "clean_batch_1_thread_rps": best_rate(lambda: clean_batch(signals, fs, recipe, workers=1), len(signals), repeats),
        "clean_batch_rps": best_rate(lambda: clean_batch(signals, fs, recipe), len(signals), repeats),
    }
    base = rates["naive_per_lead_rps"]
    rates.update({name.replace("_rps", "_x_naive"): rate / base for name, rate in list(rates.items())[1:]})
    return {"records": int(len(signals)), "shape": list(signals.shape[1:]), "fs": fs} | {
        k: round(v, 1) for k, v in rates.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ANYECG_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--mitdb-records", type=int, default=4, help="MIT-BIH records cut into 10 s pieces")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    cinc = np.stack([scipy.io.loadmat(p)["val"] / 1000.0 for p in sorted((args.data / "cinc2021").glob("*.mat"))])
    mit_paths = sorted(p.with_suffix("") for p in (args.data / "mitdb").glob("*.hea"))[: args.mitdb_records]
    mit = np.concatenate([
        wfdb.rdrecord(str(p)).p_signal.T[:, : 180 * 3600].reshape(2, 180, 3600).transpose(1, 0, 2) for p in mit_paths
    ])  # [pieces, 2, 3600]: 10 s at 360 Hz

    results = {
        "cinc2021_12_lead_10s_500hz": measure(cinc, 500.0, args.repeats, naive_records=len(cinc)),
        "mitdb_2_lead_10s_360hz": measure(mit, 360.0, args.repeats, naive_records=min(len(mit), 200)),
        "workers": default_workers(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for name in ("cinc2021_12_lead_10s_500hz", "mitdb_2_lead_10s_360hz"):
        print(name, results[name], file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
