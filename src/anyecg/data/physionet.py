"""The PhysioNet corpus folder (`../shared/data` layout): what prepare needs beyond the files.

Two of its sources are plain `.mat` files with no sampling rate or lead names: CODE-15% (rate,
lead order and six diagnoses in its `labels.csv`) and CPSC 2019 (one unnamed lead at 500 Hz).
`corpus_labels_csv` writes the labels CSV that gives prepare those facts, so the whole folder
prepares in one call:

    prepare(PrepareConfig(sources=[data], out=store, labels_csv=corpus_labels_csv(data, "labels.csv")))
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

# CODE-15% diagnosis columns; an exam with none of them and `normal_ecg` set is labelled normal.
CODE15_LABELS = ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]


def corpus_labels_csv(data: str | Path, path: str | Path) -> Path:
    """Write rate, leads and labels of the CODE-15% and CPSC 2019 records under `data` to `path`."""
    data, path = Path(data), Path(path)
    rows = []
    code15 = data / "code15" / "labels.csv"
    if code15.is_file():
        for _, exam in pd.read_csv(code15).iterrows():
            labels = [name for name in CODE15_LABELS if exam[name]] or (["normal_ecg"] if exam["normal_ecg"] else [])
            rows.append({"record": f"code_15_{exam['exam_id']}", "label": ";".join(labels),
                         "fs": exam["sample_rate"], "leads": ";".join(ast.literal_eval(exam["lead_order"]))})
    for mat in sorted((data / "cpsc2019" / "data").glob("*.mat")):
        rows.append({"record": mat.stem, "label": "", "fs": 500, "leads": "unknown"})  # single unnamed lead
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["record", "label", "fs", "leads"]).to_csv(path, index=False)
    return path
