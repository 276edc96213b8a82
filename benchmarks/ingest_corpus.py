"""`anyecg prepare` over a third-party corpus: what is stored, what is skipped and why, and whether
every stored record was read exactly as an independent reader reads it.

    python benchmarks/ingest_corpus.py [--data PATH] [--workers N]

The corpus is wfdb-python's `sample-data/` (../shared/data/wfdb-sample-data): WFDB formats 8-524,
skew, several samples per frame, multi-segment records, EDF, annotation files, and files that are
not records. Printed: sources stored (and the store rows they became, gap-split parts included),
skipped sources by reason, files not read, and for each stored WFDB source whether its kept ECG
channels as read equal `wfdb.rdrecord(smooth_frames=False)` in mV (float32 rounding at most).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from anyecg.data.prepare import PrepareConfig, prepare, skip_reason
from anyecg.io import read_record
from anyecg.io.channels import keep_ecg_channels

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Written out here so that the reference does not share the reader's unit table.
_TO_MV = {"mv": 1.0, "uv": 1e-3, "nv": 1e-6, "v": 1e3, "": 1.0}


def equals_wfdb(header: Path) -> tuple[bool, str]:
    """(equal, detail): the record's kept ECG channels as read vs wfdb's per-channel samples in mV."""
    record = keep_ecg_channels(read_record(header))
    dropped = {d["index"] for d in record.meta.get("dropped_leads", [])}
    reference = wfdb.rdrecord(str(header.with_suffix("")), smooth_frames=False)
    kept = [i for i in range(reference.n_sig) if i not in dropped]
    if len(kept) != record.n_leads:
        return False, f"{record.n_leads} channels read, {len(kept)} expected"
    for row, index in enumerate(kept):
        expected = np.asarray(reference.e_p_signal[index], dtype=np.float64)
        expected = expected * _TO_MV[(reference.units[index] or "").lower()]
        if expected.size != record.n_samples:
            return False, f"channel {reference.sig_name[index]}: {record.n_samples} samples, wfdb {expected.size}"
        if not np.allclose(record.signal[row], expected, rtol=1e-6, atol=1e-6, equal_nan=True):
            return False, f"channel {reference.sig_name[index]}: values differ"
    return True, ""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ANYECG_SHARED_DATA", DEFAULT_DATA)))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    corpus = args.data / "wfdb-sample-data"

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = prepare(PrepareConfig(sources=[corpus], out=Path(tmp) / "store", workers=args.workers,
                                       progress=False))
        seconds = time.perf_counter() - start
        manifest = pd.read_parquet(Path(tmp) / "store" / "manifest.parquet")
        skipped = pd.read_csv(Path(tmp) / "store" / "skipped.csv")

    stored_sources = sorted(set(manifest["source"]))
    comparisons = {}
    for source in stored_sources:
        if source.endswith(".hea"):
            comparisons[source] = equals_wfdb(Path(source))
    differing = {Path(s).name: detail for s, (same, detail) in comparisons.items() if not same}
    not_read = skipped["problem"].str.endswith("not read")
    results = {
        "sources_stored": len(stored_sources),
        "store_rows": int(len(manifest)),
        "sources_split_into_parts": int(manifest.loc[manifest["record_id"].str.contains("_part"), "source"].nunique()),
        "sources_skipped": int((~not_read).sum()),
        "skipped_by_reason": dict(Counter(map(skip_reason, skipped.loc[~not_read, "problem"])).most_common()),
        "files_not_read": dict(Counter(Path(s).suffix for s in skipped.loc[not_read, "source"]).most_common()),
        "wfdb_sources_compared": len(comparisons),
        "identical_to_wfdb": sum(same for same, _ in comparisons.values()),
        "differing_from_wfdb": differing,
        "prepare_seconds": round(seconds, 1),
        "records_per_result": result.records,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    for name, value in results.items():
        print(name, value, file=sys.stderr)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
