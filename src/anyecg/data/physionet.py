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


# Records of downstream test splits, kept out of pretraining: PTB-XL's validation and test folds
# (9, 10), MIT-BIH's inter-patient test set DS2 and its paced records, and CPSC 2021 (rhythm tasks).
PRETRAINING_SOURCES = ("ptbxl", "mitdb", "cinc2021", "code15", "cpsc2019", "ptbdb")


def pretraining_corpus(data: str | Path, folder: str | Path) -> Path:
    """Link every record of `data` whose patient is in no downstream test split into `folder` (one
    subfolder per database) and write the labels CSV prepare needs beside it (`FOLDER-labels.csv`,
    outside the folder so prepare does not list it as a file it could not read); returns its path.

    Kept: PTB-XL folds 1-8, MIT-BIH DS1, CinC 2021, CODE-15%, CPSC 2019, PTB. Left out: PTB-XL folds
    9-10, MIT-BIH DS2 and paced records, CPSC 2021, and the format samples.
    """
    from anyecg.tasks.beats import DS1

    data, folder = Path(data), Path(folder)
    linked: list[tuple[Path, Path]] = []
    ptbxl = pd.read_csv(data / "ptbxl" / "labels.csv", dtype={"record": str})
    ptbxl = ptbxl[ptbxl["strat_fold"] <= 8]
    linked += [(data / "ptbxl" / "records250" / f"{r}.npy", folder / "ptbxl" / f"{r}.npy") for r in ptbxl["record"]]
    for record in DS1:
        linked += [(file, folder / "mitdb" / file.name) for file in (data / "mitdb").glob(f"{record}.*")]
    for name in ("cinc2021", "code15", "ptbdb"):
        linked += [(file, folder / name / file.name) for file in (data / name).iterdir()
                   if file.is_file() and file.suffix != ".csv"]
    linked += [(file, folder / "cpsc2019" / file.name) for file in (data / "cpsc2019" / "data").glob("*.mat")]
    for source, target in linked:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source.resolve())

    path = folder.with_name(f"{folder.name}-labels.csv")
    rows = pd.read_csv(corpus_labels_csv(data, path))  # CODE-15% and CPSC 2019 rates and leads
    ptbxl_rows = pd.DataFrame({"record": "ptbxl/" + ptbxl["record"], "label": "", "fs": ptbxl["fs"],
                               "leads": ptbxl["leads"], "patient": "ptbxl-" + ptbxl["patient"].astype(str)})
    pd.concat([ptbxl_rows, rows], ignore_index=True).to_csv(path, index=False)
    return path
