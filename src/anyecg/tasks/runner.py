"""`anyecg finetune` and `anyecg evaluate` for the record-level tasks (anomaly, arrhythmia).

    finetune: for each seed, train on the store's train split (optionally a fraction of its labels),
              then evaluate on the test split; `out/seed-K/` holds each model, `out/summary.json`
              the mean +/- std over seeds.
    evaluate: one fine-tuned model on one split -> metrics.json, predictions.csv, ROC/PR and
              confusion-matrix plots.

A fine-tuned model folder is `model.safetensors` + `config.json` (task, classes, and how to rebuild
the network: AnyECG backbone config or baseline preset) + `recipe.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anyecg.data.store import Store
from anyecg.evaluation.metrics import classification_metrics, mean_std_over_seeds, to_jsonable
from anyecg.evaluation.plots import plot_confusion, plot_roc_pr
from anyecg.families import FamilyClassifier, is_family_checkpoint
from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.baselines import build_baseline
from anyecg.models.contract import segments
from anyecg.pretrained import AnyECG, token_windows
from anyecg.signal.leads import canonical_leads
from anyecg.signal.recipe import preprocess
from anyecg.tasks.classification import (
    AnyECGClassifier,
    LabelledWindows,
    collate_labelled,
    predict_records,
    record_labels,
    subsample_labels,
)
from anyecg.tasks.labels import anomaly_label, arrhythmia_label
from anyecg.tasks.folders import CONTRACT_KINDS, load_finetuned_config, write_summary
from anyecg.training.checkpoint import load_state_dict_strict
from anyecg.training.loop import FINAL, TrainConfig, train

LABEL_FUNCTIONS = {"anomaly": anomaly_label, "arrhythmia": arrhythmia_label}


@dataclass
class FinetuneConfig:
    task: str = "anomaly"
    model: str | None = None  # AnyECG, ECG-FM or ECGFounder checkpoint folder; None: the shipped AnyECG
    baseline: str | None = None  # train this baseline preset instead (same loop, same splits)
    random_init: bool = False  # AnyECG encoder with random weights (the same probe): a control
    linear_probe: bool = False
    seeds: int = 5
    label_fraction: float = 1.0
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    window_s: int = 10


def _label_fn(task: str):
    if task not in LABEL_FUNCTIONS:
        raise ValueError(f"unknown task {task!r} for record classification; known: {sorted(LABEL_FUNCTIONS)}")
    return LABEL_FUNCTIONS[task]


def _build(config: FinetuneConfig, n_classes: int):
    """(model, input form, contract, rebuild recipe for config.json)."""
    if config.baseline is not None:
        model = build_baseline(config.baseline, num_classes=n_classes)
        spec = {"kind": "baseline", "preset": config.baseline, "config": asdict(model.config)}
        return model, "contract", model.config.contract, spec
    if is_family_checkpoint(config.model):  # a pretrained ECG-FM or ECGFounder run
        model = FamilyClassifier.from_pretrained(config.model, n_classes, linear_probe=config.linear_probe,
                                                 random_init=config.random_init)
        return model, "contract", model.config.contract, model.spec(config.random_init)
    pretrained = AnyECG.from_pretrained(config.model)
    if pretrained.backbone is None:
        raise ValueError(f"{config.model}: a tokenizer-only checkpoint; fine-tuning needs a stage-2 (pretrain) checkpoint")
    backbone = Backbone(pretrained.backbone.config) if config.random_init else pretrained.backbone
    model = AnyECGClassifier(backbone, n_classes, linear_probe=config.linear_probe)
    spec = {"kind": "anyecg", "backbone": asdict(backbone.config), "random_init": config.random_init}
    return model, "tokens", None, spec


def finetune(data: str | Path, out: str | Path, config: FinetuneConfig) -> dict:
    store, out = Store(data), Path(out)
    labels = record_labels(store, _label_fn(config.task))
    if len(labels.classes) < 2:
        raise ValueError(f"{store.root}: task {config.task!r} needs two classes, found {labels.classes}")
    split_of = store.manifest["split"].to_numpy()
    train_rows = labels.records[split_of[labels.records] == "train"]
    test_rows = labels.records[split_of[labels.records] == "test"]
    per_seed = []
    for seed in range(config.seeds):
        run = out / f"seed-{seed}"
        model, form, contract, spec = _build(config, len(labels.classes))
        rows = subsample_labels(labels, train_rows, config.label_fraction, seed)
        dataset = LabelledWindows(store, labels, rows, form=form, contract=contract, window_s=config.window_s, seed=seed)
        train_config = TrainConfig(max_steps=config.steps, batch_size=min(config.batch_size, len(dataset)), lr=config.lr,
                                   warmup_steps=max(1, config.steps // 10), save_every=config.steps, log_every=10, seed=seed)
        model_config = {"family": "finetuned", "task": config.task, "classes": labels.classes, "model": spec,
                        "window_s": config.window_s, "finetune": asdict(config), "train_records": int(len(rows))}
        train(model, dataset, collate_labelled, train_config, run, model_config=model_config,
              recipe_json=store.recipe.to_json())
        per_seed.append(evaluate(run / FINAL, data, "test", run / "test"))
    summary = {
        "task": config.task, "classes": labels.classes, "unlabelled_records": labels.unlabelled,
        "train_records": int(len(train_rows)), "test_records": int(len(test_rows)), "seeds": config.seeds,
        "label_fraction": config.label_fraction, "metrics": mean_std_over_seeds(per_seed),
    }
    write_summary(out, summary)
    return summary


def load_finetuned(directory: str | Path):
    """(model, config) of a fine-tuned folder, strictly loaded; `config["recipe"]` is its Recipe."""
    config = load_finetuned_config(directory)
    spec, n_classes = config["model"], len(config["classes"])
    if spec["kind"] == "baseline":
        model = build_baseline(spec["preset"], **{**spec["config"], "num_classes": n_classes})
    elif spec["kind"] == "family":
        model = FamilyClassifier.from_spec(spec, n_classes)
    else:
        model = AnyECGClassifier(Backbone(BackboneConfig(**spec["backbone"])), n_classes)
    load_state_dict_strict(model, directory)
    return model.eval(), config


@torch.no_grad()
def predict_signal(model, config: dict, signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
    """float [K]: class probabilities of one raw recording (mV), averaged over its windows."""
    recipe = config["recipe"]
    if config["model"]["kind"] in CONTRACT_KINDS:
        clean = preprocess(np.asarray(signal, dtype=np.float32), fs, recipe)
        windows, lead_mask = segments(clean, recipe.target_fs, canonical_leads(list(leads)), model.config.contract)
        x = torch.from_numpy(windows)  # [S, C, T]
        logits = model(x, torch.from_numpy(lead_mask)[None].expand(len(x), -1))  # [S, K]
    else:
        batches = token_windows(signal, fs, leads, recipe, config["window_s"])
        logits = torch.cat([model.head(model.forward_features(b)) for b in batches])  # [S, K]
    return torch.softmax(logits.float(), dim=-1).mean(dim=0).numpy()


def evaluate(model_dir: str | Path, data: str | Path, split: str, out: str | Path) -> dict:
    model, config = load_finetuned(model_dir)
    store, out = Store(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = record_labels(store, _label_fn(config["task"]))
    if labels.classes != config["classes"]:
        raise ValueError(f"{store.root}: classes {labels.classes} differ from the model's {config['classes']}")
    rows = labels.records[store.manifest["split"].to_numpy()[labels.records] == split]
    if len(rows) == 0:
        raise ValueError(f"{store.root}: no labelled records in split {split!r}")
    form = "contract" if config["model"]["kind"] in CONTRACT_KINDS else "tokens"
    contract = model.config.contract if form == "contract" else None
    windows = LabelledWindows(store, labels, rows, form=form, contract=contract, window_s=config["window_s"], random_crop=False)
    records, probabilities = predict_records(model, windows, len(labels.classes))
    target_of = dict(zip(labels.records.tolist(), labels.targets.tolist()))
    y_true = np.array([target_of[r] for r in records])
    classes = labels.classes
    positive = "normal" if config["task"] == "anomaly" and "normal" in classes else None
    metrics = classification_metrics(np.array(classes)[y_true], probabilities, classes, positive=positive)
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    predictions = pd.DataFrame({"record_id": store.manifest["record_id"].to_numpy()[records],
                                "label": np.array(classes)[y_true], "predicted": np.array(classes)[probabilities.argmax(1)]})
    for k, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, k]
    predictions.to_csv(out / "predictions.csv", index=False)
    plot_roc_pr(np.array(classes)[y_true], probabilities, classes, out / "roc_pr.png")
    plot_confusion(np.array(classes)[y_true], np.array(classes)[probabilities.argmax(1)], classes, out / "confusion.png")
    return metrics
