"""R-peak detection speed: wfdb's `xqrs_detect` against `anyecg.signal.peaks.xqrs_peaks`.

    python benchmarks/rr_peaks.py [--data PATH] [--records N]

Each of the first N MIT-BIH records (30 minutes, first lead, 360 Hz) goes through both, timed in
the same run; the peaks must be identical. The last line printed is one JSON object: seconds per
record for each and their ratio. Timings are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import wfdb
from wfdb import processing

from anyecg.signal.peaks import xqrs_peaks

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--records", type=int, default=5)
    args = parser.parse_args()
    names = sorted(p.stem for p in (args.data / "mitdb").glob("*.hea"))[: args.records]
    seconds = {"wfdb_xqrs_detect": 0.0, "anyecg_xqrs_peaks": 0.0}
    for name in names:
        record = wfdb.rdrecord(str(args.data / "mitdb" / name))
        signal, fs = record.p_signal[:, 0], record.fs
        start = time.perf_counter()
        expected = processing.xqrs_detect(sig=signal, fs=fs, verbose=False)
        seconds["wfdb_xqrs_detect"] += time.perf_counter() - start
        start = time.perf_counter()
        peaks = xqrs_peaks(signal, fs)
        seconds["anyecg_xqrs_peaks"] += time.perf_counter() - start
        if not np.array_equal(peaks, expected):
            raise SystemExit(f"{name}: xqrs_peaks found {len(peaks)} peaks, wfdb {len(expected)}")
        print(f"{name}: {len(peaks)} peaks, identical", flush=True)
    result = {
        "records": names,
        "seconds_per_record": {key: round(value / len(names), 3) for key, value in seconds.items()},
        "speedup": round(seconds["wfdb_xqrs_detect"] / seconds["anyecg_xqrs_peaks"], 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
