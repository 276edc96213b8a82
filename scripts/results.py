"""The task harness: beats, anomaly windows, lead generation and long recordings on ../shared/data, on CPU.

    python scripts/results.py                            # the full run; writes results-work/results.md and figures
    python scripts/results.py --smoke --out /tmp/r.md    # every code path, one seed, a few steps

It runs every task at fixed step budgets (`Budget`), not with the epoch-based, validation-selected
recipe of `finetune --task classify`, so its tables are not in `docs/results.md` (which holds the
benchmarks measured with that recipe).

Benchmarks (each table: AnyECG pretrained and random init, every baseline, ECG-FM and ECGFounder):
1. MIT-BIH inter-patient AAMI beat classes, DS1 -> DS2.
2. Anomaly detection on 10 s MIT-BIH windows labelled from the annotations, patient-level split.
3. Lead generation: MIT-BIH V1 from MLII (missing and noise-corrupted); V1-V6 from I and II on the
   12-lead records.
4. AF vs non-AF on long CPSC 2021 recordings and 5-minute MIT-BIH segments.
5. Label efficiency on the anomaly windows: 1%, 10%, 100% of the training labels.

Every run goes through the package's own commands (`finetune` and friends) and keeps its folder in
`--work`; a rerun skips the runs that finished (their `summary.json` exists), so an interrupted job
resumes. Runs execute in `--workers` processes of one torch thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# Supervised baselines of the classification tables (CPU-sized presets; `anyecg models` lists them).
BASELINES = ["xresnet1d-tiny", "inception1d", "rnn1d", "dens_ecg", "cnn_transformer", "contrawr", "ffcl", "st_transformer"]
FAMILY_PRESETS = {"ecgfm": "ecgfm-small", "ecgfounder": "ecgfounder-small"}
LABEL_FRACTIONS = [0.01, 0.1, 1.0]


@dataclass
class Budget:
    """How much compute each run gets (the full run's defaults are sized for a 2-core CPU)."""

    seeds: int = 5
    steps: int = 40  # fine-tuning steps per seed
    batch_size: int = 16
    lr: float = 1e-3
    beats_per_record: int = 60  # seeded subset of each MIT-BIH record's beats (train and test)
    window_every: int = 6  # anomaly: keep every k-th 10 s window of each record
    leadgen_steps: int = 40
    long_steps: int = 200  # the aggregator's steps (cheap: the encoder is frozen, its embeddings cached)
    family_pretrain_steps: int = 100
    mitdb_records: list[str] | None = None  # None: all 48


SMOKE = Budget(seeds=1, steps=2, batch_size=8, beats_per_record=10, window_every=30, leadgen_steps=2, long_steps=2,
               family_pretrain_steps=2, mitdb_records=["100", "101", "103", "106", "201", "203", "208", "210", "219", "221"])


# ---------------------------------------------------------------------------------------- data


# CPSC 2021 patients held out for testing: one paroxysmal-AF and one non-AF patient (the other four train).
CPSC2021_TEST_PATIENTS = {"92", "35"}


def mitdb_patient(record: str) -> str:
    """MIT-BIH records 201 and 202 come from the same subject; every other record is its own patient."""
    return "201" if record == "202" else record


def mitdb_split(record: str) -> str:
    """The inter-patient split of the rhythm tasks: DS2 tests, DS1 and the paced records train. Record
    202 (DS2) shares its patient with 201 (DS1), so it trains here; the beat benchmark keeps the
    published DS1/DS2 lists, 202 included."""
    from anyecg.tasks.beats import DS2

    return "test" if record in DS2 and record != "202" else "train"


def rhythm_labels_csv(data: Path, mitdb_records: list[str], path: Path) -> Path:
    """Patient and split of every MIT-BIH and CPSC 2021 record (CPSC classes kept from the headers)."""
    from anyecg.io import read_header

    rows = [{"record": r, "label": "", "patient": mitdb_patient(r), "split": mitdb_split(r)} for r in mitdb_records]
    for header in sorted((data / "cpsc2021").glob("*.hea")):
        patient = header.stem.split("_")[1]  # data_<patient>_<record>
        rows.append({"record": header.stem, "label": ";".join(read_header(header).labels), "patient": patient,
                     "split": "test" if patient in CPSC2021_TEST_PATIENTS else "train"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def anomaly_windows(data: Path, out: Path, mitdb_records: list[str], every: int) -> Path:
    """10 s windows of MIT-BIH records as .npy files (raw mV) plus a labels CSV with their class
    (`window_anomaly_labels`), patient and split (`mitdb_split`), ready for `prepare`."""
    from anyecg.io import read_record
    from anyecg.tasks.rhythm import window_anomaly_labels

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for record in mitdb_records:
        recording = read_record(data / "mitdb" / f"{record}.hea")
        window = int(round(10 * recording.fs))
        for k, sample in enumerate(window_anomaly_labels(recording.annotations, recording.signal.shape[1], window)):
            if k % every:
                continue
            stem = f"mitdb_{record}_{sample.start // window:03d}"
            np.save(out / f"{stem}.npy", recording.signal[:, sample.start : sample.stop])  # [L, 3600] mV
            rows.append({"record": stem, "label": sample.label, "patient": mitdb_patient(record),
                         "split": mitdb_split(record), "fs": recording.fs, "leads": ";".join(recording.raw_leads)})
    pd.DataFrame(rows).to_csv(out.parent / "anomaly-labels.csv", index=False)
    return out.parent / "anomaly-labels.csv"


def prepare_stores(data: Path, work: Path, budget: Budget) -> dict[str, Path]:
    """The prepared stores of the benchmarks (each made once; prepare itself resumes)."""
    from anyecg.data.physionet import corpus_labels_csv
    from anyecg.data.prepare import PrepareConfig, prepare

    records = budget.mitdb_records or sorted(p.stem for p in (data / "mitdb").glob("*.hea"))
    mitdb = work / "sources" / "mitdb"
    if not mitdb.is_dir():  # a subset for smoke runs; links, not copies, of the read-only files
        mitdb.mkdir(parents=True)
        for record in records:
            for file in (data / "mitdb").glob(f"{record}.*"):
                (mitdb / file.name).symlink_to(file.resolve())
    corpus_csv = corpus_labels_csv(data, work / "sources" / "corpus-labels.csv")
    rhythm_csv = rhythm_labels_csv(data, records, work / "sources" / "rhythm-labels.csv")
    if not (work / "sources" / "anomaly-labels.csv").is_file():
        anomaly_windows(data, work / "sources" / "anomaly", records, budget.window_every)
    plans = {
        # all of ../shared/data: what the shipped AnyECG was pretrained on (its train split), and the families now
        "corpus": PrepareConfig(sources=[data], out=work / "stores" / "corpus", labels_csv=corpus_csv),
        "rhythm": PrepareConfig(sources=[mitdb, data / "cpsc2021"], out=work / "stores" / "rhythm", labels_csv=rhythm_csv),
        "anomaly": PrepareConfig(sources=[work / "sources" / "anomaly"], out=work / "stores" / "anomaly",
                                 labels_csv=work / "sources" / "anomaly-labels.csv"),
        "twelve": PrepareConfig(sources=[data / "cinc2021", data / "code15", data / "ptbdb"], out=work / "stores" / "twelve",
                                labels_csv=corpus_csv),
    }
    stores = {}
    for name, config in plans.items():
        config.progress = False
        result = prepare(config)
        print(f"store {name}: {result.store} ({result.skipped} skipped)", flush=True)
        stores[name] = Path(result.store)
    return stores


def pretrain_family_run(family: str, corpus: Path, out: Path, steps: int) -> Path:
    """ECG-FM or ECGFounder pretrained on the corpus store's train split (the data the shipped AnyECG
    was pretrained on) through the shared training loop, unless `out` already holds it; an
    interrupted pretraining resumes from its last checkpoint."""
    import torch

    from anyecg.families import pretrain_family
    from anyecg.training.loop import FINAL, TrainConfig

    torch.set_num_threads(1)
    if not (out / FINAL / "config.json").is_file():
        started = time.perf_counter()
        # ECG-FM's contrastive step over two 5 s, 12-lead, 500 Hz segments costs ~10x ECGFounder's: smaller batches
        config = TrainConfig(max_steps=steps, batch_size=8 if family == "ecgfm" else 16, lr=5e-4, warmup_steps=max(1, steps // 10),
                             save_every=max(1, steps // 4), log_every=10)
        pretrain_family(family, corpus, FAMILY_PRESETS[family], out, config)
        (out / "pretrain_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    return out


# ---------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    table: str
    row: str  # the model as the table names it
    task: str  # finetune task: beats, anomaly, leadgen, longecg
    store: str
    options: dict = field(default_factory=dict)
    setting: str = ""  # a column group: label fraction, lead generation case

    @property
    def key(self) -> str:
        """The run folder's name: task, store and options, so two tables asking for the same run share it."""
        options = {k: v for k, v in self.options.items() if not (k == "label_fraction" and v == 1.0)}
        parts = [self.task, self.store] + [f"{k}={Path(v).name if k == 'model' else v}" for k, v in sorted(options.items())]
        slug = "-".join(str(part) for part in parts)
        return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in slug)


def model_rows(families: dict[str, Path]) -> list[tuple[str, dict]]:
    """(row name, finetune options) of every model in a classification table."""
    rows = [
        ("AnyECG-small, pretrained, fine-tuned", {}),
        ("AnyECG-small, pretrained, linear probe", {"linear_probe": True}),
        ("AnyECG-small, random init, fine-tuned", {"random_init": True}),
    ]
    rows += [(name, {"baseline": name}) for name in BASELINES]
    rows += [(f"{FAMILY_PRESETS[f]}, pretrained, fine-tuned", {"model": str(path)}) for f, path in families.items()]
    return rows


def plan_runs(families: dict[str, Path]) -> list[Run]:
    runs = []
    for row, options in model_rows(families):
        runs.append(Run("beats", row, "beats", "rhythm", options))
        runs.append(Run("anomaly", row, "anomaly", "anomaly", options))
    generators = [
        ("linear regression (least squares)", {"baseline": "leadgen_linear"}),
        ("WGAN-GP generator", {"baseline": "leadgen_gan"}),
        ("AnyECG-small, pretrained, fine-tuned", {}),
        ("AnyECG-small, pretrained, linear probe", {"linear_probe": True}),
        ("AnyECG-small, random init, fine-tuned", {"random_init": True}),
    ]
    cases = {
        "MIT-BIH V1 from MLII": {"input_leads": ["II"], "target_leads": ["V1"]},
        "MIT-BIH V1 from MLII + V1 at 0 dB SNR": {"input_leads": ["II"], "target_leads": ["V1"], "corruption": "noise",
                                                  "noise_snr_db": 0.0},
        "12-lead V1-V6 from I, II": {"input_leads": ["I", "II"], "target_leads": ["V1", "V2", "V3", "V4", "V5", "V6"]},
    }
    for case, case_options in cases.items():
        store = "twelve" if case.startswith("12-lead") else "rhythm"
        for row, options in generators:
            runs.append(Run("leadgen", row, "leadgen", store, {**case_options, **options}, setting=case))
    encoders = [("AnyECG-small, pretrained (frozen)", {}), ("AnyECG-small, random init (frozen)", {"random_init": True})]
    encoders += [(f"{FAMILY_PRESETS[f]}, pretrained (frozen)", {"model": str(p)}) for f, p in families.items()]
    for row, options in encoders:
        runs.append(Run("longecg", row, "longecg", "rhythm", options))
    efficiency = [
        ("AnyECG-small, pretrained, fine-tuned", {}),
        ("AnyECG-small, pretrained, linear probe", {"linear_probe": True}),
        ("AnyECG-small, random init, fine-tuned", {"random_init": True}),
        ("AnyECG-small, random init, linear probe", {"random_init": True, "linear_probe": True}),
        ("xresnet1d-tiny", {"baseline": "xresnet1d-tiny"}),
    ]
    efficiency += [(f"{FAMILY_PRESETS[f]}, pretrained, fine-tuned", {"model": str(p)}) for f, p in families.items()]
    for fraction in LABEL_FRACTIONS:
        for row, options in efficiency:
            runs.append(Run("efficiency", row, "anomaly", "anomaly", {**options, "label_fraction": fraction},
                            setting=f"{fraction:g}"))
    return runs


def execute(run: Run, stores: dict[str, Path], out: Path, budget: Budget) -> dict:
    """One run in this process, through the same functions the CLI calls; returns its summary."""
    import torch

    torch.set_num_threads(1)
    summary_path = out / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    if out.exists():  # an interrupted run: start it again from scratch
        shutil.rmtree(out)
    data, options = stores[run.store], dict(run.options)
    started = time.perf_counter()
    common = {"seeds": budget.seeds, "batch_size": budget.batch_size, "lr": budget.lr}
    if run.task == "beats":
        from anyecg.tasks.beat_task import BeatConfig, finetune_beats

        summary = finetune_beats(data, out, BeatConfig(max_steps=budget.steps, max_beats_per_record=budget.beats_per_record,
                                                       **common, **options))
    elif run.task == "anomaly":
        from anyecg.tasks.runner import FinetuneConfig, finetune

        summary = finetune(data, out, FinetuneConfig(task="anomaly", steps=budget.steps, **common, **options))
    elif run.task == "leadgen":
        from anyecg.tasks.leadgen import LeadGenFinetuneConfig, finetune_leadgen

        summary = finetune_leadgen(data, out, LeadGenFinetuneConfig(steps=budget.leadgen_steps, **common, **options))
    elif run.task == "longecg":
        from anyecg.tasks.longecg import LongECGConfig, finetune_longecg

        summary = finetune_longecg(data, out, LongECGConfig(seeds=budget.seeds, steps=budget.long_steps, **options))
    else:
        raise ValueError(f"unknown task {run.task!r}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _worker(run: Run, stores: dict[str, Path], out: Path, budget: Budget) -> tuple[str, dict | None, str | None]:
    try:
        return run.key, execute(run, stores, out, budget), None
    except Exception as err:  # a failed run is reported in the tables, never stops the others
        return run.key, None, f"{type(err).__name__}: {err}"


def run_all(runs: list[Run], stores: dict[str, Path], families: dict[str, Path], work: Path, budget: Budget,
            workers: int) -> dict[str, dict]:
    """Pretrain the families and execute every distinct run in `workers` processes; a run that
    fine-tunes a family starts once that family's pretraining is done."""
    results: dict[str, dict] = {}
    started = time.perf_counter()
    unique = list({run.key: run for run in runs}.values())
    waiting = {family: [run for run in unique if run.options.get("model") == str(path)] for family, path in families.items()}
    ready = [run for run in unique if not any(run in group for group in waiting.values())]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(pretrain_family_run, family, stores["corpus"], path, budget.family_pretrain_steps): family
                   for family, path in families.items()}
        futures.update({pool.submit(_worker, run, stores, work / "runs" / run.key, budget): run.key for run in ready})
        while futures:
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in done:
                name = futures.pop(future)
                if name in families:  # a family is pretrained: its runs may start
                    future.result()
                    print(f"pretrained {name} in {families[name]}", flush=True)
                    futures.update({pool.submit(_worker, run, stores, work / "runs" / run.key, budget): run.key
                                    for run in waiting[name]})
                    continue
                key, summary, error = future.result()
                results[key] = summary if summary is not None else {"error": error}
                status = "failed: " + error if error else f"{summary.get('seconds', 0):.0f} s"
                print(f"[{len(results)}/{len(unique)} {time.perf_counter() - started:6.0f} s] {key}: {status}", flush=True)
    return results


# ---------------------------------------------------------------------------------------- tables


def _metric(summary: dict, *path: str) -> tuple[float, float, int] | None:
    node = summary.get("metrics", {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if not isinstance(node, dict) or "mean" not in node:
        return None
    mean, std = node["mean"], node["std"]
    mean = float("nan") if mean is None else float(mean)
    std = float("nan") if std is None else float(std)
    return mean, std, int(node.get("n", 0))


def fmt(value: tuple[float, float, int] | None, digits: int = 3) -> str:
    if value is None or math.isnan(value[0]):
        return "n/a"
    mean, std, _ = value
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _row_cells(summary: dict, columns: list[tuple[str, tuple, int]]) -> list[str]:
    if "error" in summary:
        return [f"failed: {summary['error'][:80]}"] + [""] * (len(columns) - 1)
    return [fmt(_metric(summary, *path), digits) for _, path, digits in columns]


def beats_table(runs: list[Run], results: dict) -> str:
    columns = [("accuracy", ("accuracy",), 3), ("macro F1", ("f1_macro",), 3),
               ("S sensitivity", ("per_class", "S", "sensitivity"), 3), ("S precision", ("per_class", "S", "ppv"), 3),
               ("V sensitivity", ("per_class", "V", "sensitivity"), 3), ("V precision", ("per_class", "V", "ppv"), 3)]
    rows = [[run.row] + _row_cells(results[run.key], columns) for run in runs if run.table == "beats"]
    rows += [["Mondejar-Guerra et al. 2019 (published anchor, full DS2)", "0.945", "", "", "", "", ""],
             ["de Chazal et al. 2004 (published anchor, full DS2)", "0.862", "", "", "", "", ""]]
    return markdown_table(["model"] + [c[0] for c in columns], rows)


def anomaly_table(runs: list[Run], results: dict) -> str:
    columns = [("accuracy", ("accuracy",), 3), ("AUROC (normal positive)", ("auroc_normal_positive",), 3),
               ("AUROC (abnormal positive)", ("auroc_abnormal_positive",), 3), ("AUPRC", ("auprc",), 3),
               ("macro F1", ("f1_macro",), 3)]
    rows = [[run.row] + _row_cells(results[run.key], columns) for run in runs if run.table == "anomaly"]
    return markdown_table(["model"] + [c[0] for c in columns], rows)


def prediction_shape(predictions: Path) -> list[str]:
    """[std of the reconstruction / std of the target, Pearson r] over a seed's test windows: a
    generator that only learnt the average lead scores a fair PSNR with a spread near 0 and r near 0."""
    if not predictions.is_file():
        return ["n/a", "n/a"]
    data = np.load(predictions)
    target, pred = data["target"].ravel(), data["pred"].ravel()
    return [f"{pred.std() / target.std():.2f}", f"{np.corrcoef(target, pred)[0, 1]:.2f}"]


def leadgen_tables(runs: list[Run], results: dict, work: Path) -> str:
    columns = [("PSNR (dB)", ("psnr",), 2), ("SSIM", ("ssim",), 3), ("MAE (normalised)", ("mae",), 3),
               ("MAE (mV)", ("mae_mv",), 4)]
    header = ["model"] + [c[0] for c in columns] + ["spread (seed 0)", "r (seed 0)"]
    parts = []
    for case in dict.fromkeys(run.setting for run in runs if run.table == "leadgen"):
        case_runs = [run for run in runs if run.table == "leadgen" and run.setting == case]
        rows = [[run.row] + _row_cells(results[run.key], columns)
                + prediction_shape(work / "runs" / run.key / "seed-0" / "test" / "predictions.npz") for run in case_runs]
        corrupted = next((results[r.key]["metrics"].get("corrupted_input") for r in case_runs
                          if "metrics" in results[r.key] and results[r.key]["metrics"].get("corrupted_input")), None)
        if corrupted:
            rows.append(["corrupted input itself (no reconstruction)"] + _row_cells({"metrics": corrupted}, columns) + ["", ""])
        parts.append(f"**{case}**\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts)


def longecg_table(runs: list[Run], results: dict) -> str:
    columns = [("accuracy", ("accuracy",), 3), ("AUROC (AF positive)", ("auroc",), 3), ("AUPRC", ("auprc",), 3),
               ("weighted F1", ("f1_weighted",), 3)]
    rows = [[run.row] + _row_cells(results[run.key], columns) for run in runs if run.table == "longecg"]
    return markdown_table(["frozen encoder + attention aggregator"] + [c[0] for c in columns], rows)


def efficiency_grid(runs: list[Run]) -> dict[str, list[Run]]:
    """Each label-efficiency row's runs, one per share of LABEL_FRACTIONS, in that order."""
    grid: dict[str, dict[str, Run]] = {}
    for run in runs:
        if run.table == "efficiency":
            grid.setdefault(run.row, {})[run.setting] = run
    return {name: [by_setting[f"{fraction:g}"] for fraction in LABEL_FRACTIONS] for name, by_setting in grid.items()}


def efficiency_table(runs: list[Run], results: dict) -> str:
    rows = []
    for name, row_runs in efficiency_grid(runs).items():
        cells = [name]
        for run in row_runs:
            cells += _row_cells(results[run.key], [("auroc", ("auroc_normal_positive",), 3)])
        rows.append(cells)
    return markdown_table(["model"] + [f"AUROC, {fraction:.0%} of labels" for fraction in LABEL_FRACTIONS], rows)


def efficiency_figure(runs: list[Run], results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, row_runs in efficiency_grid(runs).items():
        points = []
        for fraction, run in zip(LABEL_FRACTIONS, row_runs):
            value = _metric(results[run.key], "auroc_normal_positive")
            if value is not None and not math.isnan(value[0]):
                points.append((fraction, value[0], 0.0 if math.isnan(value[1]) else value[1]))
        if points:
            x, y, e = map(np.array, zip(*points))
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xticks(LABEL_FRACTIONS, [f"{f:.0%}" for f in LABEL_FRACTIONS])
    ax.set_xlabel("share of training labels")
    ax.set_ylabel("test AUROC (normal positive)")
    ax.set_title("Anomaly detection on MIT-BIH 10 s windows: label efficiency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def data_facts(stores: dict[str, Path], runs: list[Run], results: dict) -> dict:
    """Counts a reader needs to judge the tables: records, windows and classes per split."""
    from anyecg.data.store import Store

    anomaly = Store(stores["anomaly"]).manifest
    facts = {"anomaly": {split: {label: int(n) for label, n in group["labels"].value_counts().items()}
                         for split, group in anomaly.groupby("split")},
             "anomaly_patients": {split: int(group["patient_id"].nunique()) for split, group in anomaly.groupby("split")}}
    long_run = next((results[r.key] for r in runs if r.table == "longecg" and "error" not in results[r.key]), None)
    if long_run:
        facts["longecg"] = {"train": long_run.get("train_counts"), "test": long_run.get("test_counts")}
    beat_run = next((results[r.key] for r in runs if r.table == "beats" and "error" not in results[r.key]), None)
    if beat_run:
        facts["beats"] = {"test_beats": _metric(beat_run, "n"), "test_records": len(beat_run.get("test_records", []))}
    return facts


def write_report(path: Path, runs: list[Run], results: dict, stores: dict[str, Path], families: dict[str, Path],
                 budget: Budget, seconds: float, figure: Path, smoke: bool, work: Path) -> None:
    facts = data_facts(stores, runs, results)
    family_seconds = {f: (p / "pretrain_seconds.txt").read_text().strip() for f, p in families.items()
                      if (p / "pretrain_seconds.txt").is_file()}
    anomaly = facts["anomaly"]
    long_counts = facts.get("longecg", {})
    text = f"""# Results on real recordings

Generated by `python scripts/results.py` in **{seconds / 60:.0f} minutes** (wall clock, all of its runs) on a {os.cpu_count()}-core CPU
(no GPU){" — a SMOKE run: one seed and a few steps, numbers meaningless" if smoke else ""}. Every figure below
comes from that run; nothing is copied in by hand except the two published anchors, marked as such.

**Protocol.** {budget.seeds} seeds per row, mean ± sample standard deviation over seeds (a value without ±
was defined in one seed only, e.g. a precision where only one seed predicted the class). Splits are
fixed and patient-level. Beats: the published DS1/DS2 record lists (de Chazal 2004). Anomaly windows,
lead generation on MIT-BIH and long recordings: DS2 records test, DS1 and the paced records train,
and record 202 trains with 201 (one patient); CPSC 2021 patients 92 (paroxysmal AF) and 35 (non-AF)
test, the other four train. 12-lead lead generation: the store's seeded, stratified patient split.
Metrics are scikit-learn's, on the test split. Budget per fine-tuning run: {budget.steps} steps of batch {budget.batch_size} (AdamW, lr {budget.lr:g},
warm-up + cosine), which is far less than the papers train; a CPU-sized budget, not a replication.

**Models.** AnyECG-small is the checkpoint shipped in the package (1.5M parameters; its MODEL_CARD.md),
self-supervised on the train split of a store of all of `../shared/data`; "random init" is the same
architecture with fresh weights, trained the same way. Baselines are the CPU-sized presets of
`anyecg models` ({", ".join(BASELINES)}), trained from scratch through the same loop and splits.
ECG-FM ({FAMILY_PRESETS["ecgfm"]}, self-supervised) and ECGFounder ({FAMILY_PRESETS["ecgfounder"]}, supervised on the
corpus' SNOMED / CODE-15% labels) were pretrained by this run on the same corpus split for
{budget.family_pretrain_steps} steps (seconds: {family_seconds}); the published checkpoints are not
loaded (no downloads on this machine), so these rows measure the methods at this scale, not the
released models.

**Caveat on pretraining data.** The corpus split used for self-supervised pretraining is not the
downstream split: unlabelled signal of some downstream test records was seen during pretraining (no
labels were). Read the pretrained-vs-random gaps with that in mind.

## 1. MIT-BIH inter-patient AAMI beat classes (DS1 → DS2)

N, S, V, F beats; Q beats left out (AAMI EC57). A seeded subset of {budget.beats_per_record} beats per record
is used for training and for scoring ({facts.get("beats", {}).get("test_records", "?")} DS2 records), so the
figures are not the full-DS2 numbers of the anchors. Class-weighted cross-entropy; 3 s windows centred on
the R peak.

{beats_table(runs, results)}

## 2. Anomaly detection on 10 s windows

Every {budget.window_every}{"nd" if budget.window_every == 2 else "th"} non-overlapping 10 s window of each MIT-BIH record,
labelled from its annotations: "normal" when the window lies wholly in normal sinus rhythm and every
beat in it is normal, "abnormal" otherwise (`anyecg.tasks.rhythm.window_anomaly_labels`). The windows go
through `anyecg prepare` as a folder of .npy files plus a labels CSV with patient ids. Windows per split
and class: {json.dumps(anomaly)}; patients per split: {json.dumps(facts["anomaly_patients"])}. A
prediction is per window. "normal" is the positive class as in the AnyECG paper; both orientations are
given, and for two classes they are equal, since p(normal) = 1 - p(abnormal).

{anomaly_table(runs, results)}

## 3. Lead generation

Target leads are removed from the input (or, in the noise case, present but corrupted with white noise
and baseline wander at 0 dB SNR) and reconstructed; scored on the test split's 10 s windows in the
store's normalised units (PSNR, 1-D SSIM, MAE) and in mV (MAE). The least-squares fit has no
randomness, so it is fitted once (no ±); the WGAN-GP generator gets the same {budget.leadgen_steps}
generator steps as the other rows, each after 5 critic steps. "spread" is the standard deviation of
the reconstruction over that of the true lead and "r" their correlation, on seed 0's test windows: a
model that has only learnt to output the average lead has a spread and r near 0 yet a fair PSNR. ECG-FM and ECGFounder are not in these
tables: both pool their features into one vector per window and have no per-sample output to
regenerate a lead from.

{leadgen_tables(runs, results, work)}

## 4. Long recordings: AF vs non-AF

Each CPSC 2021 recording is one example (its header class); MIT-BIH records are cut into 5-minute
segments labelled by the majority rhythm. A frozen encoder embeds consecutive windows (AnyECG 10 s,
ECG-FM 5 s, ECGFounder 10 s) and a gated attention aggregator is trained on top. Examples per class:
train {json.dumps(long_counts.get("train"))}, test {json.dumps(long_counts.get("test"))}. The supervised
baselines have no pretrained encoder to freeze and are left out of this table.

{longecg_table(runs, results)}

## 5. Label efficiency

The anomaly task of section 2 with 1%, 10% and 100% of the training windows (a seeded per-class sample;
at least one window per class). Test AUROC with "normal" as the positive class.

{efficiency_table(runs, results)}

![label efficiency]({os.path.relpath(figure, path.parent)})

## Pretrained AnyECG against its random init and the best other model

{honest_summary(runs, results)}
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _verdict(a: tuple[float, float, int], b: tuple[float, float, int]) -> str:
    """"ahead" / "behind", or "within one std" when the gap is smaller than the larger spread."""
    spread = max(0.0 if math.isnan(a[1]) else a[1], 0.0 if math.isnan(b[1]) else b[1])
    if abs(a[0] - b[0]) <= spread:
        return "within one std"
    return "ahead" if a[0] > b[0] else "behind"


def honest_summary(runs: list[Run], results: dict) -> str:
    """One line per table: the pretrained AnyECG against its random init and against the best other row."""
    checks = [("beats", "", ("f1_macro",), "macro F1"), ("anomaly", "", ("auroc_normal_positive",), "AUROC"),
              ("longecg", "", ("auroc",), "AUROC"), ("efficiency", "0.01", ("auroc_normal_positive",), "AUROC"),
              ("efficiency", "0.1", ("auroc_normal_positive",), "AUROC")]
    checks += [("leadgen", case, ("psnr",), "PSNR") for case in dict.fromkeys(r.setting for r in runs if r.table == "leadgen")]
    lines = []
    for table, setting, path, name in checks:
        scores = {run.row: _metric(results[run.key], *path) for run in runs if run.table == table and run.setting == setting}
        scores = {row: v for row, v in scores.items() if v is not None and not math.isnan(v[0])}
        pretrained = next((v for row, v in scores.items() if row.startswith("AnyECG") and "pretrained" in row
                           and "probe" not in row), None)
        random = next((v for row, v in scores.items() if row.startswith("AnyECG") and "random" in row
                       and "probe" not in row), None)
        others = {row: v for row, v in scores.items() if not row.startswith("AnyECG")}
        label = f"{table} {setting}".strip() if table != "efficiency" else f"anomaly with {float(setting):.0%} of the labels"
        if pretrained is None:
            lines.append(f"- {label}: no AnyECG result.")
            continue
        verdict = f"- {label} ({name}): pretrained AnyECG {pretrained[0]:.3f}"
        if random is not None:
            verdict += f" vs random init {random[0]:.3f} ({_verdict(pretrained, random)})"
        if others:
            best_row, best = max(others.items(), key=lambda item: item[1][0])
            verdict += f"; best other model {best_row} {best[0]:.3f} (AnyECG {_verdict(pretrained, best)})"
        lines.append(verdict + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=REPO / "results-work", help="run folders (resumable)")
    parser.add_argument("--out", type=Path, default=REPO / "results-work" / "results.md")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one torch thread each")
    parser.add_argument("--smoke", action="store_true", help="one seed, a few steps, 10 MIT-BIH records")
    parser.add_argument("--only", help="run only the tables whose name contains this (beats, anomaly, ...)")
    args = parser.parse_args(argv)
    if not (args.data / "mitdb").is_dir():
        print(f"results: no MIT-BIH folder under {args.data} (--data)", file=sys.stderr)
        return 2
    budget = SMOKE if args.smoke else Budget()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "budget.json").write_text(json.dumps(asdict(budget), indent=2))
    stores = prepare_stores(args.data, args.work, budget)
    families = {family: args.work / "pretrained" / family for family in FAMILY_PRESETS}
    runs = plan_runs(families)
    if args.only:
        runs = [run for run in runs if args.only in run.table]
    results = run_all(runs, stores, families, args.work, budget, args.workers)
    figure = args.out.parent / "figures" / ("results-label-efficiency.png" if not args.smoke else "smoke-label-efficiency.png")
    if any(run.table == "efficiency" for run in runs):
        efficiency_figure(runs, results, figure)
    # wall time over every invocation that worked on this --work folder (an interrupted job resumes)
    elapsed_file = args.work / "elapsed_seconds.txt"
    previous = float(elapsed_file.read_text()) if elapsed_file.is_file() else 0.0
    total = previous + time.perf_counter() - started
    elapsed_file.write_text(f"{total:.1f}\n")
    if not args.only:
        write_report(args.out, runs, results, stores, families, budget, total, figure, args.smoke, args.work)
        print(f"wrote {args.out}: {total / 60:.1f} min in all, {(time.perf_counter() - started) / 60:.1f} min this time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
