"""`anyecg demo`: the main job on the embedded real recordings.

Prepares the embedded PhysioNet records into a store, summarises it and draws one ECG on grid
paper. Model training and evaluation join this job as they land.
"""

from __future__ import annotations

import json
import time
from importlib.resources import files
from pathlib import Path

from anyecg.data.inspect import describe_store, format_description
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.ecg_plot import plot_ecg


def embedded_data_dir() -> Path:
    """Folder of the real recordings shipped with the package (see its README for attribution)."""
    return Path(str(files("anyecg") / "embedded"))


def run_demo(out: str | Path, *, workers: int = 1) -> dict:
    out = Path(out)
    started = time.perf_counter()
    result = prepare(PrepareConfig(sources=[embedded_data_dir()], out=out / "store", workers=workers))
    prepare_s = time.perf_counter() - started

    store = Store(result.store)
    summary = describe_store(result.store)
    summary["timings_s"] = {"prepare": round(prepare_s, 2)}
    first_12_lead = int((store.manifest["n_leads"] == 12).idxmax())
    record = store[first_12_lead]
    plot = plot_ecg(
        store.signal(first_12_lead, normalized=False), record.fs, record.leads, out / "ecg.png", title=record.record_id
    )
    summary["plot"] = str(plot)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(format_description(summary))
    return summary
