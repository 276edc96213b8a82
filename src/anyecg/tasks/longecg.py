"""Ultra-long ECG recognition: AF vs non-AF on recordings far longer than one token window.

Hierarchical, in two stages:

1. A frozen encoder (AnyECG, or a pretrained ECG-FM / ECGFounder run) embeds consecutive windows
   of an example (the last one may be shorter) into one vector each (AnyECG: its tokens
   mean-pooled), giving `[S, D]` per example with `S = ceil(duration / window_s)`. Windows are read from the store one batch at a time
   (`store.signal(i, start=, stop=)`), so memory does not grow with recording length. The encoder is
   frozen, so these embeddings are computed once per example and reused by every seed and step.
2. A learned aggregator maps `[S, D]` to class logits: gated attention pooling over the windows
   (Ilse et al. 2018, "Attention-based deep multiple instance learning"), then a small MLP. AF may
   fill only part of a long recording; attention lets the few AF windows decide the class, which a
   plain mean would dilute.

Examples and their labels:
- a record whose header names a CPSC 2021 class (persistent / paroxysmal AF -> "AF", non AF ->
  "non-AF", see `long_record_label`) is one example: the whole recording;
- any other record with rhythm annotations (MIT-BIH) is cut into consecutive `segment_s` segments
  (default 5 minutes) labelled by `long_segments` with `rule`: "majority" (default: AF when AF
  covers most of the segment) or "any" (AF when any sample is AF);
- records with neither are not used.

A fine-tuned folder is `model.safetensors` (aggregator only) + `config.json` (family "finetuned",
task "longecg", classes, the aggregator config, and the encoder reference: null for the AnyECG
shipped in the package, otherwise its folder) + `recipe.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.data.store import Store, split_list
from anyecg.evaluation.metrics import classification_metrics, mean_std_over_seeds, to_jsonable
from anyecg.families import FamilyModel, family_network, feature_dim, is_family_checkpoint
from anyecg.models.backbone import Backbone
from anyecg.models.contract import to_model_input
from anyecg.pretrained import AnyECG
from anyecg.signal.leads import lead_ids
from anyecg.signal.patching import patchify, window_bounds
from anyecg.signal.recipe import Recipe
from anyecg.tasks.labels import Sample
from anyecg.tasks.rhythm import long_record_label, long_segments, rhythm_name
from anyecg.tasks.folders import load_finetuned_config, write_summary
from anyecg.training.checkpoint import load_state_dict_strict, save_checkpoint

TASK = "longecg"
CLASSES = ["AF", "non-AF"]
POSITIVE = "AF"


@dataclass
class LongECGConfig:
    model: str | None = None  # AnyECG, ECG-FM or ECGFounder run (the frozen encoder); None: the shipped AnyECG
    random_init: bool = False  # the encoder's architecture with random weights (a control)
    window_s: int = 10  # AnyECG encoder window (ECG-FM and ECGFounder use their own input length)
    segment_s: float = 300.0  # example length for records labelled by rhythm annotations (MIT-BIH)
    rule: str = "majority"  # segment class from its rhythm: "majority" or "any" (see `segment_labels`)
    seeds: int = 5
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 64
    dropout: float = 0.1
    embed_batch: int = 32  # windows per encoder call while embedding


# ---------------------------------------------------------------------------------------- examples


def long_examples(store: Store, rows: np.ndarray | None = None, segment_s: float = 300.0, rule: str = "majority") -> list[Sample]:
    """The labelled examples of the given manifest rows (all by default), in row order: whole records
    with a CPSC 2021 class, `segment_s` segments of other records with rhythm annotations."""
    rows = np.arange(len(store.manifest)) if rows is None else np.asarray(rows)
    examples: list[Sample] = []
    for row in rows.tolist():
        entry = store.manifest.iloc[row]
        label = long_record_label(split_list(entry["labels"]))
        if label is not None:
            examples.append(Sample(row, 0, int(entry["n_samples"]), label))
            continue
        annotations = store.annotations(str(entry["record_id"]))
        if annotations is None or not any(rhythm_name(aux) is not None for aux in annotations.aux):
            continue
        examples.extend(long_segments(store, row, segment_s=segment_s, rule=rule))
    return examples


# ---------------------------------------------------------------------------------------- embedding


class WindowEncoder:
    """A frozen encoder of fixed-length windows: `embed(signals, leads) -> float32 [B, D]`.

    AnyECG mean-pools the tokens of each `window_s` window; ECG-FM and ECGFounder read windows of
    their own input length (5 s and 10 s), converted to their rate and lead slots.
    """

    def __init__(self, network: nn.Module, recipe: Recipe, *, window_s: int, dim: int, kind: str):
        self.network, self.recipe, self.window_s, self.dim, self.kind = network.eval(), recipe, window_s, dim, kind

    def check_store(self, store: Store) -> None:
        ours, theirs = store.recipe, self.recipe
        if (ours.target_fs, ours.patch_size) != (theirs.target_fs, theirs.patch_size):
            raise ValueError(
                f"{store.root}: store rate {ours.target_fs} Hz / patch {ours.patch_size} differs from the encoder's "
                f"{theirs.target_fs} Hz / patch {theirs.patch_size}; prepare the data with the encoder's recipe"
            )

    @torch.no_grad()
    def embed(self, signals: list[np.ndarray], leads: list[str]) -> np.ndarray:
        """float32 [B, D] for windows `signals` ([L, T] each at the recipe's rate, all of one length)."""
        if self.kind == "anyecg":
            patches = torch.from_numpy(np.stack([patchify(s, self.recipe.patch_size)[0] for s in signals]))  # [B, L, P, S]
            pad_mask = torch.zeros(patches.shape[:3], dtype=torch.bool)  # [B, L, P]
            ids = torch.from_numpy(lead_ids(leads))[None].expand(len(signals), -1)  # [B, L]
            features = self.network.forward_features(patches, ids, pad_mask)  # [B, L * P, D]
            return self.network.pool(features, pad_mask).numpy()  # [B, D]
        contract = self.network.config.contract
        inputs = [to_model_input(s, self.recipe.target_fs, leads, contract) for s in signals]
        x = torch.from_numpy(np.stack([x for x, _ in inputs]))  # [B, C, T]
        lead_mask = torch.from_numpy(np.stack([m for _, m in inputs]))  # [B, C]
        return self.network.forward_features(x, lead_mask).numpy()  # [B, D]


def load_window_encoder(model: str | None, *, window_s: int = 10, random_init: bool = False) -> WindowEncoder:
    """The frozen encoder of a pretrained AnyECG (None: the shipped one), ECG-FM or ECGFounder run;
    `random_init` keeps its architecture with fresh random weights (a control)."""
    if is_family_checkpoint(model):
        pretrained = FamilyModel.from_pretrained(model)
        network = pretrained.network
        if random_init:
            with torch.random.fork_rng(devices=[]):  # the same control every time, the caller's RNG untouched
                torch.manual_seed(0)
                network = family_network(pretrained.family, network.config.to_dict())
        return WindowEncoder(network, pretrained.recipe, window_s=int(network.config.window_s), dim=feature_dim(network),
                             kind=pretrained.family)
    pretrained = AnyECG.from_pretrained(model)
    if pretrained.backbone is None:
        raise ValueError(f"{model}: a tokenizer-only checkpoint; long-ECG recognition needs a stage-2 (pretrain) encoder")
    backbone = pretrained.backbone
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            backbone = Backbone(backbone.config)
    return WindowEncoder(backbone, pretrained.recipe, window_s=window_s, dim=backbone.config.dim, kind="anyecg")


@torch.no_grad()
def embed_stream(encoder: WindowEncoder, store: Store, record: int, start: int, stop: int,
                 batch_windows: int = 32) -> np.ndarray:
    """float32 [S, D]: window embeddings of `[start, stop)` of one stored record, S = ceil(length / window).

    Reads `batch_windows` windows at a time, so memory is bounded by one batch however long the
    record is. A shorter last window is embedded alone (no padding, so no dependence on batching).
    """
    size = encoder.window_s * store.recipe.patch_size
    bounds = window_bounds(start, stop, size)  # [S, 2]
    leads = store.leads(record)
    full = bounds[:, 1] - bounds[:, 0] == size  # [S]
    out = np.empty((len(bounds), encoder.dim), dtype=np.float32)  # [S, D]
    for first in range(0, len(bounds), batch_windows):
        chunk = np.arange(first, min(first + batch_windows, len(bounds)))
        for group in (chunk[full[chunk]], chunk[~full[chunk]]):
            if len(group):
                signals = [store.signal(record, start=int(a), stop=int(b)) for a, b in bounds[group]]  # [L, T] each
                out[group] = encoder.embed(signals, leads)
    return out


def embed_examples(encoder: WindowEncoder, store: Store, examples: list[Sample], batch_windows: int = 32,
                   cache: dict | None = None) -> list[np.ndarray]:
    """Window embeddings [S, D] of each example, looked up in / added to `cache` (keyed by record id
    and bounds: valid for one frozen encoder)."""
    encoder.check_store(store)
    cache = {} if cache is None else cache
    ids = store.manifest["record_id"].astype(str).to_numpy()
    embeddings = []
    for example in examples:
        key = (ids[example.record], example.start, example.stop)
        if key not in cache:
            cache[key] = embed_stream(encoder, store, example.record, example.start, example.stop, batch_windows)
        embeddings.append(cache[key])
    return embeddings


# ---------------------------------------------------------------------------------------- aggregator


@dataclass
class AggregatorConfig:
    dim: int = 128  # encoder embedding size D
    num_classes: int = 2
    hidden: int = 64
    dropout: float = 0.1


class AttentionAggregator(nn.Module):
    """Gated attention pooling over window embeddings, then an MLP head: [B, S, D] -> [B, K]."""

    def __init__(self, config: AggregatorConfig):
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.dim)
        self.attn_v = nn.Linear(config.dim, config.hidden)
        self.attn_u = nn.Linear(config.dim, config.hidden)
        self.attn_w = nn.Linear(config.hidden, 1)
        self.head = nn.Sequential(
            nn.Linear(config.dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.num_classes),
        )

    def attention(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """[B, S] weights over the real windows (pad_mask True = padding; every example has one window)."""
        h = self.norm(x)  # [B, S, D]
        scores = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))).squeeze(-1)  # [B, S]
        return torch.softmax(scores.masked_fill(pad_mask, float("-inf")), dim=-1)

    def forward_features(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        weights = self.attention(x, pad_mask)  # [B, S]
        return torch.einsum("bs,bsd->bd", weights, self.norm(x))  # [B, D]

    def forward_head(self, pooled: Tensor) -> Tensor:
        return self.head(pooled)  # [B, K]

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x, pad_mask))


def pad_sequences(embeddings: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    """(x [B, S_max, D], pad_mask [B, S_max] True where padded) of per-example [S, D] arrays."""
    longest, dim = max(len(e) for e in embeddings), embeddings[0].shape[1]
    x = torch.zeros(len(embeddings), longest, dim)
    pad_mask = torch.ones(len(embeddings), longest, dtype=torch.bool)
    for b, e in enumerate(embeddings):
        x[b, : len(e)] = torch.from_numpy(e)
        pad_mask[b, : len(e)] = False
    return x, pad_mask


def train_aggregator(model: AttentionAggregator, embeddings: list[np.ndarray], targets: np.ndarray, *, steps: int,
                     batch_size: int, lr: float, weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """AdamW on cached embeddings, minibatches drawn with replacement; returns the loss of each step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.as_tensor(targets, dtype=torch.long)
    losses = []
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(embeddings), (min(batch_size, len(embeddings)),), generator=generator)
        x, pad_mask = pad_sequences([embeddings[i] for i in pick.tolist()])
        loss = F.cross_entropy(model(x, pad_mask), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def predict_proba(model: AttentionAggregator, embeddings: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """float [N, K] class probabilities."""
    model.eval()
    parts = [torch.softmax(model(*pad_sequences(embeddings[i : i + batch_size])), dim=-1)
             for i in range(0, len(embeddings), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.config.num_classes))


# ---------------------------------------------------------------------------------------- finetune / evaluate


def _encoder_reference(model: str | None) -> str | None:
    return None if model is None else str(Path(model).resolve())


def _split_examples(store: Store, split: str, segment_s: float, rule: str) -> list[Sample]:
    rows = np.flatnonzero(store.manifest["split"].to_numpy() == split)
    return long_examples(store, rows, segment_s, rule)


def finetune_longecg(data: str | Path, out: str | Path, config: LongECGConfig) -> dict:
    """For each seed: train an aggregator on the train split's examples, evaluate on the test split.
    `out/seed-K/final/` holds each model, `out/seed-K/test/` its evaluation, `out/summary.json` the
    mean +/- std over seeds. Window embeddings are computed once and shared by all seeds."""
    store, out = Store(data), Path(out)
    encoder = load_window_encoder(config.model, window_s=config.window_s, random_init=config.random_init)
    train_examples = _split_examples(store, "train", config.segment_s, config.rule)
    test_examples = _split_examples(store, "test", config.segment_s, config.rule)
    train_classes = sorted({e.label for e in train_examples})
    if train_classes != CLASSES:
        raise ValueError(f"{store.root}: the train split needs examples of both {CLASSES}, found {train_classes}")
    if not test_examples:
        raise ValueError(f"{store.root}: no labelled long-ECG examples in the test split")
    cache: dict = {}
    train_embeddings = embed_examples(encoder, store, train_examples, config.embed_batch, cache)
    embed_examples(encoder, store, test_examples, config.embed_batch, cache)
    targets = np.array([CLASSES.index(e.label) for e in train_examples])
    aggregator_config = AggregatorConfig(dim=encoder.dim, num_classes=len(CLASSES),
                                         hidden=config.hidden, dropout=config.dropout)
    per_seed = []
    for seed in range(config.seeds):
        torch.manual_seed(seed)
        model = AttentionAggregator(aggregator_config)
        losses = train_aggregator(model, train_embeddings, targets, steps=config.steps, batch_size=config.batch_size,
                                  lr=config.lr, weight_decay=config.weight_decay, seed=seed)
        model_config = {
            "family": "finetuned", "task": TASK, "classes": CLASSES,
            "model": {"kind": "longecg-aggregator", "aggregator": asdict(aggregator_config),
                      "encoder": _encoder_reference(config.model), "encoder_kind": encoder.kind,
                      "random_init": config.random_init},
            "window_s": encoder.window_s, "segment_s": config.segment_s, "rule": config.rule,
            "finetune": asdict(config), "train_examples": len(train_examples), "final_loss": losses[-1] if losses else None,
        }
        run = out / f"seed-{seed}"
        save_checkpoint(run / "final", model.state_dict(), model_config, store.recipe.to_json())
        per_seed.append(evaluate_longecg(run / "final", data, "test", run / "test", cache=cache, encoder=encoder))
    summary = {
        "task": TASK, "classes": CLASSES, "train_examples": len(train_examples), "test_examples": len(test_examples),
        "train_counts": {c: sum(e.label == c for e in train_examples) for c in CLASSES},
        "test_counts": {c: sum(e.label == c for e in test_examples) for c in CLASSES},
        "seeds": config.seeds, "window_s": encoder.window_s, "segment_s": config.segment_s, "rule": config.rule,
        "metrics": mean_std_over_seeds(per_seed),
    }
    write_summary(out, summary)
    return summary


def load_longecg(directory: str | Path) -> tuple[AttentionAggregator, dict]:
    """(aggregator, config) of a fine-tuned long-ECG folder, strictly loaded; `config["recipe"]` is its Recipe."""
    config = load_finetuned_config(directory, (TASK,))
    model = AttentionAggregator(AggregatorConfig(**config["model"]["aggregator"]))
    load_state_dict_strict(model, directory)
    return model.eval(), config


def evaluate_longecg(model_dir: str | Path, data: str | Path, split: str, out: str | Path, *,
                     cache: dict | None = None, encoder: WindowEncoder | None = None) -> dict:
    """Score one fine-tuned model on one split: `out/metrics.json` and `out/predictions.csv` (one row
    per example: record, bounds, window count, label, prediction, class probabilities)."""
    model, config = load_longecg(model_dir)
    store, out = Store(data), Path(out)
    if encoder is None:
        encoder = load_window_encoder(config["model"]["encoder"], window_s=config["window_s"],
                                      random_init=config["model"].get("random_init", False))
    examples = _split_examples(store, split, config["segment_s"], config["rule"])
    if not examples:
        raise ValueError(f"{store.root}: no labelled long-ECG examples in split {split!r}")
    embeddings = embed_examples(encoder, store, examples, cache=cache)
    probabilities = predict_proba(model, embeddings)  # [N, K]
    classes = config["classes"]
    labels = np.array([e.label for e in examples])
    metrics = classification_metrics(labels, probabilities, classes, positive=POSITIVE)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    fs = float(store.recipe.target_fs)
    predictions = pd.DataFrame({
        "record_id": store.manifest["record_id"].astype(str).to_numpy()[[e.record for e in examples]],
        "start_s": [e.start / fs for e in examples], "stop_s": [e.stop / fs for e in examples],
        "windows": [len(x) for x in embeddings], "label": labels,
        "predicted": np.array(classes)[probabilities.argmax(1)],
    })
    for k, name in enumerate(classes):
        predictions[f"p_{name}"] = probabilities[:, k]
    predictions.to_csv(out / "predictions.csv", index=False)
    return metrics

