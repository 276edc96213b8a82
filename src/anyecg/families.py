"""ECG-FM and ECGFounder under the anyecg API: pretrain on a store, save, load, embed.

    pretrain_family("ecgfm", "store/", "ecgfm-small", "runs/ecgfm", TrainConfig(...))
    model = FamilyModel.from_pretrained("runs/ecgfm")          # or an ECGFounder run
    vector = model.embed(signal, fs=360, leads=["MLII", "V5"])  # [D], any rate, lead subset, length
    classifier = FamilyClassifier.from_pretrained("runs/ecgfm", num_classes=2, linear_probe=True)

`FamilyClassifier` puts a fresh linear head on a pretrained network with the interface of the
classification baselines, so `anyecg finetune --model RUN` fine-tunes (or probes) either family
through the same loop, windows and splits as AnyECG and the baselines.

- ECG-FM: self-supervised (wav2vec 2.0 contrastive loss on masked spans, contrastive multi-segment
  coding, random lead masking) on pairs of adjacent windows of the store's train records.
- ECGFounder: supervised multi-label training on the store's labels (SNOMED-CT codes or the user's
  classes); the vocabulary is saved with the checkpoint.

Checkpoints are the anyecg format (`model.safetensors` + `config.json` + `recipe.json`); the recipe
is the store's, so `embed` cleans raw input exactly as the training data was cleaned, then converts
it to the family's rate, lead slots and window (`anyecg.models.contract`).

The published checkpoints load too, as their authors released them (`anyecg.models.published`):

    model = FamilyModel.from_pretrained("12_lead_ECGFounder.pth")   # or "hf://OWNER/REPO/FILE"
    model.predict(signal, fs=500, leads=[...])   # [150] probabilities, names in model.labels
    model.save_pretrained("ecgfounder-12lead")   # safetensors + config.json + the authors' recipe

their recipe is the authors' preprocessing (`anyecg.signal.published`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from anyecg.data.multilabel import MultiLabelTarget, MultiLabelWindows, build_vocabulary, collate_multilabel
from anyecg.data.store import Store
from anyecg.models.baselines.common import ClassificationOutput, classification_loss
from anyecg.models.contract import segments
from anyecg.models.ecgfm import ECGFM, ECGFMConfig, ECGFMPretrainer, SegmentPairs, collate_pairs, ecgfm_config
from anyecg.models.ecgfounder import ECGFounder, ECGFounderConfig, ecgfounder_config
from anyecg.models.published import Published, PublishedRecipe, read_published, recipe_from_json, resolve_hub
from anyecg.signal.leads import canonical_leads
from anyecg.signal.recipe import Recipe, preprocess
from anyecg.training.checkpoint import RECIPE_FILE, load_config, load_state_dict_strict, save_checkpoint
from anyecg.training.loop import FINAL, TrainConfig, train

FAMILIES = ("ecgfm", "ecgfounder")


class StoreRows:
    """A lazy view of some rows of a store: `len()` and `[k]` like a list of records."""

    def __init__(self, store: Store, rows: np.ndarray):
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        return self.store[int(self.rows[k])]


def usable_rows(store: Store, rows: np.ndarray, leads: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """(rows with at least one of `leads`, ids of the records left out): a record whose only lead is
    unnamed (CPSC 2019) or outside the model's lead set gives it no input."""
    wanted = set(leads)
    keep = np.array([bool(wanted & set(store.leads(r))) for r in rows], dtype=bool)
    return rows[keep], [store.record_id(r) for r in rows[~keep]]


def pretrain_family(
    family: str, data: str | Path, preset: str, out: str | Path, config: TrainConfig, *, split: str = "train",
    min_label_count: int = 2,
) -> dict[str, float]:
    """Pretrain an ECG-FM or ECGFounder preset on a store's `split`; the result lands in `out/final`."""
    store = Store(data)
    rows = np.flatnonzero(store.manifest["split"].to_numpy() == split)
    if len(rows) == 0:
        raise ValueError(f"{store.root}: no records in split {split!r}")
    if family == "ecgfm":
        model_cfg = ecgfm_config(preset)
        model = ECGFMPretrainer(model_cfg)
        rows, unusable = usable_rows(store, rows, model_cfg.contract.leads)
        if len(rows) == 0:
            raise ValueError(f"{store.root}: no record of split {split!r} has any of the leads {list(model_cfg.contract.leads)}")
        dataset = SegmentPairs(StoreRows(store, rows), model_cfg.contract, seed=config.seed)
        collate = collate_pairs
        extra = {"records_without_usable_leads": unusable}
    elif family == "ecgfounder":
        target, rare = build_vocabulary(store.manifest, min_count=min_label_count, splits=[split])
        if len(target.classes) == 0:
            raise ValueError(f"{store.root}: no label occurs {min_label_count}+ times in split {split!r}; "
                             "ECGFounder pretraining is supervised")
        model_cfg = ecgfounder_config(preset, num_classes=len(target.classes))
        model = ECGFounder(model_cfg)
        dataset = MultiLabelWindows(store, target, model_cfg.contract, split, seed=config.seed)
        collate = collate_multilabel
        extra = {"vocabulary": target.to_dict(), "rare_labels": rare}
    else:
        raise ValueError(f"unknown family {family!r}; known: {list(FAMILIES)} (AnyECG: anyecg pretrain-tokenizer / pretrain)")
    model_config = {"family": family, "stage": "pretrain", "preset": preset, "config": model_cfg.to_dict(), **extra}
    return train(model, dataset, collate, config, out, model_config=model_config, recipe_json=store.recipe.to_json())


class FamilyModel:
    """A pretrained ECG-FM encoder or ECGFounder network with the recipe it was trained on.

    `pretrainer`: for ECG-FM without a head, the encoder's pretraining modules (quantiser,
    projections, mask vector), kept so that saving writes them back.
    """

    def __init__(self, family: str, network: nn.Module, recipe: Recipe | PublishedRecipe, config: dict,
                 pretrainer: ECGFMPretrainer | None = None):
        self.family, self.network, self.recipe, self.config = family, network.eval(), recipe, config
        self.pretrainer = pretrainer

    @classmethod
    def from_published(cls, published: Published) -> "FamilyModel":
        return cls(published.family, published.network, published.recipe, published.config(), published.pretrainer)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "FamilyModel":
        """An anyecg checkpoint folder (or run folder), a published checkpoint file, or `hf://OWNER/REPO/FILE`."""
        if str(directory).startswith("hf://"):
            directory = resolve_hub(str(directory))
        directory = Path(directory)
        if directory.is_file():
            return cls.from_published(read_published(directory))
        if (directory / FINAL / "config.json").is_file():
            directory = directory / FINAL
        config = load_config(directory)
        family = config.get("family")
        pretrainer = None
        if family == "ecgfm" and config["config"].get("num_classes", 0) > 0:  # the published classifier
            network = ECGFM(ECGFMConfig.from_dict(config["config"]))
            load_state_dict_strict(network, directory)
        elif family == "ecgfm":
            pretrainer = ECGFMPretrainer(ECGFMConfig.from_dict(config["config"]))
            load_state_dict_strict(pretrainer, directory)
            network = pretrainer.encoder
        elif family == "ecgfounder":
            network = ECGFounder(ECGFounderConfig.from_dict(config["config"]))
            load_state_dict_strict(network, directory)
        else:
            raise ValueError(f"{directory}: family {family!r} is not one of {list(FAMILIES)}")
        recipe_path = directory / RECIPE_FILE
        if not recipe_path.is_file():
            raise ValueError(f"{directory}: checkpoint has no {RECIPE_FILE}; cannot preprocess input the way it was trained")
        return cls(family, network, recipe_from_json(recipe_path.read_text()), config, pretrainer)

    def save_pretrained(self, directory: str | Path) -> Path:
        """The network alone (ECG-FM: the encoder, with its pretraining modules when it still has them)."""
        holder = self.pretrainer
        if holder is None and self.family == "ecgfm" and self.network.config.num_classes == 0:
            holder = ECGFMPretrainer(self.network.config)  # the checkpoint layout of an encoder: fresh pretraining modules
            holder.encoder = self.network
        state = (holder if holder is not None else self.network).state_dict()
        return save_checkpoint(directory, state, dict(self.config), self.recipe.to_json())

    @property
    def labels(self) -> list[str] | None:
        """Names of a published classifier's outputs, in order (None for other networks)."""
        return self.config.get("labels")

    def windows(self, signal: np.ndarray, fs: float, leads: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(x float32 [S, C, T], lead_mask [C]): a raw recording (mV) cleaned by the recipe, in the model's windows."""
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 2 or signal.shape[0] != len(leads):
            raise ValueError(f"signal shape {signal.shape} does not match {len(leads)} lead names {list(leads)}")
        leads = canonical_leads(list(leads))
        if isinstance(self.recipe, PublishedRecipe):
            return self.recipe.windows(signal, fs, leads, self.network.config.contract)
        clean = preprocess(signal, fs, self.recipe)  # [L, T'] at the recipe's rate
        return segments(clean, self.recipe.target_fs, leads, self.network.config.contract)

    @torch.no_grad()
    def predict(self, signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
        """float [K]: a published classifier's probabilities for one recording, in `labels` order.

        Each window's sigmoid outputs, combined over the windows per label as the authors do
        (ECG-FM: mean or max by label; ECGFounder: mean)."""
        if self.labels is None:
            raise ValueError(f"this {self.family} network has no published classifier head; use embed, or finetune")
        x, lead_mask = self.windows(signal, fs, leads)
        mask = torch.from_numpy(lead_mask)[None].expand(len(x), -1)  # [S, C]
        probabilities = torch.sigmoid(self.network(torch.from_numpy(x), mask)).numpy()  # [S, K]
        aggregation = self.config.get("aggregation") or ["mean"] * probabilities.shape[1]
        return np.array([probabilities[:, k].max() if how == "max" else probabilities[:, k].mean()
                         for k, how in enumerate(aggregation)])

    @property
    def vocabulary(self) -> MultiLabelTarget | None:
        return MultiLabelTarget.from_dict(self.config["vocabulary"]) if "vocabulary" in self.config else None

    @torch.no_grad()
    def embed(self, signal: np.ndarray, fs: float, leads: list[str], *, per_window: bool = False) -> np.ndarray:
        """float32 [D]: the mean over consecutive windows of the recording, or [windows, D]."""
        windows, lead_mask = self.windows(signal, fs, leads)
        x = torch.from_numpy(windows)  # [S, C, T]
        mask = torch.from_numpy(lead_mask)[None].expand(len(x), -1)  # [S, C]
        features = self.network.forward_features(x, mask)  # [S, D]
        return features.numpy() if per_window else features.mean(dim=0).numpy()


def is_family_checkpoint(directory: str | Path | None) -> bool:
    """True when `directory` (or its `final/`) holds an ECG-FM or ECGFounder checkpoint, or names a
    published checkpoint file (a path to a file, or `hf://...`)."""
    if directory is None:
        return False
    if str(directory).startswith("hf://") or Path(directory).is_file():
        return True
    directory = Path(directory)
    for candidate in (directory / FINAL, directory):
        if (candidate / "config.json").is_file():
            return load_config(candidate).get("family") in FAMILIES
    return False


def family_network(family: str, config: dict) -> nn.Module:
    """An untrained network of `family` built from its saved config dict (weights loaded separately)."""
    if family == "ecgfm":
        return ECGFM(ECGFMConfig.from_dict(config))
    if family == "ecgfounder":
        return ECGFounder(ECGFounderConfig.from_dict(config))
    raise ValueError(f"family {family!r} is not one of {list(FAMILIES)}")


def feature_dim(network: nn.Module) -> int:
    """Width D of `network.forward_features`: ECGFounder's pooled channels, ECG-FM's model width."""
    return network.config.num_features if isinstance(network, ECGFounder) else network.config.dim


class FamilyClassifier(nn.Module):
    """An ECG-FM encoder or ECGFounder network, pooled features [B, D], and a fresh linear head.

    Same interface as the classification baselines: `forward_features(x, lead_mask)`,
    `forward_head(features)`, `config.contract`, and a batch dict in gives an output with `.loss`.
    `linear_probe=True` freezes the network (kept in eval mode, so BatchNorm statistics stay put).
    A fine-tuned folder records it as `spec(...)` in its config.json; `from_spec` rebuilds it.
    """

    def __init__(self, family: str, network: nn.Module, num_classes: int, *, linear_probe: bool = False):
        super().__init__()
        self.family, self.network, self.linear_probe = family, network, linear_probe
        self.config = network.config
        self.head = nn.Linear(feature_dim(network), num_classes)
        if linear_probe:
            self.network.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, directory: str | Path, num_classes: int, *, linear_probe: bool = False,
                        random_init: bool = False) -> "FamilyClassifier":
        """The run's network, or with `random_init` its architecture with fresh weights (a control)."""
        pretrained = FamilyModel.from_pretrained(directory)
        network = pretrained.network
        if random_init:
            network = family_network(pretrained.family, network.config.to_dict())
        return cls(pretrained.family, network, num_classes, linear_probe=linear_probe)

    def spec(self, random_init: bool) -> dict:
        return {"kind": "family", "family": self.family, "config": self.config.to_dict(), "random_init": random_init}

    @classmethod
    def from_spec(cls, spec: dict, num_classes: int) -> "FamilyClassifier":
        """An untrained classifier shaped as `spec` says, for a fine-tuned folder's weights."""
        return cls(spec["family"], family_network(spec["family"], spec["config"]), num_classes)

    def train(self, mode: bool = True) -> "FamilyClassifier":
        super().train(mode)
        if self.linear_probe:
            self.network.eval()
        return self

    def forward_features(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.network.forward_features(x, lead_mask)  # [B, D]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # [B, K]

    def forward(self, x, lead_mask: torch.Tensor | None = None):
        if isinstance(x, dict):
            logits = self.forward_head(self.forward_features(x["x"], x.get("lead_mask")))  # [B, K]
            loss, accuracy = classification_loss(logits, x["targets"])
            return ClassificationOutput(loss=loss, logits=logits, accuracy=accuracy)
        return self.forward_head(self.forward_features(x, lead_mask))
