"""Peak memory of embedding a long recording window by window vs reading it whole, by recording length.

    python benchmarks/longecg_memory.py [--data PATH] [--hours 1 4 12] [--window-s 10]

Data: MIT-BIH 201 (2 leads, 30 min) prepared into a temporary store, then tiled end to end into
stored records of each length (2 leads at the store's 300 Hz). Each (mode, length) runs in a fresh
process; the figure is its peak anonymous resident memory (RssAnon, sampled every 2 ms) minus the
level just before embedding (shipped anyecg-small encoder already loaded). Clean file-backed pages
of the store's memmap are left out: the kernel drops them under pressure (plain RSS would count
every page read once, about the record's size on disk).

- streamed: `embed_stream`, `store.signal(i, start=, stop=)` one batch of windows at a time;
- whole (baseline): `store.signal(i)` of the whole record, then the same windows embedded from it.

Both produce the same [S, D] window embeddings (S = hours * 360 for 10 s windows). Ratios are the
longest length's peak over the shortest's, per mode, measured in the same run. The last line
printed is one JSON object. Wall times are on a shared 2-core machine and may be noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCE_RECORD = "201"


def anon_rss_bytes() -> int:
    """Anonymous resident memory (heap, tensors): the store's memmap pages are file-backed, clean and
    droppable by the kernel, so they are not counted."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler(threading.Thread):
    """Polls `anon_rss_bytes` every `interval` seconds and keeps the maximum."""

    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, anon_rss_bytes(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, anon_rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, anon_rss_bytes())


def build_store(data: Path, root: Path, hours: list[float]) -> None:
    """A store holding MIT-BIH 201 tiled to each length in `hours`, one record and shard per length."""
    from anyecg.data.prepare import PrepareConfig, prepare
    from anyecg.data.store import MANIFEST, SHARD_DIR, Store, shard_name

    source = root / "src"
    source.mkdir()
    for file in (data / "mitdb").glob(f"{SOURCE_RECORD}.*"):
        shutil.copy(file, source / file.name)
        os.chmod(source / file.name, 0o644)
    store_dir = root / "store"
    prepare(PrepareConfig(sources=[source], out=store_dir, progress=False))
    store = Store(store_dir)
    base = store.manifest.iloc[0]
    raw = store.signal(0, normalized=False).T  # [T, L]: the stored sample-major layout
    fs = store.recipe.target_fs
    rows = []
    for k, h in enumerate(hours):
        n_samples = int(round(h * 3600 * fs))
        shard = 100 + k
        with open(store_dir / SHARD_DIR / f"{shard_name(shard)}.f32", "wb") as handle:
            remaining = n_samples
            while remaining > 0:  # piece by piece: building the input must not dominate memory
                piece = np.ascontiguousarray(raw[: min(len(raw), remaining)], dtype=np.float32)  # [t, L]
                handle.write(piece.tobytes())
                remaining -= len(piece)
        row = base.copy()
        row["record_id"] = f"{SOURCE_RECORD}x{h:g}h"
        row["n_samples"] = n_samples
        row["duration_s"] = n_samples / fs
        row["shard"], row["offset"] = shard, 0
        rows.append(row)
    pd.DataFrame(rows).reset_index(drop=True).to_parquet(store_dir / MANIFEST)


def child(store_dir: str, index: int, mode: str, window_s: int) -> dict:
    """Embed one stored record in this process; report peak memory above the pre-embedding level."""
    import torch

    from anyecg.data.store import Store, split_list
    from anyecg.signal.patching import window_bounds
    from anyecg.tasks.longecg import embed_stream, load_window_encoder

    torch.set_num_threads(1)
    store = Store(store_dir)
    encoder = load_window_encoder(None, window_s=window_s)
    n_samples = int(store.manifest.iloc[index]["n_samples"])
    before = anon_rss_bytes()
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    if mode == "streamed":
        embeddings = embed_stream(encoder, store, index, 0, n_samples)
    else:
        whole = store.signal(index)  # [L, T]: the whole record in memory
        size = window_s * store.recipe.patch_size
        leads = split_list(store.manifest.iloc[index]["leads"])
        bounds = window_bounds(0, n_samples, size)  # [S, 2]
        parts = [encoder.embed([whole[:, a:b] for a, b in bounds[i : i + 32]], leads)
                 for i in range(0, len(bounds), 32)]  # every window here is full: lengths are whole minutes
        embeddings = np.concatenate(parts)
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    return {"windows": int(len(embeddings)), "peak_mib": round(max(0, peak - before) / 2**20, 1),
            "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0, 12.0])
    parser.add_argument("--window-s", type=int, default=10)
    parser.add_argument("--child", nargs=3, metavar=("STORE", "INDEX", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.child[2], args.window_s)))
        return
    results: dict[str, dict[str, dict]] = {"streamed": {}, "whole": {}}
    with tempfile.TemporaryDirectory() as tmp:
        build_store(args.data, Path(tmp), args.hours)
        for index, h in enumerate(args.hours):
            for mode in results:
                out = subprocess.run([sys.executable, __file__, "--window-s", str(args.window_s), "--child",
                                      str(Path(tmp) / "store"), str(index), mode], check=True, capture_output=True, text=True)
                results[mode][f"{h:g}h"] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{mode:8s} {h:5g} h: {results[mode][f'{h:g}h']}", file=sys.stderr)
    first, last = f"{args.hours[0]:g}h", f"{args.hours[-1]:g}h"

    def growth(mode: str) -> float:
        return round(results[mode][last]["peak_mib"] / max(results[mode][first]["peak_mib"], 0.1), 2)

    print(json.dumps({
        "benchmark": "longecg_memory", "record": SOURCE_RECORD, "window_s": args.window_s, "hours": args.hours,
        "peak_mib": {mode: {h: r["peak_mib"] for h, r in by.items()} for mode, by in results.items()},
        "seconds": {mode: {h: r["seconds"] for h, r in by.items()} for mode, by in results.items()},
        "streamed_growth_ratio": growth("streamed"), "whole_growth_ratio": growth("whole"),
        f"whole_over_streamed_peak_at_{last}": round(results["whole"][last]["peak_mib"] /
                                                      max(results["streamed"][last]["peak_mib"], 0.1), 2),
    }))


if __name__ == "__main__":
    main()
