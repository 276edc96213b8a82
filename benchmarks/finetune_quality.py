"""Record-level fine-tuning quality on a user-style data set, end to end through the CLI.

    python benchmarks/finetune_quality.py --out runs/finetune-quality [--data PATH] [--models ...] [--seeds N]

The data set mimics the job most users bring: thousands of single-lead recordings of 10-60 s with a
few classes in a labels CSV. It is cut from real recordings in ../shared/data:
- MIT-BIH (48 records, lead MLII, 360 Hz) and CPSC 2021 (18 records, first lead, 200 Hz): excerpts of
  20-60 s (seeded lengths) lying wholly inside one rhythm episode of the annotations, at most
  `--per-episode-class` per record and class, spread evenly over the record;
- PTB-XL (the 1,819-record subset, lead II, 250 Hz, 10 s; z-scored at the source, not mV), labelled
  by its rhythm statements; records without one are kept with an empty label (left out and counted);
- classes: `N` (sinus rhythm: MIT-BIH "(N", CPSC 2021 outside AF episodes -- CPSC 2021 calls these
  "non-AF", so a few may hold another non-AF rhythm -- and PTB-XL SR), `AF` (atrial fibrillation or
  flutter) and `O` (every other rhythm: bigeminy, trigeminy, VT, paced, nodal, pre-excitation; PTB-XL
  sinus tachycardia / bradycardia / arrhythmia, supraventricular arrhythmias);
- each record saved as a single-lead `.npy` whose lead is named `ECG` (unnamed), its rate and lead in
  the labels CSV with `patient` (MIT-BIH 201 and 202 are one person; CPSC 2021 `data_P_S` is patient
  P) and a patient-level `split`: PTB-XL's official folds (1-8 train, 9 val, 10 test), and for
  MIT-BIH and CPSC 2021 `split_patients`, which gives every split patients of every class (with ~10
  AF patients there, a plain 80/10/10 draw can leave the test split one AF excerpt).

Then, for each model, `anyecg finetune --task classify --data store --out runs/MODEL` with the CLI
defaults (plus `--seeds`), and the test metrics of its summary.json. Published anchor for this kind
of task: the PhysioNet/CinC 2017 challenge (single-lead AF classification, N/AF/Other/Noisy), best
F1 over N, AF and Other 0.83 (Clifford et al. 2017) -- a different data set, for orientation only.
The last line printed is one JSON object.

Measured with the records' RR-interval and beat-shape features joined to the network's and the
moving average of the weights (the CLI defaults; 2-core CPU, 1 thread, two to four runs side by
side; `anyecg finetune` on this script's store, `--seeds 5`): test macro F1, mean +/- std over 5
seeds, and the 5 seeds' ensemble
- AnyECG shipped, pretrained, defaults: 0.781 +/- 0.040 (AUROC 0.909), ensemble 0.810;
- AnyECG random init: 0.763 +/- 0.029 (AUROC 0.903), ensemble 0.834, 9 min;
- `--baseline xresnet1d-tiny`: 0.758 +/- 0.029 (AUROC 0.929), ensemble 0.772, 11 min.
Before the linear path from the features to the logits: 0.752 +/- 0.029 (ensemble 0.787, 13 min),
0.760 +/- 0.043 (0.799, 22 min) and 0.733 +/- 0.055 (0.791, 32 min). (docs/results.md, section 2,
"Beat-shape features of the record" and "A linear path".)

Measured with the records' RR-interval features only, before the weight average (2-core
CPU, 1 thread, two runs side by side): test macro F1, mean +/- std over 5 seeds
- AnyECG shipped, pretrained, defaults: 0.674 +/- 0.022 (AUROC 0.865 +/- 0.014, F1 AF 0.60, N 0.90,
  O 0.52), 13 min of training for 5 seeds; the checkpoint shipped before it (800 tokenizer steps):
  0.617 +/- 0.041 (AUROC 0.847 +/- 0.017), 15 min (an earlier run on another machine: 0.653 +/- 0.023);
- AnyECG random init: 0.613 +/- 0.043 (AUROC 0.844 +/- 0.014), 19 min (earlier: 0.624 +/- 0.025);
- `--baseline xresnet1d-tiny`: 0.698 +/- 0.025 (AUROC 0.905 +/- 0.011), 20 min;
- `--baseline xresnet1d18 --budget-minutes 20`: see docs/results.md, section 2.
The 5 seeds' ensemble (the run folder's model; `ensemble` in each model's figures): 0.714 for AnyECG
pretrained, 0.656 for random init, 0.752 for `xresnet1d-tiny`; a fresh AnyECG run with the current
version: 0.656 +/- 0.017, ensemble 0.681, 11.2 min in all.

Measured before the RR features (the same setting as `--no-rr-features`; 2-core CPU shared with
other jobs, 1 thread, one seed; 2,919 records, 50 unlabelled; test split 398 labelled records of
about 200 patients; `anyecg finetune --task classify --data store --out run` plus the option
shown): test macro F1 / accuracy / macro AUROC, wall time of the finetune command
- AnyECG, the checkpoint shipped before the current one, pretrained, defaults: 0.635 / 0.804 / 0.797 (F1 AF
  0.47, N 0.89, O 0.55), 2.0 min on a lightly loaded machine, kept epoch 19 of 25 (early stopping);
- AnyECG random init of the same network (`--random-init`): 0.560 / 0.817 / 0.798 (F1 AF 0.33),
  0.9 min, kept epoch 4 of 10;
- the same two with `--seeds 5` (run side by side, 1 thread each): pretrained 0.634 +/- 0.030 macro F1
  (AUROC 0.817 +/- 0.020, F1 AF 0.49 +/- 0.06), 7.3 min; random init 0.549 +/- 0.030 (AUROC
  0.773 +/- 0.040, F1 AF 0.38 +/- 0.05), 6.7 min;
- the anyecg-small shipped before that one: 0.581 / 0.781 / 0.762 (F1 AF 0.29), 6.2 min under heavy load,
  kept epoch 15 of 21; its random init 0.540;
- `--baseline xresnet1d-tiny`: 0.573 / 0.756 / 0.867, 6.7 min, kept epoch 6 of 12; with `--seeds 5`
  0.603 +/- 0.118 macro F1 (seeds 0.43-0.75), AUROC 0.832 +/- 0.084, 26 min beside three other runs;
- `--baseline xresnet1d18 --budget-minutes 20`: 0.675 / 0.774 / 0.910 (F1 AF 0.69, N 0.86, O 0.48),
  19.3 min, kept epoch 5 of 9 (budget);
- `--baseline inception1d --budget-minutes 20` (2 threads): 0.658 / 0.817 / 0.906 (F1 AF 0.71, N 0.90,
  O 0.37), 13.6 min, kept epoch 5 of 11 (early stopping).
Well below the 0.83 of CinC 2017 (a different data set); with one seed and ~40 test records per
minority class, differences under ~0.05 are within noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AF_RHYTHMS = {"AFIB", "AFL"}
MODELS = {
    "anyecg": [],  # the shipped AnyECG, pretrained
    "anyecg-random-init": ["--random-init"],
    "xresnet1d18": ["--baseline", "xresnet1d18"],
    "xresnet1d-tiny": ["--baseline", "xresnet1d-tiny"],  # a CNN that converges within a 2-core CPU budget
    "inception1d": ["--baseline", "inception1d"],
}


def rhythm_class(aux: str) -> str:
    name = aux.strip().strip("\x00").lstrip("(")
    if name == "N":
        return "N"
    return "AF" if name in AF_RHYTHMS else "O"


def episodes(path: Path) -> tuple[np.ndarray, float, list[tuple[int, int, str]]]:
    """(first lead in mV [T], fs, [(start, stop, class)]) of one annotated record."""
    record = wfdb.rdrecord(str(path))
    signal = record.p_signal[:, 0].astype(np.float32)
    annotation = wfdb.rdann(str(path), "atr")
    changes = [(int(s), rhythm_class(a)) for s, a in zip(annotation.sample, annotation.aux_note) if a.startswith("(")]
    if not changes:  # CPSC 2021 non-AF records carry no rhythm annotation: the whole record is non-AF
        changes = [(0, "N")]
    bounds = [s for s, _ in changes[1:]] + [len(signal)]
    return signal, float(record.fs), [(s, e, c) for (s, c), e in zip(changes, bounds) if e > s]


def patient_of(database: str, record: str) -> str:
    if database == "mitdb":
        return "mitdb-201" if record in ("201", "202") else f"mitdb-{record}"
    return f"cpsc2021-{record.split('_')[1]}"


def split_patients(table: pd.DataFrame) -> dict[str, str]:
    """patient -> split: classes from rarest to commonest, each class's not yet assigned patients
    (most excerpts of the class first) dealt train, test, val, train, train, ... (60/20/20 by patient)."""
    pattern = ["train", "test", "val", "train", "train"]
    assigned: dict[str, str] = {}
    for name in table["label"].value_counts(ascending=True).index:
        counts = table[table["label"] == name].groupby("patient").size()
        order = sorted(counts.index, key=lambda patient: (-counts[patient], patient))
        for k, patient in enumerate(p for p in order if p not in assigned):
            assigned[patient] = pattern[k % len(pattern)]
    return assigned


PTBXL_AF = {"AFIB", "AFLT"}
PTBXL_OTHER = {"STACH", "SBRAD", "SARRH", "SVARR", "SVTAC", "PSVT", "BIGU", "TRIGU", "PACE"}


def ptbxl_class(scp_codes: str) -> str:
    """AF > other rhythm > sinus rhythm; "" when no rhythm statement is given."""
    codes = set(scp_codes.split(";"))
    if codes & PTBXL_AF:
        return "AF"
    if codes & PTBXL_OTHER:
        return "O"
    return "N" if "SR" in codes else ""


def ptbxl_rows(data: Path, out: Path) -> list[dict]:
    table = pd.read_csv(data / "ptbxl" / "labels.csv", dtype=str)
    rows = []
    for item in table.to_dict("records"):
        signal = np.load(data / "ptbxl" / "records250" / f"{item['record']}.npy").astype(np.float32)  # [12, 2500]
        record_id = f"ptbxl_{item['record']}"
        np.save(out / "records" / f"{record_id}.npy", signal[1:2])  # lead II, [1, T]
        rows.append({"record": record_id, "label": ptbxl_class(item["scp_codes"]), "patient": f"ptbxl-{item['patient']}",
                     "fs": float(item["fs"]), "leads": "ECG", "seconds": signal.shape[1] / float(item["fs"]),
                     "split": item["split"]})
    return rows


def build_dataset(data: Path, out: Path, per_episode_class: int, seed: int = 0) -> pd.DataFrame:
    """Write the excerpts to `out/records/*.npy` and `out/labels.csv`; return the labels table."""
    rng = np.random.default_rng(seed)
    (out / "records").mkdir(parents=True, exist_ok=True)
    rows = []
    for database in ("mitdb", "cpsc2021"):
        for header in sorted((data / database).glob("*.hea")):
            signal, fs, spans = episodes(header.with_suffix(""))
            cuts: dict[str, list[tuple[int, int]]] = {}
            for start, stop, name in spans:
                position = start
                while True:
                    length = int(rng.uniform(20, 60) * fs)
                    if position + length > stop:
                        break
                    cuts.setdefault(name, []).append((position, position + length))
                    position += length
            for name, pieces in cuts.items():
                keep = np.unique(np.linspace(0, len(pieces) - 1, min(per_episode_class, len(pieces))).round().astype(int))
                for k in keep:
                    a, b = pieces[k]
                    record_id = f"{database}_{header.stem}_{a}"
                    np.save(out / "records" / f"{record_id}.npy", signal[None, a:b])  # [1, T]
                    rows.append({"record": record_id, "label": name, "patient": patient_of(database, header.stem),
                                 "fs": fs, "leads": "ECG", "seconds": round((b - a) / fs, 1)})
    table = pd.DataFrame(rows)
    table["split"] = table["patient"].map(split_patients(table))
    table = pd.concat([table, pd.DataFrame(ptbxl_rows(data, out))], ignore_index=True)
    table.drop(columns="seconds").to_csv(out / "labels.csv", index=False)
    return table


def run(command: list[str], log: Path) -> float:
    """Seconds of one CLI run; its output goes to `log`; a failure stops the benchmark."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["xresnet1d18", "anyecg", "anyecg-random-init"],
                        choices=sorted(MODELS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--per-episode-class", type=int, default=20, help="most excerpts per record and class")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more finetune options for every model")
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "anyecg.cli"]
    args.out.mkdir(parents=True, exist_ok=True)
    table = build_dataset(args.data, args.out, args.per_episode_class)
    store = args.out / "store"
    prepare_s = run([*cli, "prepare", str(args.out / "records"), "--out", str(store), "--labels",
                     str(args.out / "labels.csv"), "--workers", "1", "--no-progress"], args.out / "prepare.log")
    manifest = pd.read_parquet(store / "manifest.parquet")
    result = {
        "records": int(len(table)), "classes": table["label"].replace("", "(none)").value_counts().to_dict(),
        "seconds": {"min": float(table["seconds"].min()), "max": float(table["seconds"].max())},
        "patients": int(table["patient"].nunique()),
        "splits": manifest.groupby(["split", "labels"]).size().unstack(fill_value=0).to_dict("index"),
        "unlabelled": int((manifest["labels"].fillna("") == "").sum()),
        "prepare_s": round(prepare_s, 1), "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None, "models": {},
    }
    for name in args.models:
        out = args.out / "runs" / name
        seconds = run([*cli, "finetune", "--task", "classify", "--data", str(store), "--out", str(out),
                       "--seeds", str(args.seeds), *MODELS[name], *args.extra], args.out / f"{name}.log")
        summary = json.loads((out / "summary.json").read_text())
        metrics = summary["metrics"]
        result["models"][name] = {
            "wall_s": round(seconds, 1),
            **{key: metrics[key] for key in ("f1_macro", "accuracy", "auroc", "f1_weighted")},
            "per_class_f1": {c: metrics["per_class"][c]["f1"] for c in summary["classes"]},
            "selection": summary["model_selection"]["per_seed"],
        }
        if summary.get("ensemble"):  # several seeds: the run's seed ensemble, scored on test once
            test = summary["ensemble"]["test"]
            result["models"][name]["ensemble"] = {
                **{key: test[key] for key in ("f1_macro", "accuracy", "auroc", "f1_weighted")},
                "per_class_f1": {c: test["per_class"][c]["f1"] for c in summary["classes"]}}
        print(json.dumps({name: result["models"][name]}), flush=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
