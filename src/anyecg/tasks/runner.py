"""`anyecg finetune` and `anyecg evaluate` for the record-level tasks.

    classify    the store's own labels, exactly as given: multi-class (one label per record) or
                multi-label (';'-separated, per-class sigmoids and thresholds chosen on validation)
    anomaly     preset: normal vs abnormal from SNOMED codes / user names (`labels.anomaly_label`)
    arrhythmia  preset: rhythm classes (`labels.arrhythmia_label`)

    finetune: for each seed, train on the train split by epochs (`anyecg.tasks.fit`), the validation
              split (the store's, or patients carved from train) choosing the epoch kept, then score
              the test split once; `out/seed-K/final` holds each model, `out/summary.json` the mean
              +/- std over seeds and how the model was selected. A run of several seeds on all the
              labels also becomes one model, the seed ensemble (`out/ensemble.json`: the seeds'
              probabilities averaged; multi-label thresholds chosen on validation), scored on the
              test split once, in `out/ensemble/test`.
    evaluate: one fine-tuned model (a model folder, or a run folder: its ensemble, else its one
              model) on one split -> metrics.json, predictions.csv, ROC/PR and confusion-matrix plots.

With `rr_features` (default on) every record's RR-interval and beat-shape features
(`anyecg.tasks.record_rr`: R peaks found once per record, cached in `out/rr_features.npz`) are
joined to the network's features of each of its windows before a two-layer head, and reach the
logits by a linear path beside it; they are standardized with the training records' statistics,
which the model folder keeps.

A fine-tuned model folder is `model.safetensors` + `config.json` (task, classes, multi-label
thresholds, lead mapping, RR-feature standardization, and how to rebuild the network: AnyECG
backbone config, baseline preset or family) + `recipe.json`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anyecg.data.splits import patient_split
from anyecg.data.store import Store, split_list
from anyecg.evaluation.metrics import best_f1_thresholds, classification_metrics, mean_std_over_seeds, to_jsonable
from anyecg.evaluation.plots import plot_confusion, plot_roc_pr
from anyecg.families import FamilyClassifier, is_family_checkpoint
from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.baselines import build_baseline
from anyecg.models.contract import segments
from anyecg.pretrained import AnyECG, token_windows
from anyecg.signal.leads import CANONICAL_LEADS, canonical_leads
from anyecg.signal.recipe import preprocess
from anyecg.tasks.classification import (
    AnyECGClassifier,
    LabelledWindows,
    RecordLabels,
    SeedEnsemble,
    WithRRFeatures,
    class_counts,
    class_probabilities,
    collate_labelled,
    predict_records,
    record_labels,
    subsample_labels,
    user_classes,
    window_logits,
)
from anyecg.tasks.fit import FitConfig, fit
from anyecg.tasks.folders import (
    CONTRACT_KINDS,
    ENSEMBLE_FILE,
    load_finetuned_config,
    model_folder,
    seed_models,
    write_ensemble_file,
    write_summary,
)
from anyecg.tasks.labels import anomaly_label, arrhythmia_label
from anyecg.tasks.record_rr import RECORD_FEATURES, RRStandardizer, signal_rr_features, store_rr_features
from anyecg.training.checkpoint import CONFIG_FILE, load_state_dict_strict
from anyecg.training.loop import FINAL

LABEL_FUNCTIONS = {"classify": user_classes, "anomaly": anomaly_label, "arrhythmia": arrhythmia_label}
RR_CACHE = "rr_features.npz"


@dataclass
class FinetuneConfig:
    task: str = "classify"
    model: str | None = None  # AnyECG, ECG-FM or ECGFounder checkpoint folder; None: the shipped AnyECG
    baseline: str | None = None  # train this baseline preset instead (same loop, same splits)
    random_init: bool = False  # the encoder's architecture with random weights: a control
    linear_probe: bool = False
    seeds: int = 1
    label_fraction: float = 1.0
    max_epochs: int = 30
    patience: int = 6
    budget_minutes: float | None = None  # per seed
    steps: int | None = None  # cap on optimizer steps per seed (smoke runs); None: epochs decide
    batch_size: int = 32
    lr: float = 1e-3
    window_s: int = 10  # training crop and test-time tile, in seconds
    leads: dict[str, str] = field(default_factory=dict)  # store lead -> lead the model reads ({"unknown": "I"})
    val_fraction: float = 0.15  # share of train patients carved out when the store has no labelled val records
    min_class_count: int = 10  # classes with fewer training records are reported as rare
    augment: bool = True
    balanced: bool = True
    ema_epochs: float = 2.0  # validate and keep a moving average of the weights, over at most this many epochs (0: off)
    rr_features: bool = True  # join each record's RR-interval and beat-shape features to the network's before the head
    drop_path: float = 0.0  # AnyECG encoders: stochastic depth of the last block (0: off)


def _label_fn(task: str):
    if task not in LABEL_FUNCTIONS:
        raise ValueError(f"unknown task {task!r} for record classification; known: {sorted(LABEL_FUNCTIONS)}")
    return LABEL_FUNCTIONS[task]


def lead_mapping(pairs: list[str] | dict[str, str] | None) -> dict[str, str]:
    """{store lead: model lead} from `--leads`: `I` (the single unnamed lead is lead I) or `ECG=I`,
    `MLII=II`; names are canonicalised, so `ECG` means the unnamed lead `unknown`."""
    if isinstance(pairs, dict):
        return dict(pairs)
    mapping = {}
    for pair in pairs or []:
        source, _, target = pair.rpartition("=")
        source = canonical_leads([source])[0] if source else "unknown"
        target_name = canonical_leads([target])[0]
        if target_name == "unknown":
            raise ValueError(f"--leads {pair!r}: {target!r} is not a lead name; use one of {list(CANONICAL_LEADS[:-1])}")
        mapping[source] = target_name
    return mapping


def _single_lead(store: Store, rows: np.ndarray, lead_map: dict[str, str]) -> str | None:
    """The lead a single-lead model should read when every record of `rows` has one lead (the most
    common name after `lead_map`); None for multi-lead data."""
    manifest = store.manifest.iloc[rows]
    if len(rows) == 0 or (manifest["n_leads"] != 1).any():
        return None
    names = Counter(lead_map.get(split_list(v)[0], split_list(v)[0]) for v in manifest["leads"])
    return names.most_common(1)[0][0]


def _build(config: FinetuneConfig, n_classes: int, single_lead: str | None):
    """(model, input form, contract, rebuild recipe for config.json, pretrained encoder?), the
    network joined to the records' RR features when `config.rr_features`."""
    model, form, contract, spec, pretrained = _build_network(config, n_classes, single_lead)
    if config.rr_features:
        model = WithRRFeatures(model, len(RECORD_FEATURES), n_classes, feature_logits=True)
    return model, form, contract, spec, pretrained


def _build_network(config: FinetuneConfig, n_classes: int, single_lead: str | None):
    if config.baseline is not None:
        options = {"leads": (single_lead,)} if single_lead is not None else {}
        model = build_baseline(config.baseline, num_classes=n_classes, **options)
        spec = {"kind": "baseline", "preset": config.baseline, "config": asdict(model.config)}
        return model, "contract", model.config.contract, spec, False
    if is_family_checkpoint(config.model):  # a pretrained ECG-FM or ECGFounder run
        model = FamilyClassifier.from_pretrained(config.model, n_classes, linear_probe=config.linear_probe,
                                                 random_init=config.random_init)
        return model, "contract", model.config.contract, model.spec(config.random_init), not config.random_init
    pretrained = AnyECG.from_pretrained(config.model)
    if pretrained.backbone is None:
        raise ValueError(f"{config.model}: a tokenizer-only checkpoint; fine-tuning needs a stage-2 (pretrain) checkpoint")
    backbone = Backbone(pretrained.backbone.config) if config.random_init else pretrained.backbone
    backbone.set_drop_path(config.drop_path)
    model = AnyECGClassifier(backbone, n_classes, linear_probe=config.linear_probe)
    spec = {"kind": "anyecg", "backbone": asdict(backbone.config), "random_init": config.random_init}
    return model, "tokens", None, spec, not config.random_init


def _positions(labels: RecordLabels, rows: np.ndarray) -> np.ndarray:
    position = {row: k for k, row in enumerate(labels.records.tolist())}
    return np.array([position[r] for r in rows], dtype=np.int64)


def validation_rows(store: Store, labels: RecordLabels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, validation rows, where validation came from): the store's labelled `val` records,
    else a seeded `fraction` of the train patients (stratified by class, whole patients together)."""
    split_of = store.manifest["split"].to_numpy()
    train_rows = labels.records[split_of[labels.records] == "train"]
    val_rows = labels.records[split_of[labels.records] == "val"]
    if len(val_rows):
        return train_rows, val_rows, "the store's val split"
    patients = store.manifest["patient_id"].astype(str).to_numpy()[train_rows]
    names = [[labels.classes[k] for k in labels.class_indices(p)] for p in _positions(labels, train_rows)]
    carved = np.array(patient_split(list(patients), names, fractions=(1 - fraction, fraction, 0.0), seed=seed))
    if not (carved == "val").any() or not (carved == "train").any():
        raise ValueError(f"{store.root}: no labelled val records, and {len(train_rows)} train records are too few "
                         "to carve a validation set by patient; add a 'val' split to the labels CSV")
    return (train_rows[carved == "train"], train_rows[carved == "val"],
            f"{fraction:.0%} of the train patients (the store has no labelled val records)")


def _score(labels: RecordLabels, records: np.ndarray, probabilities: np.ndarray) -> float:
    """Model-selection score: macro F1 (multi-class), macro AUROC (multi-label: thresholds come later)."""
    truth = labels.targets[_positions(labels, records)]
    metrics = classification_metrics(truth, probabilities, labels.classes, multilabel=labels.multilabel)
    return metrics["auroc"] if labels.multilabel else metrics["f1_macro"]


def rare_classes(counts: dict[str, dict[str, int]], classes: list[str], min_count: int) -> dict[str, dict[str, int]]:
    """Classes with fewer than `min_count` train records or none in val/test, with their counts per split."""
    rare = {}
    for name in classes:
        per_split = {split: per_class.get(name, 0) for split, per_class in counts.items()}
        if per_split.get("train", 0) < min_count or any(per_split.get(s, 0) == 0 for s in ("val", "test")):
            rare[name] = per_split
    return rare


def finetune(data: str | Path, out: str | Path, config: FinetuneConfig) -> dict:
    store, out = Store(data), Path(out)
    labels = record_labels(store, _label_fn(config.task))
    if len(labels.classes) < 2:
        found = sorted({v for v in store.manifest["labels"].astype(str)})[:8]
        raise ValueError(f"{store.root}: task {config.task!r} needs two classes, found {labels.classes} "
                         f"(labels in the store: {found}); use --task classify to train on the store's own labels")
    lead_map = lead_mapping(config.leads)
    (out / ENSEMBLE_FILE).unlink(missing_ok=True)  # the run folder's model is this run's, until its ensemble is made
    train_rows, val_rows, val_source = validation_rows(store, labels, config.val_fraction)
    split_of = store.manifest["split"].to_numpy().astype(object)
    split_of[val_rows] = "val"
    test_rows = labels.records[store.manifest["split"].to_numpy()[labels.records] == "test"]
    if len(test_rows) == 0:
        raise ValueError(f"{store.root}: no labelled records in the test split; give some records split 'test' "
                         "in the labels CSV (or leave the split column out to have prepare split by patient)")
    counts = class_counts(labels, split_of)
    rare = rare_classes(counts, labels.classes, config.min_class_count)
    if rare:
        print(f"rare classes (records per split): {rare}", file=sys.stderr)
    single_lead = _single_lead(store, labels.records, lead_map)
    metric = "auroc" if labels.multilabel else "f1_macro"
    rr, standardizer = None, None
    if config.rr_features:
        raw = store_rr_features(store, labels.records, cache=out / RR_CACHE)
        standardizer = RRStandardizer.fit(np.stack([raw[row] for row in train_rows]))
        rr = {row: standardizer(features) for row, features in raw.items()}
    per_seed, fits = [], []
    for seed in range(config.seeds):
        run = out / f"seed-{seed}"
        torch.manual_seed(seed)  # the new head's (and a random-init encoder's) weights
        model, form, contract, spec, pretrained = _build(config, len(labels.classes), single_lead)
        rows = subsample_labels(labels, train_rows, config.label_fraction, seed)
        windows = dict(form=form, contract=contract, window_s=config.window_s, lead_map=lead_map, rr=rr)
        dataset = LabelledWindows(store, labels, rows, seed=seed, **windows)
        val_windows = LabelledWindows(store, labels, val_rows, random_crop=False, **windows)

        def validate(model, val_windows=val_windows) -> float:
            records, probabilities = predict_records(model, val_windows, len(labels.classes), multilabel=labels.multilabel)
            return _score(labels, records, probabilities)

        model_config = {"family": "finetuned", "task": config.task, "classes": labels.classes, "model": spec,
                        "multilabel": labels.multilabel, "leads_map": lead_map, "window_s": config.window_s,
                        "rr_features": standardizer.to_json() if standardizer is not None else None,
                        "feature_logits": standardizer is not None,
                        "finetune": asdict(config), "train_records": int(len(rows)), "val_records": int(len(val_rows))}
        fit_config = FitConfig(max_epochs=config.max_epochs, patience=config.patience, budget_minutes=config.budget_minutes,
                               max_steps=config.steps, batch_size=config.batch_size, lr=config.lr, seed=seed,
                               augment=config.augment, balanced=config.balanced, ema_epochs=config.ema_epochs)
        result = fit(model, dataset, collate_labelled, labels.targets[_positions(labels, rows)], validate, fit_config, run,
                     metric=metric, pretrained=pretrained and not config.linear_probe, fs=store.recipe.target_fs,
                     model_config=model_config, recipe_json=store.recipe.to_json())
        if labels.multilabel:  # per-class thresholds of the kept model, chosen on validation
            best, _ = load_finetuned(run / FINAL)
            records, probabilities = predict_records(best, val_windows, len(labels.classes), multilabel=True)
            thresholds = best_f1_thresholds(labels.targets[_positions(labels, records)], probabilities)
            path = run / FINAL / CONFIG_FILE
            path.write_text(json.dumps({**json.loads(path.read_text()), "thresholds": thresholds.tolist()}, indent=2,
                                       sort_keys=True))
        fits.append({"seed": seed, "kept_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     f"val_{metric}": result.best_score, "stopped": result.stop_reason})
        per_seed.append(evaluate(run / FINAL, data, "test", run / "test", rr_cache=out / RR_CACHE))
    ensemble = None
    if config.seeds > 1 and config.label_fraction == 1.0:  # below 100%, each seed saw other labels
        ensemble = write_ensemble(out, seed_models(out, config.seeds), store, labels, val_rows, metric)
        ensemble["test"] = evaluate(out, data, "test", out / "ensemble" / "test", rr_cache=out / RR_CACHE)
    summary = {
        "task": config.task, "classes": labels.classes, "multilabel": labels.multilabel,
        "unlabelled_records": labels.unlabelled, "class_counts": counts, "rare_classes": rare,
        "train_records": int(len(train_rows)), "val_records": int(len(val_rows)), "test_records": int(len(test_rows)),
        "seeds": config.seeds, "label_fraction": config.label_fraction,
        "rr_features": RECORD_FEATURES if config.rr_features else None,
        "model_selection": {"split": "val", "source": val_source, "metric": f"val {metric}", "per_seed": fits,
                            "test": "scored once per seed, after the model was chosen; never used for selection"},
        "metrics": mean_std_over_seeds(per_seed),
        "ensemble": ensemble,
    }
    write_summary(out, summary)
    return summary


def write_ensemble(out: Path, members: list[Path], store: Store, labels: RecordLabels, val_rows: np.ndarray,
                   metric: str) -> dict:
    """`out/ensemble.json` for the `members` model folders: them, the ensemble's validation score and,
    for a multi-label task, its per-class thresholds chosen on validation."""
    loaded = [_load_model(path) for path in members]
    model = SeedEnsemble([m for m, _ in loaded], labels.multilabel)
    windows = scoring_windows(model, loaded[0][1], store, labels, val_rows, rr_cache=out / RR_CACHE)
    records, probabilities = predict_records(model, windows, len(labels.classes), multilabel=labels.multilabel)
    facts = {f"val_{metric}": _score(labels, records, probabilities)}
    if labels.multilabel:
        facts["thresholds"] = best_f1_thresholds(labels.targets[_positions(labels, records)], probabilities).tolist()
    return write_ensemble_file(out, members, facts)


def load_finetuned(directory: str | Path):
    """(model, config) of a fine-tuned model folder or a finetune run folder (its seed ensemble when
    `finetune` wrote one, else its one model), strictly loaded; `config["recipe"]` is its Recipe."""
    directory = Path(directory)
    if (directory / ENSEMBLE_FILE).is_file():
        return SeedEnsemble.load(directory, _load_model)
    return _load_model(model_folder(directory))


def _load_model(directory: Path):
    config = load_finetuned_config(directory)
    spec, n_classes = config["model"], len(config["classes"])
    if spec["kind"] == "baseline":
        model = build_baseline(spec["preset"], **{**spec["config"], "num_classes": n_classes})
    elif spec["kind"] == "family":
        model = FamilyClassifier.from_spec(spec, n_classes)
    else:
        model = AnyECGClassifier(Backbone(BackboneConfig(**spec["backbone"])), n_classes)
    if config.get("rr_features"):  # a model fine-tuned before the shape features reads 16 of them, without the linear path
        model = WithRRFeatures(model, len(config["rr_features"]["features"]), n_classes,
                               feature_logits=bool(config.get("feature_logits")))
    load_state_dict_strict(model, directory)
    return model.eval(), config


def _standardizer(config: dict) -> RRStandardizer | None:
    return RRStandardizer.from_json(config["rr_features"]) if config.get("rr_features") else None


@torch.no_grad()
def predict_signal(model, config: dict, signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
    """float [K]: class probabilities of one raw recording (mV), averaged over its windows."""
    recipe = config["recipe"]
    lead_map = config.get("leads_map", {})
    names = [lead_map.get(name, name) for name in canonical_leads(list(leads))]
    standardizer = _standardizer(config)
    contract_kind = config["model"]["kind"] in CONTRACT_KINDS
    if contract_kind or standardizer is not None:
        clean = preprocess(np.asarray(signal, dtype=np.float32), fs, recipe)  # [L, T] at the recipe's rate
    if contract_kind:
        windows, lead_mask = segments(clean, recipe.target_fs, names, model.config.contract)  # [S, C, T], [C]
        batches = [{"x": torch.from_numpy(windows), "lead_mask": torch.from_numpy(lead_mask)[None].expand(len(windows), -1)}]
    else:
        batches = token_windows(signal, fs, names, recipe, config["window_s"])  # one window each
    if standardizer is not None:
        rr = torch.from_numpy(standardizer(signal_rr_features(clean, recipe.target_fs, names)))  # [F]
        for batch in batches:
            windows_in_batch = len(batch["x"]) if "x" in batch else len(batch["patches"])
            batch["rr"] = rr.expand(windows_in_batch, -1)  # [S, F]
    logits = torch.cat([window_logits(model, batch) for batch in batches])  # [S, K]
    return class_probabilities(logits, bool(config.get("multilabel"))).mean(dim=0).numpy()  # [K]


def scoring_windows(model, config: dict, store: Store, labels: RecordLabels, rows: np.ndarray, *,
                    rr_cache: Path | None = None) -> LabelledWindows:
    """Every window of `rows` (whole records, no crops) in the input form of a loaded fine-tuned
    model, with the records' standardized RR features when the model reads them."""
    form = "contract" if config["model"]["kind"] in CONTRACT_KINDS else "tokens"
    contract = model.config.contract if form == "contract" else None
    standardizer = _standardizer(config)
    rr = None
    if standardizer is not None:
        rr = {row: standardizer(f) for row, f in store_rr_features(store, rows, cache=rr_cache).items()}
    return LabelledWindows(store, labels, rows, form=form, contract=contract, window_s=config["window_s"],
                           random_crop=False, lead_map=config.get("leads_map", {}), rr=rr)


def evaluate(model_dir: str | Path, data: str | Path, split: str, out: str | Path, *, rr_cache: Path | None = None) -> dict:
    """Score a fine-tuned model (`load_finetuned`: a model folder, or a run folder's ensemble) on
    `split`: every record whole (its windows' probabilities averaged). `rr_cache`: where the records'
    RR features may already be (finetune's `out/rr_features.npz`)."""
    model, config = load_finetuned(model_dir)
    store, out = Store(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = record_labels(store, _label_fn(config["task"]))
    if labels.classes != config["classes"]:
        raise ValueError(f"{store.root}: classes {labels.classes} differ from the model's {config['classes']}")
    multilabel = bool(config.get("multilabel", False))
    if labels.multilabel != multilabel:
        raise ValueError(f"{store.root}: labels are {'multi' if labels.multilabel else 'single'}-label but the model "
                         f"{model_dir} is {'multi' if multilabel else 'single'}-label")
    rows = labels.records[store.manifest["split"].to_numpy()[labels.records] == split]
    if len(rows) == 0:
        raise ValueError(f"{store.root}: no labelled records in split {split!r}")
    windows = scoring_windows(model, config, store, labels, rows, rr_cache=rr_cache)
    records, probabilities = predict_records(model, windows, len(labels.classes), multilabel=multilabel)
    truth = labels.targets[_positions(labels, records)]
    classes = labels.classes
    predictions = pd.DataFrame({"record_id": store.manifest["record_id"].to_numpy()[records]})
    if multilabel:
        thresholds = np.asarray(config.get("thresholds", [0.5] * len(classes)), dtype=np.float64)
        metrics = classification_metrics(truth, probabilities, classes, multilabel=True, threshold=thresholds)
        predicted = probabilities >= thresholds  # [R, K]
        predictions["label"] = [";".join(np.array(classes)[t > 0]) for t in truth]
        predictions["predicted"] = [";".join(np.array(classes)[p]) for p in predicted]
    else:
        positive = "normal" if config["task"] == "anomaly" and "normal" in classes else None
        metrics = classification_metrics(np.array(classes)[truth], probabilities, classes, positive=positive)
        predictions["label"] = np.array(classes)[truth]
        predictions["predicted"] = np.array(classes)[probabilities.argmax(1)]
    metrics["split"] = split
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    for k, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, k]
    predictions.to_csv(out / "predictions.csv", index=False)
    if not multilabel:
        plot_roc_pr(np.array(classes)[truth], probabilities, classes, out / "roc_pr.png")
        plot_confusion(predictions["label"].to_numpy(), predictions["predicted"].to_numpy(), classes, out / "confusion.png")
    return metrics
