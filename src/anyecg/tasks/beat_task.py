"""MIT-BIH inter-patient beat classification (AAMI N, S, V, F; de Chazal et al. 2004).

Train on the DS1 records present in the store, test on the DS2 records (`anyecg.tasks.beats`):
no patient is in both. A fifth of the DS1 patients (stratified by their rarest beat class) is held
out as the validation split that picks the epoch kept (`anyecg.tasks.fit`: epochs of
`epoch_beats` beats drawn from the training beats, early stopping, resumable); DS2 is scored once,
by the kept model. Every beat is one example: a `window_s` window of all the record's leads with
the R peak in the middle, plus (`rr_features`, default on) the beat's RR-interval features
(`beats.rr_features`: pre / post / local / record RR and their ratios) and (`template_features`,
default on) its shape against its record's median beat (`beats.template_features`: correlation and
size ratios) joined to the network's features before the head. Beats of class Q (paced, fusion of
paced, unclassifiable) are left out of training and scoring, as in de Chazal et al. and the AAMI
EC57 inter-patient protocol; their count is reported. Class imbalance (N is about 90% of DS1) is handled by class-weighted
cross-entropy, each class weighted by `(n_beats / (n_classes * n_class)) ** class_weight_power`
over the training beats (0.5 by default: in a one-seed pilot of `xresnet1d-tiny` it gave a better
validation macro F1 than full inverse-frequency weights, 0.757 against 0.741).

Models:
- `anyecg`: the window's 1-second patches (3 tokens per lead for 3 s) through the pretrained
  backbone; the contextual tokens of the patch that holds the R peak are averaged over leads
  (`linear_probe` freezes the backbone);
- a baseline preset (`anyecg.models.baselines`, e.g. "xresnet1d-tiny" or "inception1d") on the
  same window through its `SignalContract(fs=300, window_s=window_s, leads=baseline_leads)`;
- a pretrained ECG-FM or ECGFounder run (`model` names its folder): the window converted to the
  family's rate and leads and zero-padded to its input length, pooled features.
The head is linear on the network's features, or with the beat's features a two-layer MLP on both
(so that "premature" and "wide QRS" can combine).

`max_beats_per_record` keeps a seeded random subset of each record's beats (CPU runs); it is
stored in the checkpoint and in every metrics file, since results on a subset are not the
benchmark's.

A fine-tuned folder is `model.safetensors` + `config.json` (family "finetuned", task "beats",
classes, class weights, validation records, how to rebuild the network) + `recipe.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch import Tensor, nn
from torch.utils.data import Dataset

from anyecg.data.splits import patient_split
from anyecg.data.store import Store
from anyecg.evaluation.metrics import beat_metrics, mean_std_over_seeds, to_jsonable
from anyecg.evaluation.plots import plot_confusion
from anyecg.families import FamilyClassifier, is_family_checkpoint
from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.baselines import build_baseline
from anyecg.models.contract import SignalContract, to_model_input
from anyecg.pretrained import AnyECG
from anyecg.signal.leads import lead_ids
from anyecg.signal.patching import patchify
from anyecg.tasks.beats import (
    RR_FEATURES,
    TEMPLATE_FEATURES,
    beat_samples,
    beat_windows,
    inter_patient_split,
    rr_features,
    template_features,
)
from anyecg.tasks.classification import AnyECGClassifier, SeedEnsemble, WithRRFeatures
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
from anyecg.training.checkpoint import load_state_dict_strict
from anyecg.training.loop import FINAL

TASK = "beats"
CLASSES = ["N", "S", "V", "F"]  # AAMI classes scored; Q is excluded


@dataclass
class BeatConfig:
    model: str | None = None  # AnyECG, ECG-FM or ECGFounder checkpoint folder; None: the shipped AnyECG
    baseline: str | None = None  # train this baseline preset instead (same beats, same loss)
    baseline_leads: tuple[str, ...] = ("II",)  # the baseline's input leads (MIT-BIH: MLII -> II)
    random_init: bool = False  # AnyECG encoder with random weights, same head: a control
    linear_probe: bool = False
    rr_features: bool = True  # join each beat's RR-interval features to the network's before the head
    template_features: bool = True  # and its shape against the record's median beat (docs/results.md, section 5)
    seeds: int = 5
    max_epochs: int = 30
    patience: int = 5  # epochs without a better validation macro F1 before stopping
    epoch_beats: int = 16384  # training beats drawn per epoch (DS1 has ~51,000)
    budget_minutes: float | None = None  # per seed
    max_steps: int | None = None  # cap on optimizer steps (smoke runs)
    batch_size: int = 32  # the CLI's default too
    lr: float = 1e-3
    ema_epochs: float = 0.0  # a moving average of the weights lowered DS2 accuracy here (docs/results.md, section 5)
    class_weight_power: float = 0.5  # 1: full inverse-frequency class weights, 0: none
    val_fraction: float = 0.2  # share of the DS1 patients held out for validation
    window_s: int = 3  # whole seconds, so the window is whole 1-s patches with the beat in the middle one
    max_beats_per_record: int | None = None  # None: every beat (the benchmark)

    def __post_init__(self):
        self.baseline_leads = tuple(self.baseline_leads)  # a JSON round trip gives a list


# ---------------------------------------------------------------------------------------- beats


@dataclass
class Beat:
    record: int  # manifest row
    start: int  # window in samples at the store's rate
    stop: int
    peak: int  # R-peak sample
    label: str  # AAMI class
    rr: np.ndarray  # float32 [len(RR_FEATURES)]
    template: np.ndarray  # float32 [len(TEMPLATE_FEATURES)]


FEATURE_GROUPS: dict[str, list[str]] = {"rr": RR_FEATURES, "template": TEMPLATE_FEATURES}


def feature_groups(rr: bool, template: bool) -> tuple[str, ...]:
    """The beat feature groups joined to the network's features, in `FEATURE_GROUPS` order."""
    return tuple(name for name, on in (("rr", rr), ("template", template)) if on)


def saved_feature_groups(config: dict) -> tuple[str, ...]:
    """The feature groups a saved beat model reads (one saved before the template features: RR or none)."""
    if "features" in config:
        return tuple(config["features"])
    return ("rr",) if config.get("rr_features") else ()


def record_beats(store: Store, row: int, window_s: float, max_beats: int | None = None, seed: int = 0) -> tuple[list[Beat], int]:
    """(the N/S/V/F beats of one stored record with their windows, RR and template features, number of
    Q beats left out).

    RR intervals and the median beat run over every annotated beat, Q beats included. With
    `max_beats`, a random subset of that many beats (drawn from the seeded generator of `(seed, row)`,
    kept in time order) is returned instead.
    """
    windows = beat_windows(store, row, window_s=window_s)
    peaks = beat_samples(store, row)  # same beats, same order as the windows
    peak_samples, fs = np.array([peak for peak, _ in peaks], dtype=np.int64), float(store.recipe.target_fs)
    rr = rr_features(peak_samples, fs)  # [n, R]
    template = template_features(store.signal(row), peak_samples, fs)  # [n, M]
    beats = [Beat(row, w.start, w.stop, peak, w.label, rr[i], template[i])
             for i, (w, (peak, _)) in enumerate(zip(windows, peaks)) if w.label in CLASSES]
    excluded_q = sum(w.label == "Q" for w in windows)
    if max_beats is not None and len(beats) > max_beats:
        keep = np.sort(np.random.default_rng([seed, row]).choice(len(beats), size=max_beats, replace=False))
        beats = [beats[i] for i in keep]
    return beats, excluded_q


def split_rows(store: Store, val_fraction: float = 0.2) -> dict[str, list[int]]:
    """{"train", "val": manifest rows of DS1 records, "test": rows of DS2 records}, in DS order.

    Validation takes about `val_fraction` of the DS1 patients (`patient_split`, stratified by each
    record's rarest beat class with at least 10 beats, seed 0; at least one patient when DS1 holds
    two), so it holds S and V beats of people the model never trained on -- the inter-patient
    question the benchmark asks.
    """
    ids = store.manifest["record_id"].astype(str).tolist()
    row_of = {record_id: row for row, record_id in enumerate(ids)}
    split = inter_patient_split(ids)
    ds1 = [row_of[r] for r in split["train"]]
    val: set[int] = set()
    if val_fraction > 0 and len(ds1) > 1:
        patients = [str(store.manifest.iloc[row]["patient_id"]) for row in ds1]
        classes = []
        for row in ds1:
            counts = Counter(label for _, label in beat_samples(store, row))
            classes.append([c for c in CLASSES if counts[c] >= 10])
        assigned = patient_split(patients, classes, fractions=(1 - val_fraction, val_fraction, 0.0), seed=0)
        if "val" not in assigned and len(set(patients)) > 1:  # too few patients to deal one: the last one
            assigned = ["val" if patient == patients[-1] else "train" for patient in patients]
        val = {row for row, name in zip(ds1, assigned) if name == "val"}
    return {"train": [r for r in ds1 if r not in val], "val": [r for r in ds1 if r in val],
            "test": [row_of[r] for r in split["test"]]}


def split_beats(store: Store, split: str, window_s: float, max_beats: int | None, seed: int,
                val_fraction: float = 0.2) -> tuple[list[Beat], int]:
    rows = split_rows(store, val_fraction)[split]
    if not rows:
        where = {"train": "DS1", "val": "held-out DS1 (needs two DS1 patients)", "test": "DS2"}[split]
        raise ValueError(f"{store.root}: no MIT-BIH {where} records for split {split!r}")
    beats, excluded_q = [], 0
    for row in rows:
        found, q = record_beats(store, row, window_s, max_beats, seed)
        beats.extend(found)
        excluded_q += q
    return beats, excluded_q


def class_weights(labels: list[str], power: float = 1.0) -> np.ndarray:
    """float32 [K]: (n / (K * n_k)) ** power per class (0 for a class without beats)."""
    counts = np.array([labels.count(c) for c in CLASSES], dtype=np.float64)
    weights = np.divide(len(labels), len(CLASSES) * counts, out=np.zeros_like(counts), where=counts > 0)
    return np.where(counts > 0, weights ** power, 0.0).astype(np.float32)


class BeatWindows(Dataset):
    """One item per beat: `tokens` form (patches, lead ids, the peak's patch index) for AnyECG, or
    `contract` form (`x [C, T]`, lead_mask) for a baseline; both with the beat's feature groups
    `features` (of `FEATURE_GROUPS`) joined as `rr`, the slot `WithRRFeatures` reads."""

    def __init__(self, store: Store, beats: list[Beat], *, form: str = "tokens", contract: SignalContract | None = None,
                 features: tuple[str, ...] = ("rr", "template")):
        if form not in ("tokens", "contract"):
            raise ValueError(f"form must be 'tokens' or 'contract', got {form!r}")
        if form == "contract" and contract is None:
            raise ValueError("form 'contract' needs the model's SignalContract")
        unknown = set(features) - set(FEATURE_GROUPS)
        if unknown:
            raise ValueError(f"unknown beat feature groups {sorted(unknown)}; known: {list(FEATURE_GROUPS)}")
        self.store, self.beats, self.form, self.contract, self.features = store, beats, form, contract, tuple(features)
        self.patch_size = store.recipe.patch_size

    def __len__(self) -> int:
        return len(self.beats)

    def __getitem__(self, index: int) -> dict:
        beat = self.beats[index]
        signal = self.store.signal(beat.record, start=beat.start, stop=beat.stop)  # [L, T]
        leads = self.store.leads(beat.record)
        joined = np.concatenate([getattr(beat, group) for group in self.features] or [np.zeros(0, np.float32)])  # [F]
        item = {"target": CLASSES.index(beat.label), "index": index, "rr": torch.from_numpy(joined)}
        if self.form == "tokens":
            patches, _ = patchify(signal, self.patch_size)  # [L, P, S]
            item.update(patches=torch.from_numpy(patches), lead_ids=torch.from_numpy(lead_ids(leads)),
                        peak_patch=(beat.peak - beat.start) // self.patch_size)
        else:
            x, lead_mask = to_model_input(signal, self.store.recipe.target_fs, leads, self.contract)
            item.update(x=torch.from_numpy(x), lead_mask=torch.from_numpy(lead_mask))
        return item


def collate_beats(items: list[dict]) -> dict[str, Tensor]:
    """Stack beat items; token items are padded to the batch's largest lead count (pad_mask True = padding)."""
    batch = {"targets": torch.tensor([item["target"] for item in items], dtype=torch.long),
             "index": torch.tensor([item["index"] for item in items], dtype=torch.long),
             "rr": torch.stack([item["rr"] for item in items])}  # [B, R]
    if "x" in items[0]:
        batch.update(x=torch.stack([item["x"] for item in items]), lead_mask=torch.stack([item["lead_mask"] for item in items]))
        return batch
    n_leads = max(item["patches"].shape[0] for item in items)
    B, (_, P, S) = len(items), items[0]["patches"].shape
    patches = torch.zeros(B, n_leads, P, S)
    ids = torch.zeros(B, n_leads, dtype=torch.long)
    pad_mask = torch.ones(B, n_leads, P, dtype=torch.bool)
    for b, item in enumerate(items):
        L = item["patches"].shape[0]
        patches[b, :L], ids[b, :L], pad_mask[b, :L] = item["patches"], item["lead_ids"], False
    batch.update(patches=patches, lead_ids=ids, pad_mask=pad_mask,
                 peak_patch=torch.tensor([item["peak_patch"] for item in items], dtype=torch.long))
    return batch


# ---------------------------------------------------------------------------------------- models


class AnyECGBeatClassifier(AnyECGClassifier):
    """Backbone tokens of the patch holding the R peak, averaged over the real leads.

    The other patches of the window still shape those tokens through attention (rhythm context:
    the previous and next beats). `linear_probe=True` freezes the backbone and keeps it in eval mode.
    """

    def forward_features(self, batch: dict) -> Tensor:
        patches, pad_mask = batch["patches"], batch["pad_mask"]  # [B, L, P, S], [B, L, P]
        B, L, P, _ = patches.shape
        tokens = self.backbone.forward_features(patches, batch["lead_ids"], pad_mask).reshape(B, L, P, -1)  # [B, L, P, D]
        rows = torch.arange(B, device=patches.device)
        at_peak = tokens[rows, :, batch["peak_patch"]]  # [B, L, D]
        real = (~pad_mask[rows, :, batch["peak_patch"]]).to(at_peak.dtype)[..., None]  # [B, L, 1]
        return (at_peak * real).sum(1) / real.sum(1).clamp(min=1)  # [B, D]


def _with_head(net: nn.Module, features: tuple[str, ...]) -> WithRRFeatures:
    """The beat network with its head: a two-layer head on the network's and the beat's features, or a linear one."""
    return WithRRFeatures(net, sum(len(FEATURE_GROUPS[group]) for group in features), len(CLASSES))


def _build(config: BeatConfig) -> tuple[WithRRFeatures, str, SignalContract | None, dict]:
    """(model, input form, contract, rebuild spec for config.json)."""
    features = feature_groups(config.rr_features, config.template_features)
    if config.baseline is not None:
        net = build_baseline(config.baseline, num_classes=len(CLASSES), fs=300.0, window_s=float(config.window_s),
                             leads=config.baseline_leads)
        spec = {"kind": "baseline", "preset": config.baseline, "config": asdict(net.config)}
        return _with_head(net, features), "contract", net.config.contract, spec
    if is_family_checkpoint(config.model):  # ECG-FM / ECGFounder: the beat window padded to their input length
        net = FamilyClassifier.from_pretrained(config.model, len(CLASSES), linear_probe=config.linear_probe,
                                               random_init=config.random_init)
        spec = net.spec(config.random_init)
        return _with_head(net, features), "contract", net.config.contract, spec
    pretrained = AnyECG.from_pretrained(config.model)
    if pretrained.backbone is None:
        raise ValueError(f"{config.model}: a tokenizer-only checkpoint; beat classification needs a stage-2 (pretrain) checkpoint")
    backbone = Backbone(pretrained.backbone.config) if config.random_init else pretrained.backbone
    net = AnyECGBeatClassifier(backbone, len(CLASSES), linear_probe=config.linear_probe)
    spec = {"kind": "anyecg", "backbone": asdict(backbone.config), "random_init": config.random_init}
    return _with_head(net, features), "tokens", None, spec


# ---------------------------------------------------------------------------------------- finetune / evaluate


def frequent_classes_f1(truth: np.ndarray, predicted: np.ndarray, min_beats: int = 20) -> float:
    """Macro F1 of class indices over the classes with at least `min_beats` beats in `truth` (all
    present ones if none has): a class with a handful of validation beats (F usually) would make the
    choice noise."""
    counts = np.bincount(truth, minlength=len(CLASSES))
    scored = np.flatnonzero(counts >= min_beats) if (counts >= min_beats).any() else np.flatnonzero(counts)
    return float(f1_score(truth, predicted, labels=scored, average="macro"))


def validation_f1(model: WithRRFeatures | SeedEnsemble, dataset: BeatWindows, min_beats: int = 20) -> float:
    """`frequent_classes_f1` of the model's predictions on the beats of `dataset`."""
    truth = np.array([CLASSES.index(b.label) for b in dataset.beats])
    return frequent_classes_f1(truth, predict_beats(model, dataset).argmax(1), min_beats)


def finetune_beats(data: str | Path, out: str | Path, config: BeatConfig) -> dict:
    """For each seed: train on the DS1 training beats by epochs, keep the epoch with the best macro F1
    (`validation_f1`) on the held-out DS1 patients, evaluate it on the DS2 beats. `out/seed-K/final/` holds each model,
    `out/seed-K/fit.json` which epoch was kept and why training stopped, `out/seed-K/test/` its
    evaluation, `out/summary.json` the mean +/- std over seeds. A run of several seeds is also one
    model, the seeds' ensemble (`out/ensemble.json`: their probabilities averaged), scored on DS2
    once, in `out/ensemble/test`. Rerunning resumes an interrupted run."""
    store, out = Store(data), Path(out)
    (out / ENSEMBLE_FILE).unlink(missing_ok=True)  # the run folder's model is this run's, until its ensemble is made
    rows = split_rows(store, config.val_fraction)
    record_ids = {split: [store.record_id(row) for row in split_of] for split, split_of in rows.items()}
    val_beats, _ = split_beats(store, "val", config.window_s, config.max_beats_per_record, 0, config.val_fraction)
    features = feature_groups(config.rr_features, config.template_features)
    per_seed, fits = [], []
    for seed in range(config.seeds):
        beats, excluded_q = split_beats(store, "train", config.window_s, config.max_beats_per_record, seed, config.val_fraction)
        labels = [b.label for b in beats]
        weights = class_weights(labels, config.class_weight_power)
        model, form, contract, spec = _build(config)
        dataset = BeatWindows(store, beats, form=form, contract=contract, features=features)
        val_dataset = BeatWindows(store, val_beats, form=form, contract=contract, features=features)
        fit_config = FitConfig(max_epochs=config.max_epochs, patience=config.patience, budget_minutes=config.budget_minutes,
                               max_steps=config.max_steps, batch_size=config.batch_size, lr=config.lr, seed=seed,
                               balanced=False, epoch_items=config.epoch_beats, ema_epochs=config.ema_epochs)
        model_config = {
            "family": "finetuned", "task": TASK, "classes": CLASSES, "model": spec, "window_s": config.window_s,
            "rr_features": config.rr_features, "features": list(features), "class_weights": weights.tolist(),
            "finetune": asdict(config),
            "train_beats": {c: labels.count(c) for c in CLASSES}, "train_excluded_q": excluded_q,
            "val_records": record_ids["val"],
        }
        run = out / f"seed-{seed}"
        pretrained = spec["kind"] != "baseline" and not config.random_init and not config.linear_probe
        result = fit(model, dataset, collate_beats, np.array([CLASSES.index(c) for c in labels]),
                     lambda m: validation_f1(m, val_dataset), fit_config, run, metric="f1_macro", pretrained=pretrained,
                     fs=store.recipe.target_fs, model_config=model_config, recipe_json=store.recipe.to_json(),
                     class_weights=torch.as_tensor(weights, dtype=torch.float32))
        fits.append({"seed": seed, "kept_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     "val_f1_macro": result.best_score, "stopped": result.stop_reason})
        per_seed.append(evaluate_beats(run / FINAL, data, run / "test"))
    ensemble = None
    if config.seeds > 1:
        members = seed_models(out, config.seeds)
        model = SeedEnsemble([load_beat_model(path)[0] for path in members], multilabel=False)
        val_f1 = validation_f1(model, val_dataset)  # the same validation windows for every seed
        ensemble = write_ensemble_file(out, members, {"val_f1_macro": val_f1})
        ensemble["test"] = evaluate_beats(out, data, out / "ensemble" / "test")
    summary = {
        "task": TASK, "classes": CLASSES, "seeds": config.seeds, "excluded": "Q beats (paced, fusion of paced, unclassifiable)",
        "class_imbalance": f"weighted cross-entropy, (n / (K * n_k)) ** {config.class_weight_power:g}",
        "rr_features": RR_FEATURES if config.rr_features else None,
        "template_features": TEMPLATE_FEATURES if config.template_features else None,
        "max_beats_per_record": config.max_beats_per_record,
        "model_selection": "epoch with the best macro F1 (classes with >= 20 beats) on the validation records "
                           "(held-out DS1 patients); test (DS2) scored once, by that model",
        "train_records": record_ids["train"], "val_records": record_ids["val"], "test_records": record_ids["test"],
        "fits": fits, "metrics": mean_std_over_seeds(per_seed), "ensemble": ensemble,
    }
    write_summary(out, summary)
    return summary


def load_beat_model(directory: str | Path) -> tuple[WithRRFeatures | SeedEnsemble, dict]:
    """(model, config) of a fine-tuned beat model folder or a finetune run folder (its seed ensemble
    when `finetune_beats` wrote one, else its first seed's model), strictly loaded; `config["recipe"]`
    is its Recipe."""
    directory = Path(directory)
    if (directory / ENSEMBLE_FILE).is_file():
        return SeedEnsemble.load(directory, load_beat_model)
    directory = model_folder(directory)
    config = load_finetuned_config(directory, (TASK,))
    spec = config["model"]
    if spec["kind"] == "baseline":
        net = build_baseline(spec["preset"], **spec["config"])
    elif spec["kind"] == "family":
        net = FamilyClassifier.from_spec(spec, len(config["classes"]))
    else:
        net = AnyECGBeatClassifier(Backbone(BackboneConfig(**spec["backbone"])), len(config["classes"]))
    model = _with_head(net, saved_feature_groups(config))
    load_state_dict_strict(model, directory)
    return model.eval(), config


@torch.no_grad()
def predict_beats(model: WithRRFeatures | SeedEnsemble, dataset: BeatWindows, batch_size: int = 256) -> np.ndarray:
    """float [N, K] class probabilities of every beat of `dataset`, in order."""
    model.eval()
    parts = []
    for start in range(0, len(dataset), batch_size):
        batch = collate_beats([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        parts.append(torch.softmax(model.logits(batch).float(), dim=-1))
    return torch.cat(parts).numpy() if parts else np.zeros((0, len(CLASSES)))
def evaluate_beats(model_dir: str | Path, data: str | Path, out: str | Path, *, split: str = "test",
                   max_beats_per_record: int | None = -1) -> dict:
    """Score a fine-tuned beat model on the DS2 (split "test") or DS1 ("train", "val": the model's
    training and validation patients) beats of a store:
    `out/metrics.json` (`beat_metrics` + what was scored), `out/predictions.csv`, `out/confusion.png`.

    `max_beats_per_record=-1` (default) uses the subset size the model was fine-tuned with (seed 0
    draws, so every evaluation scores the same beats); None scores every beat.
    """
    model, config = load_beat_model(model_dir)
    store, out = Store(data), Path(out)
    recipe = config["recipe"]
    if (store.recipe.target_fs, store.recipe.patch_size) != (recipe.target_fs, recipe.patch_size):
        raise ValueError(f"{store.root}: store rate {store.recipe.target_fs} Hz / patch {store.recipe.patch_size} differs "
                         f"from the model's {recipe.target_fs} Hz / patch {recipe.patch_size}")
    limit = config["finetune"]["max_beats_per_record"] if max_beats_per_record == -1 else max_beats_per_record
    beats, excluded_q = split_beats(store, split, config["window_s"], limit, seed=0,
                                    val_fraction=config["finetune"].get("val_fraction", 0.2))
    features = saved_feature_groups(config)
    if config["model"]["kind"] in CONTRACT_KINDS:
        dataset = BeatWindows(store, beats, form="contract", contract=model.config.contract, features=features)
    else:
        dataset = BeatWindows(store, beats, form="tokens", features=features)
    probabilities = predict_beats(model, dataset)  # [N, K]
    classes = config["classes"]
    y_true = [b.label for b in beats]
    y_pred = [classes[k] for k in probabilities.argmax(1)]
    metrics = beat_metrics(y_true, y_pred, classes)
    metrics.update(excluded_q_beats=excluded_q, max_beats_per_record=limit, split=split,
                   records=sorted({store.record_id(b.record) for b in beats}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    predictions = pd.DataFrame({"record_id": [store.record_id(b.record) for b in beats], "peak": [b.peak for b in beats],
                                "label": y_true, "predicted": y_pred})
    for k, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, k]
    predictions.to_csv(out / "predictions.csv", index=False)
    plot_confusion(y_true, y_pred, classes, out / "confusion.png", title=f"AAMI beats, {split} ({len(beats)} beats)")
    return metrics
