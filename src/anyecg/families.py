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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from anyecg.data.multilabel import MultiLabelTarget, MultiLabelWindows, build_vocabulary, collate_multilabel
from anyecg.data.store import Store, split_list
from anyecg.models.baselines.common import ClassificationOutput, classification_loss
from anyecg.models.contract import segments
from anyecg.models.ecgfm import ECGFM, ECGFMConfig, ECGFMPretrainer, SegmentPairs, collate_pairs, ecgfm_config
from anyecg.models.ecgfounder import ECGFounder, ECGFounderConfig, ecgfounder_config
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
    keep = np.array([bool(wanted & set(split_list(store.manifest.iloc[r]["leads"]))) for r in rows], dtype=bool)
    ids = store.manifest["record_id"].astype(str).to_numpy()
    return rows[keep], ids[rows[~keep]].tolist()


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
    """A pretrained ECG-FM encoder or ECGFounder network with the recipe it was trained on."""

    def __init__(self, family: str, network: nn.Module, recipe: Recipe, config: dict):
        self.family, self.network, self.recipe, self.config = family, network.eval(), recipe, config

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "FamilyModel":
        directory = Path(directory)
        if (directory / FINAL / "config.json").is_file():
            directory = directory / FINAL
        config = load_config(directory)
        family = config.get("family")
        if family == "ecgfm":
            holder = ECGFMPretrainer(ECGFMConfig.from_dict(config["config"]))
            load_state_dict_strict(holder, directory)
            network = holder.encoder
        elif family == "ecgfounder":
            network = ECGFounder(ECGFounderConfig.from_dict(config["config"]))
            load_state_dict_strict(network, directory)
        else:
            raise ValueError(f"{directory}: family {family!r} is not one of {list(FAMILIES)}")
        recipe_path = directory / RECIPE_FILE
        if not recipe_path.is_file():
            raise ValueError(f"{directory}: checkpoint has no {RECIPE_FILE}; cannot preprocess input the way it was trained")
        return cls(family, network, Recipe.from_json(recipe_path.read_text()), config)

    def save_pretrained(self, directory: str | Path) -> Path:
        """The network alone (ECG-FM: the encoder, with its pretraining modules when it still has them)."""
        config = dict(self.config)
        if self.family == "ecgfm":
            holder = ECGFMPretrainer(self.network.config)
            holder.encoder = self.network
            state = holder.state_dict()
        else:
            state = self.network.state_dict()
        return save_checkpoint(directory, state, config, self.recipe.to_json())

    @property
    def vocabulary(self) -> MultiLabelTarget | None:
        return MultiLabelTarget.from_dict(self.config["vocabulary"]) if "vocabulary" in self.config else None

    @torch.no_grad()
    def embed(self, signal: np.ndarray, fs: float, leads: list[str], *, per_window: bool = False) -> np.ndarray:
        """float32 [D]: the mean over consecutive windows of the recording, or [windows, D]."""
        signal = np.asarray(signal, dtype=np.float32)
        if signal.ndim != 2 or signal.shape[0] != len(leads):
            raise ValueError(f"signal shape {signal.shape} does not match {len(leads)} lead names {list(leads)}")
        clean = preprocess(signal, fs, self.recipe)  # [L, T'] at the recipe's rate
        windows, lead_mask = segments(clean, self.recipe.target_fs, canonical_leads(list(leads)), self.network.config.contract)
        x = torch.from_numpy(windows)  # [S, C, T]
        mask = torch.from_numpy(lead_mask)[None].expand(len(x), -1)  # [S, C]
        features = self.network.forward_features(x, mask)  # [S, D]
        return features.numpy() if per_window else features.mean(dim=0).numpy()


def is_family_checkpoint(directory: str | Path | None) -> bool:
    """True when `directory` (or its `final/`) holds an ECG-FM or ECGFounder checkpoint."""
    if directory is None:
        return False
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
