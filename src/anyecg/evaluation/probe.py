"""Linear probe of frozen embeddings: how much a pretrained representation knows about a labelled task.

    features = store_embeddings(AnyECG.from_pretrained(), store)          # [records, D], one per record
    result = linear_probe(features, targets, splits, label_fraction=0.1, seed=0)

One logistic regression per class (one-vs-rest) on standardised features, its inverse regularisation
C chosen by macro AUROC on the validation split, scored once on the test split. `label_fraction`
keeps that share of the training patients (at least one record per class when the split has one),
so 1% / 10% / 100% label-efficiency curves reuse the same cached features.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from anyecg.data.dataset import StoreWindows
from anyecg.data.store import Store, split_list
from anyecg.evaluation.tokenizer_report import window_batches
from anyecg.models.backbone import Backbone
from anyecg.models.tokenizer import Tokenizer
from anyecg.pretrained import AnyECG

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def store_targets(store: Store) -> tuple[list[str], np.ndarray]:
    """The store's classes (sorted) and every record's 0/1 targets [records, classes], from its
    `;`-separated labels."""
    labels = [split_list(value) for value in store.manifest["labels"]]
    classes = sorted({label for record in labels for label in record})
    return classes, np.array([[c in record for c in classes] for record in labels], dtype=int)


def random_init_like(model: AnyECG, seed: int) -> AnyECG:
    """The same architecture, recipe and window with fresh weights: the control a probe compares against."""
    torch.manual_seed(seed)
    backbone = Backbone(model.backbone.config) if model.backbone is not None else None
    return AnyECG(Tokenizer(model.tokenizer.config), backbone, model.recipe, model.preset, model.window_s)


@torch.no_grad()
def store_embeddings(model: AnyECG, store: Store, window_s: int = 10) -> np.ndarray:
    """Mean backbone embedding (tokenizer encoder output for a stage-1 checkpoint) of every store
    record over its consecutive `window_s` windows: float32 [records, D] in manifest order."""
    windows = StoreWindows(store, None, random_crop=False, max_window_s=window_s)
    sums, counts = None, np.zeros(len(store.manifest))
    device = next(model.tokenizer.parameters()).device
    for batch in window_batches(windows):
        patches, lead_ids, pad = (batch[key].to(device) for key in ("patches", "lead_ids", "pad_mask"))
        if model.backbone is not None:
            pooled = model.backbone.embed(patches, lead_ids, pad)  # [B, D]
        else:
            tokens = model.tokenizer.encode_continuous(patches, lead_ids, pad)  # [B, N, d_c]
            valid = (~pad.flatten(1)).to(tokens.dtype)[..., None]  # [B, N, 1]
            pooled = (tokens * valid).sum(1) / valid.sum(1).clamp(min=1)
        if sums is None:
            sums = np.zeros((len(store.manifest), pooled.shape[-1]))
        np.add.at(sums, batch["record"].numpy(), pooled.double().cpu().numpy())
        np.add.at(counts, batch["record"].numpy(), 1)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def subsample_patients(patients: np.ndarray, targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of the records of a random `fraction` of the patients (at least one), topped up with the
    patient of one record of each class the draw missed, so every class present can be fitted."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    unique = np.unique(patients)
    chosen = rng.choice(unique, max(1, round(fraction * len(unique))), replace=False)
    keep = np.isin(patients, chosen)
    for cls in range(targets.shape[1]):
        if targets[:, cls].any() and not targets[keep, cls].any():
            keep |= patients == patients[rng.choice(np.flatnonzero(targets[:, cls]))]
    return np.flatnonzero(keep)


def _fit(x: np.ndarray, y: np.ndarray, C: float, seed: int) -> list[LogisticRegression | float]:
    models = []
    for cls in range(y.shape[1]):
        if y[:, cls].min() == y[:, cls].max():
            models.append(float(y[0, cls]))  # one value in train: predict it
            continue
        models.append(LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x, y[:, cls]))
    return models


def _scores(models: list, x: np.ndarray) -> np.ndarray:
    return np.stack([m.predict_proba(x)[:, 1] if isinstance(m, LogisticRegression) else np.full(len(x), m)
                     for m in models], axis=1)  # [n, classes]


def _macro_auroc(y: np.ndarray, scores: np.ndarray) -> tuple[float, list[float]]:
    per_class = [float(roc_auc_score(y[:, c], scores[:, c])) if 0 < y[:, c].sum() < len(y) else float("nan")
                 for c in range(y.shape[1])]
    return float(np.nanmean(per_class)), per_class


def linear_probe(features: np.ndarray, targets: np.ndarray, splits: np.ndarray, patients: np.ndarray, *,
                 label_fraction: float = 1.0, seed: int = 0) -> dict:
    """features [n, D], targets [n, classes] 0/1, splits [n] of 'train'/'val'/'test', patients [n].

    Returns the chosen C, validation and test macro AUROC, per-class test AUROC and the number of
    training records used."""
    split = {name: np.flatnonzero(splits == name) for name in ("train", "val", "test")}
    for name, rows in split.items():
        if len(rows) == 0:
            raise ValueError(f"linear probe needs records in the {name!r} split")
    train = split["train"][subsample_patients(patients[split["train"]], targets[split["train"]], label_fraction, seed)]
    scaler = StandardScaler().fit(features[train])
    x = {name: scaler.transform(features[rows]) for name, rows in (("train", train), ("val", split["val"]),
                                                                   ("test", split["test"]))}
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes at the weakest regularisation
        for C in C_GRID:
            models = _fit(x["train"], targets[train], C, seed)
            val_auroc, _ = _macro_auroc(targets[split["val"]], _scores(models, x["val"]))
            if best is None or val_auroc > best[0]:
                best = (val_auroc, C, models)
    val_auroc, C, models = best
    test_auroc, per_class = _macro_auroc(targets[split["test"]], _scores(models, x["test"]))
    return {"C": C, "val_macro_auroc": val_auroc, "test_macro_auroc": test_auroc, "test_auroc_per_class": per_class,
            "train_records": int(len(train)), "label_fraction": label_fraction, "seed": seed}
