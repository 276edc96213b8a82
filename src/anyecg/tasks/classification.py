"""Record-level classification (the store's own classes, anomaly, arrhythmia): data, the AnyECG
classifier, whole-record prediction.

A record's classes come from its manifest labels through a labelling function: one class per record
(multi-class), or several for some record (multi-label). Training draws one random window per record
per epoch; evaluation tiles every record into windows and averages the windows' class probabilities
into one prediction per record, whatever its length.

Two input forms, one per kind of model:
- `tokens`: AnyECG's (lead, second) patch grid (any leads, any rate already handled by the store);
- `contract`: `x [C, T]` in the fixed lead slots, rate and window of a CNN-style model (baselines,
  ECGFounder, ECG-FM), see `anyecg.models.contract`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from anyecg.data.dataset import StoreWindows, collate_windows
from anyecg.data.store import Store, split_list
from anyecg.models.backbone import Backbone
from anyecg.models.baselines.common import classification_loss
from anyecg.models.contract import SignalContract, fit_window, to_model_input
from anyecg.signal.leads import lead_ids
from anyecg.tasks.folders import ENSEMBLE_FILE


@dataclass
class RecordLabels:
    """Each labelled record's target, the class names, and the records left out and why.

    Multi-class: `targets` int [n], one class index per record. Multi-label (some record has several
    classes): `targets` float [n, K], 1 where the record has the class.
    """

    records: np.ndarray  # int [n]: rows of the store manifest
    targets: np.ndarray  # int [n] (multi-class) or float32 [n, K] (multi-label)
    classes: list[str]
    unlabelled: int  # records the labelling function gave no class
    multilabel: bool = False

    def class_indices(self, position: int) -> list[int]:
        """The class indices of the `position`-th labelled record."""
        target = self.targets[position]
        return np.flatnonzero(target).tolist() if self.multilabel else [int(target)]


def user_classes(labels: list[str]) -> list[str] | None:
    """The `classify` task: the store's labels exactly as given (';'-separated); None without any."""
    names = [str(label).strip() for label in labels if str(label).strip()]
    return sorted(set(names)) or None


def record_labels(store: Store, label_fn: Callable[[list[str]], str | list[str] | None]) -> RecordLabels:
    """Apply `label_fn` (one class, a list of classes, or None) to every record of the store.

    The task is multi-label as soon as one record has several classes; otherwise multi-class.
    """
    names = []
    for value in store.manifest["labels"]:
        found = label_fn(split_list(value))
        names.append([found] if isinstance(found, str) else (list(found) if found else None))
    classes = sorted({name for record in names if record for name in record})
    index = {name: i for i, name in enumerate(classes)}
    records = np.array([i for i, n in enumerate(names) if n], dtype=np.int64)
    multilabel = any(len(names[i]) > 1 for i in records)
    if multilabel:
        targets = np.zeros((len(records), len(classes)), dtype=np.float32)  # [n, K]
        for position, row in enumerate(records):
            targets[position, [index[name] for name in names[row]]] = 1.0
    else:
        targets = np.array([index[names[i][0]] for i in records], dtype=np.int64)  # [n]
    return RecordLabels(records, targets, classes, unlabelled=sum(not n for n in names), multilabel=multilabel)


def class_counts(labels: RecordLabels, split_of: np.ndarray) -> dict[str, dict[str, int]]:
    """counts[split][class]: labelled records of each class per split (`split_of`: split per manifest row)."""
    counts: dict[str, dict[str, int]] = {}
    for position, row in enumerate(labels.records):
        per_class = counts.setdefault(str(split_of[row]), dict.fromkeys(labels.classes, 0))
        for k in labels.class_indices(position):
            per_class[labels.classes[k]] += 1
    return dict(sorted(counts.items()))


def subsample_labels(labels: RecordLabels, rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, per-class `fraction` of `rows` (label-efficiency runs); at least one record per class."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return rows
    rng = np.random.default_rng(seed)
    position = {row: k for k, row in enumerate(labels.records.tolist())}
    # a multi-label record is stratified by its first class
    first_class = np.array([labels.class_indices(position[r])[0] for r in rows], dtype=np.int64)
    kept = []
    for cls in np.unique(first_class):
        members = rows[first_class == cls]
        kept.extend(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    return np.sort(np.array(kept, dtype=np.int64))


class LabelledWindows(Dataset):
    """Windows of the labelled records of one split, each with its record's target.

    `lead_map` renames the store's leads before the model sees them (`{"unknown": "I"}`: a single
    unnamed lead read as lead I). `rr` ({manifest row: float32 [F]}, standardized) gives each window
    its record's RR-interval features (`anyecg.tasks.record_rr`) as item "rr".
    """

    def __init__(self, store: Store, labels: RecordLabels, rows: np.ndarray, *, form: str = "tokens",
                 contract: SignalContract | None = None, window_s: int = 10, random_crop: bool = True, seed: int = 0,
                 lead_map: dict[str, str] | None = None, rr: dict[int, np.ndarray] | None = None):
        if form not in ("tokens", "contract"):
            raise ValueError(f"form must be 'tokens' or 'contract', got {form!r}")
        if form == "contract" and contract is None:
            raise ValueError("form 'contract' needs the model's SignalContract")
        self.store, self.form, self.contract = store, form, contract
        self.lead_map = dict(lead_map or {})
        self.windows = StoreWindows(store, random_crop=random_crop, seed=seed, max_window_s=window_s, rows=rows)
        self.target_of = dict(zip(labels.records.tolist(), labels.targets))
        self.rr = rr

    def leads(self, record: int) -> list[str]:
        """The record's canonical lead names after `lead_map`."""
        return [self.lead_map.get(name, name) for name in self.store.leads(record)]

    def set_epoch(self, epoch: int) -> None:
        self.windows.set_epoch(epoch)

    def group_keys(self) -> np.ndarray:
        return self.windows.group_keys()

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        item = self._window(index)
        if self.rr is not None:
            item["rr"] = torch.from_numpy(self.rr[item["record"]])  # [F]
        return item

    def _window(self, index: int) -> dict:
        ref = self.windows.window(index)
        target = self.target_of[ref.record]
        if self.form == "tokens":
            item = self.windows[index]
            item["target"] = target
            if self.lead_map:
                item["lead_ids"] = torch.from_numpy(lead_ids(self.leads(ref.record)))
            return item
        signal = self.store.signal(ref.record, start=ref.start, stop=ref.stop)  # [L, T] at the store's rate
        try:
            x, lead_mask = to_model_input(signal, self.store.recipe.target_fs, self.leads(ref.record), self.contract)
        except ValueError as err:
            record_id = self.store.manifest.iloc[ref.record]["record_id"]
            raise ValueError(f"record {record_id}: {err}; name the lead with --leads (e.g. --leads I for a single "
                             "unnamed lead) or use a model that reads it") from None
        return {"x": torch.from_numpy(fit_window(x, self.contract.n_samples)), "lead_mask": torch.from_numpy(lead_mask),
                "target": target, "record": ref.record}


def collate_labelled(items: list[dict]) -> dict[str, Tensor]:
    """Batch of windows; `targets` long [B] (multi-class) or float [B, K] (multi-label)."""
    if np.ndim(items[0]["target"]) == 0:
        targets = torch.tensor([int(item["target"]) for item in items], dtype=torch.long)  # [B]
    else:
        targets = torch.from_numpy(np.stack([item["target"] for item in items]).astype(np.float32))  # [B, K]
    if "patches" in items[0]:
        batch = collate_windows(items)
    else:
        batch = {"x": torch.stack([item["x"] for item in items]), "lead_mask": torch.stack([item["lead_mask"] for item in items]),
                 "record": torch.tensor([item["record"] for item in items])}
    batch["targets"] = targets
    if "rr" in items[0]:
        batch["rr"] = torch.stack([item["rr"] for item in items])  # [B, F]
    return batch


@dataclass
class ClassifierOutput:
    loss: Tensor
    accuracy: Tensor
    logits: Tensor  # [B, K]


class BackboneWithHead(nn.Module):
    """The pretrained AnyECG backbone and a linear head of `out_features` per token or per window.

    `linear_probe=True` freezes the backbone (and keeps it in eval mode): only the head trains.
    """

    def __init__(self, backbone: Backbone, out_features: int, *, linear_probe: bool = False):
        super().__init__()
        self.backbone = backbone
        self.linear_probe = linear_probe
        self.head = nn.Linear(backbone.config.dim, out_features)
        if linear_probe:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> "BackboneWithHead":
        super().train(mode)
        if self.linear_probe:
            self.backbone.eval()
        return self


class AnyECGClassifier(BackboneWithHead):
    """The backbone's tokens mean-pooled over the real ones, then a linear head to the classes."""

    def forward_features(self, batch: dict) -> Tensor:
        """Pooled embedding [B, D] of the batch's windows."""
        features = self.backbone.forward_features(batch["patches"], batch["lead_ids"], batch["pad_mask"])  # [B, N, D]
        return self.backbone.pool(features, batch["pad_mask"])

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)  # [B, K]

    def forward(self, batch: dict) -> ClassifierOutput:
        logits = self.forward_head(self.forward_features(batch))  # [B, K]
        loss, accuracy = classification_loss(logits, batch["targets"])
        return ClassifierOutput(loss=loss, accuracy=accuracy, logits=logits)


def network_features(net: nn.Module, batch: dict) -> Tensor:
    """Features [B, D] of a classifier whose head was replaced by an identity: a `contract` model
    (baseline, family; their `forward_head` applies head dropout) or an AnyECG `tokens` model."""
    if "x" in batch:
        return net.forward_head(net.forward_features(batch["x"], batch["lead_mask"]))
    return net.forward_head(net.forward_features(batch))


class WithRRFeatures(nn.Module):
    """A classifier network's features joined to RR-interval features computed outside it (batch
    "rr" [B, F]: its record's, or its beat's) before a two-layer head; with F = 0, a linear head on
    the network's features alone.

    The network's own head is replaced by an identity, so its `forward_head` hands over the
    (dropped-out, where the network has head dropout) features.

    `feature_logits` adds a linear path from the features straight to the logits (a "wide and
    deep" head): on the single-lead rhythm task a two-layer head beside a 128-d embedding left the
    record features under-used (AF F1 0.75 against 0.95 for gradient boosting on the features alone),
    and the linear path raised validation macro F1 (docs/results.md, section 2). The path is not
    part of `head`: beside a pretrained encoder, fine-tuning trains it as the encoder's parameters
    outside its blocks (at the lowest layer-decayed rate, after the head warm-up), which validation
    preferred to training it as the head (0.761 against 0.746).
    """

    def __init__(self, net: nn.Module, n_features: int, n_classes: int, hidden: int = 64, feature_logits: bool = False):
        super().__init__()
        width = net.head.in_features
        net.head = nn.Identity()
        self.net, self.n_features = net, n_features
        if n_features:
            self.head = nn.Sequential(nn.Linear(width + n_features, hidden), nn.GELU(), nn.Linear(hidden, n_classes))
        else:
            self.head = nn.Linear(width, n_classes)
        self.feature_logits = nn.Linear(n_features, n_classes) if feature_logits and n_features else None

    @property
    def config(self):
        """The network's config (its `contract` is the input the model reads)."""
        return self.net.config

    def logits(self, batch: dict) -> Tensor:
        features = network_features(self.net, batch)  # [B, D]
        if not self.n_features:
            return self.head(features)  # [B, K]
        hand = batch["rr"].to(features.dtype)  # [B, F]
        logits = self.head(torch.cat([features, hand], dim=-1))  # [B, K]
        if self.feature_logits is not None:
            logits = logits + self.feature_logits(hand)
        return logits

    def forward(self, batch: dict) -> ClassifierOutput:
        logits = self.logits(batch)
        loss, accuracy = classification_loss(logits, batch["targets"])
        return ClassifierOutput(loss=loss, accuracy=accuracy, logits=logits)


def class_probabilities(logits: Tensor, multilabel: bool) -> Tensor:
    """Probabilities [..., K] of logits [..., K]: per-class sigmoids (multi-label) or a softmax over classes."""
    logits = logits.float()
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)


def window_logits(model: nn.Module, batch: dict) -> Tensor:
    """Logits [B, K] of a batch of windows (targets not needed) for any fine-tuned classifier."""
    if isinstance(model, (WithRRFeatures, SeedEnsemble)):
        return model.logits(batch)
    if "x" in batch:
        return model(batch["x"], batch["lead_mask"])
    return model.forward_head(model.forward_features(batch))


class SeedEnsemble(nn.Module):
    """The fine-tuned models of a run's seeds as one classifier. The members' probabilities (softmax,
    or per-class sigmoids when multi-label) are averaged and handed on as logits whose softmax or
    sigmoid gives that average back, so every caller that turns logits into probabilities scores
    the ensemble."""

    def __init__(self, members: list[nn.Module], multilabel: bool):
        super().__init__()
        self.members, self.multilabel = nn.ModuleList(members), multilabel

    @property
    def config(self):
        """The members' network config (the same network in every seed)."""
        return self.members[0].config

    def logits(self, batch: dict) -> Tensor:
        logits = torch.stack([window_logits(m, batch) for m in self.members])  # [M, B, K]
        mean = class_probabilities(logits, self.multilabel).mean(dim=0)  # [B, K]
        if self.multilabel:
            return torch.logit(mean.clamp(1e-7, 1 - 1e-7))
        return mean.clamp_min(1e-12).log()

    def forward(self, batch: dict) -> ClassifierOutput:
        logits = self.logits(batch)
        loss, accuracy = classification_loss(logits, batch["targets"])
        return ClassifierOutput(loss=loss, accuracy=accuracy, logits=logits)

    @classmethod
    def load(cls, run: Path, load_model: Callable[[Path], tuple[nn.Module, dict]]) -> tuple["SeedEnsemble", dict]:
        """(ensemble, config) of a run folder's `ensemble.json`, each member loaded by `load_model`;
        the config is the first member's, with the ensemble's members and thresholds."""
        spec = json.loads((run / ENSEMBLE_FILE).read_text())
        loaded = [load_model(run / member) for member in spec["members"]]
        config = loaded[0][1]
        for member, (_, other) in zip(spec["members"][1:], loaded[1:]):
            if other["classes"] != config["classes"] or other["model"] != config["model"]:
                raise ValueError(f"{run / member}: not the same classes and network as {run / spec['members'][0]}; "
                                 "an ensemble's members come from one finetune run")
        config = {**config, "ensemble": spec["members"]}
        if "thresholds" in spec:
            config["thresholds"] = spec["thresholds"]
        return cls([model for model, _ in loaded], bool(config.get("multilabel"))), config


@torch.no_grad()
def predict_records(model: nn.Module, dataset: LabelledWindows, num_classes: int, batch_size: int = 32,
                    multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(records int [R], probabilities float [R, K]): window probabilities averaged per record, so a
    record of any length is scored whole. Softmax over classes, or per-class sigmoids (multi-label)."""
    model.eval()
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for start in range(0, len(dataset), batch_size):
        batch = collate_labelled([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        logits = model(batch).logits
        probabilities = class_probabilities(logits, multilabel).numpy()  # [B, K]
        for record, p in zip(batch["record"].tolist(), probabilities):
            sums[record] = sums.get(record, np.zeros(num_classes)) + p
            counts[record] = counts.get(record, 0) + 1
    records = np.array(sorted(sums), dtype=np.int64)
    return records, np.stack([sums[r] / counts[r] for r in records]) if len(records) else np.zeros((0, num_classes))
