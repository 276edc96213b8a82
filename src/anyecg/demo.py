"""`anyecg demo`: the main job end to end on the real recordings shipped in the package.

    anyecg demo --out anyecg-demo            # about 5 minutes on a 2-core CPU
    anyecg demo --out anyecg-demo --quick    # a minute: a few steps per stage, one seed

Stages, each timed: prepare the embedded records into a store; a short tokenizer pretraining and
masked rhythm-code pretraining of a small preset (to show both stages run and their losses fall);
codebook and reconstruction figures; fine-tuning of the shipped `anyecg-small` checkpoint for anomaly
and arrhythmia detection with evaluation on the test split; then `out/metrics.json` (every number the
report shows) and the self-contained `out/report.html`. A rerun into the same folder resumes each
training stage from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

import torch

from anyecg.data.inspect import describe_store, format_description
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store, split_list
from anyecg.evaluation.ecg_plot import plot_ecg
from anyecg.evaluation.metrics import to_jsonable
from anyecg.evaluation.tokenizer_report import held_out_metrics
from anyecg.io import read_record, snomed_abbreviation
from anyecg.pretrained import AnyECG, default_checkpoint
from anyecg.report import plot_ecg_codes, plot_loss_curves, read_log, write_report
from anyecg.tasks.classification import record_labels
from anyecg.tasks.runner import LABEL_FUNCTIONS, FinetuneConfig, finetune
from anyecg.training.loop import LOG, TrainConfig
from anyecg.training.pretrain import pretrain_backbone, pretrain_tokenizer

TOKENIZER_LR = 1e-4  # the codebook collapses at higher rates (see the anyecg-small model card)
BACKBONE_LR = 5e-4


@dataclass
class DemoConfig:
    workers: int = 1  # processes preparing the store
    # torch intra-op threads while the demo runs: its models are small, and on a shared 2-core machine
    # two threads ran the quick demo up to 5x slower than one (spinning threads fight other processes)
    threads: int = 1
    preset: str = "anyecg-tiny"  # what the demo pretrains; fine-tuning uses the shipped anyecg-small
    tokenizer_steps: int = 200
    backbone_steps: int = 200
    pretrain_batch_size: int = 16
    finetune_steps: int = 30
    finetune_batch_size: int = 16
    seeds: int = 5  # the paper reports mean +/- std over 5 seeds
    tasks: tuple[str, ...] = ("anomaly", "arrhythmia")

    @classmethod
    def quick(cls, workers: int = 1, threads: int = 1) -> DemoConfig:
        """A few steps per stage and one seed: checks the whole pipeline in well under a minute."""
        return cls(workers=workers, threads=threads, tokenizer_steps=6, backbone_steps=6, pretrain_batch_size=8,
                   finetune_steps=4, finetune_batch_size=8, seeds=1)


def embedded_data_dir() -> Path:
    """Folder of the real recordings shipped with the package (see its README for attribution)."""
    return Path(str(files("anyecg") / "embedded"))


class _Stages:
    """Times each stage and prints one progress line when it ends."""

    def __init__(self, total: int):
        self.total, self.done, self.timings = total, 0, {}

    def finish(self, name: str, started: float, message: str) -> None:
        self.timings[name] = round(time.perf_counter() - started, 1)
        self.done += 1
        print(f"[{self.done}/{self.total}] {message} ({self.timings[name]:.1f} s)", flush=True)


def run_demo(out: str | Path, config: DemoConfig | None = None) -> dict:
    """Run every stage into `out`; returns what `out/metrics.json` holds."""
    config = config or DemoConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_stages(Path(out), config)
    finally:
        torch.set_num_threads(threads)


def _run_stages(out: Path, config: DemoConfig) -> dict:
    unknown = [task for task in config.tasks if task not in LABEL_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown demo tasks {unknown}; known: {sorted(LABEL_FUNCTIONS)}")
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    stages = _Stages(total=5 + len(config.tasks))
    begun = time.perf_counter()

    started = time.perf_counter()
    prepared = prepare(PrepareConfig(sources=[embedded_data_dir()], out=out / "store", workers=config.workers,
                                     progress=False))
    store = Store(prepared.store)
    summary = describe_store(prepared.store)
    summary["plot"] = str(_plot_first_12_lead(store, out / "ecg.png"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    stages.finish("prepare", started, f"prepare: {len(store)} records -> {prepared.store}")

    pretraining = {"preset": config.preset}
    started = time.perf_counter()
    tokenizer_dir = out / "pretrain" / "tokenizer"
    pretrain_tokenizer(store.root, config.preset, tokenizer_dir,
                       _train_config(config.tokenizer_steps, config.pretrain_batch_size, TOKENIZER_LR), window_s=10)
    pretraining["tokenizer"] = _log_summary(tokenizer_dir, config.tokenizer_steps)
    stages.finish("tokenizer", started, f"tokenizer pretraining ({config.preset}): loss "
                  f"{pretraining['tokenizer']['first_loss']:.3f} -> {pretraining['tokenizer']['last_loss']:.3f}")

    started = time.perf_counter()
    backbone_dir = out / "pretrain" / "backbone"
    pretrain_backbone(store.root, tokenizer_dir, config.preset, backbone_dir,
                      _train_config(config.backbone_steps, config.pretrain_batch_size, BACKBONE_LR), window_s=10)
    pretraining["backbone"] = _log_summary(backbone_dir, config.backbone_steps)
    stages.finish("backbone", started, f"masked pretraining ({config.preset}): loss "
                  f"{pretraining['backbone']['first_loss']:.3f} -> {pretraining['backbone']['last_loss']:.3f}")

    started = time.perf_counter()
    demo_model, shipped = AnyECG.from_pretrained(backbone_dir), AnyECG.from_pretrained(default_checkpoint())
    pretraining["tokenizer"]["parameters"] = _parameters(demo_model.tokenizer)
    pretraining["backbone"]["parameters"] = _parameters(demo_model.backbone)
    figures = {
        "patches": figures_dir / "patches.png", "code_usage_shipped": figures_dir / "code-usage-shipped.png",
        "code_usage_demo": figures_dir / "code-usage-demo.png",
    }
    codebook = {
        "shipped": {"label": "shipped anyecg-small", "metrics": held_out_metrics(
            shipped, store, figures["patches"], usage_plot=figures["code_usage_shipped"])},
        "demo": {"label": f"demo {config.preset}", "metrics": held_out_metrics(
            demo_model, store, figures_dir / "patches-demo.png", usage_plot=figures["code_usage_demo"])},
    }
    shipped_usage = codebook["shipped"]["metrics"]["code_usage"]
    stages.finish("codebook", started, f"codebook figures: shipped model uses {shipped_usage:.1%} of its codes on val + test")

    tasks = {}
    for task in config.tasks:
        started = time.perf_counter()
        tasks[task] = _run_task(store, out / task, task, config)
        if tasks[task]["status"] == "ran":
            evaluation = out / task / "seed-0" / "test"
            figures[f"roc_{task}"], figures[f"confusion_{task}"] = evaluation / "roc_pr.png", evaluation / "confusion.png"
            first = tasks[task]["seeds"]["seed-0"]
            message = f"fine-tune {task}: {config.seeds} seed(s), seed-0 test accuracy {first['accuracy']:.3f}"
        else:
            message = f"fine-tune {task}: not run, {tasks[task]['reason']}"
        stages.finish(f"finetune_{task}", started, message)

    started = time.perf_counter()
    ecg_codes = _ecg_with_codes(store, shipped, figures_dir / "ecg-codes.png")
    figures["ecg_codes"] = figures_dir / "ecg-codes.png"
    figures["loss_curves"] = plot_loss_curves(read_log(tokenizer_dir / LOG), read_log(backbone_dir / LOG),
                                              figures_dir / "pretraining-loss.png")
    stages.finish("figures", started, "figures: ECG with rhythm codes, pretraining loss curves")

    timings = dict(stages.timings, total=round(time.perf_counter() - begun, 1))
    results = to_jsonable({
        "config": asdict(config),
        "data": _data_summary(store, summary),
        "ecg_codes": ecg_codes,
        "pretraining": pretraining,
        "codebook": codebook,
        "tasks": tasks,
        "timings_s": timings,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": "CUDA GPU" if torch.cuda.is_available() else "CPU"},
        "figures": {name: str(Path(path).relative_to(out)) for name, path in figures.items()},
    })
    (out / "metrics.json").write_text(json.dumps(results, indent=2))
    report = write_report(out, results)
    print(format_description(summary))
    print(f"report: {report} (metrics: {out / 'metrics.json'}, total {timings['total']:.1f} s)")
    return results


def _train_config(steps: int, batch_size: int, lr: float) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(1, steps // 10),
                       save_every=steps, log_every=max(1, steps // 20), seed=0)


def _log_summary(run: Path, steps: int) -> dict:
    log = read_log(run / LOG)
    if not log:
        raise ValueError(f"{run / LOG}: the training log is empty")
    return {"steps": steps, "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"]}


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _plot_first_12_lead(store: Store, path: Path) -> Path:
    row = int((store.manifest["n_leads"] == 12).idxmax())
    record = store[row]
    return plot_ecg(store.signal(row, normalized=False), record.fs, record.leads, path, title=record.record_id)


def _label_counts(store: Store, task: str) -> tuple[list[str], dict[str, dict[str, int]]]:
    """The task's classes and its labelled records per split and class."""
    labels = record_labels(store, LABEL_FUNCTIONS[task])
    split_of = store.manifest["split"].to_numpy()[labels.records]
    counts = {}
    for split in ("train", "val", "test"):
        targets = labels.targets[split_of == split]
        counts[split] = {name: int((targets == k).sum()) for k, name in enumerate(labels.classes)}
    return labels.classes, counts


def task_problem(counts: dict[str, dict[str, int]]) -> str | None:
    """Why a task cannot be fine-tuned and scored on a store, from its labelled records per split and
    class (`counts[split][class]`); None when at least two classes have records in both train and test."""
    train, test = counts.get("train", {}), counts.get("test", {})
    in_both = [name for name in train if train[name] > 0 and test.get(name, 0) > 0]
    if len(in_both) >= 2:
        return None
    return f"needs two classes with records in both train and test, has {in_both or 'none'} (train {train}, test {test})"


def _run_task(store: Store, out: Path, task: str, config: DemoConfig) -> dict:
    """Fine-tune and evaluate one task, or say why it cannot run on this store."""
    classes, counts = _label_counts(store, task)
    result = {"status": "skipped", "classes": classes, "counts": counts, "seeds": {}}
    problem = task_problem(counts)
    if problem is not None:
        result["reason"] = problem
        return result
    try:
        summary = finetune(store.root, out, FinetuneConfig(task=task, seeds=config.seeds, steps=config.finetune_steps,
                                                           batch_size=config.finetune_batch_size))
    except ValueError as err:  # the data cannot support the task (finetune names the problem)
        result["reason"] = str(err)
        return result
    result["status"] = "ran"
    result["seeds"] = {f"seed-{k}": json.loads((out / f"seed-{k}" / "test" / "metrics.json").read_text())
                       for k in range(config.seeds)}
    result["summary"] = summary["metrics"]
    if summary["ensemble"] is not None:  # the seeds as one model, scored on test once
        result["ensemble"] = json.loads((out / "ensemble" / "test" / "metrics.json").read_text())
    return result


def _ecg_with_codes(store: Store, model: AnyECG, path: Path) -> dict:
    """Tokenize the first 12-lead test record from its original file and draw its codes over it."""
    manifest = store.manifest
    candidates = manifest.index[(manifest["n_leads"] == 12) & (manifest["split"] == "test")]
    row = int(candidates[0]) if len(candidates) else int((manifest["n_leads"] == 12).idxmax())
    item = manifest.iloc[row]
    recording = read_record(item["source"])
    codes = model.tokenize(recording.signal, recording.fs, recording.leads)  # [L, seconds]
    labels = ", ".join(snomed_abbreviation(code) for code in split_list(item["labels"])) or "no labels"
    plot_ecg_codes(recording.signal, recording.fs, recording.leads, codes, path,
                   title=f"{item['record_id']} ({labels}): rhythm codes of the shipped anyecg-small")
    return {"record_id": str(item["record_id"]), "split": str(item["split"]), "labels": labels,
            "codes": model.tokenizer.config.num_codes, "tokens": codes.tolist()}


def _data_summary(store: Store, summary: dict) -> dict:
    """Records per source folder (leads, original rates, minutes, splits) and label counts."""
    manifest = store.manifest.assign(folder=[Path(source).parent.name for source in store.manifest["source"]])
    per_source = {}
    for folder, group in manifest.groupby("folder", sort=True):
        per_source[folder] = {
            "records": len(group),
            "leads": ", ".join(str(n) for n in sorted(group["n_leads"].unique())),
            "rates_hz": ", ".join(f"{fs:g}" for fs in sorted(group["fs_original"].unique())),
            "minutes": float(group["duration_s"].sum() / 60),
            "splits": ", ".join(f"{split} {n}" for split, n in group["split"].value_counts().sort_index().items()),
        }
    return {"records": len(store), "fs": summary["fs"], "hours": summary["hours"], "splits": summary["splits"],
            "per_source": per_source, "labels": summary["labels"],
            "skipped": summary["skipped"], "not_read": summary["not_read"]}

