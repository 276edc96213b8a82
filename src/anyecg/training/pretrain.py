"""AnyECG pretraining: stage 1 (the tokenizer) and stage 2 (masked rhythm-code modeling).

Both stages read windows of a prepared store and run the one training loop in `loop.py`; see its
docstring for single-process, torchrun and multi-node launches.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from anyecg.data.dataset import StoreWindows, collate_windows
from anyecg.data.store import Store
from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.presets import backbone_config, tokenizer_config
from anyecg.models.tokenizer import Tokenizer, TokenizerConfig
from anyecg.training.checkpoint import load_config, load_state_dict_strict
from anyecg.training.loop import FINAL, TrainConfig, train


class MaskedCodeModel(nn.Module):
    """Stage 2: a frozen tokenizer turns every patch into its code; the backbone predicts the masked ones.

    The checkpoint holds both, so one folder can `tokenize` and `embed`.
    """

    def __init__(self, tokenizer: Tokenizer, backbone: Backbone):
        super().__init__()
        if tokenizer.config.num_codes != backbone.config.num_codes:
            raise ValueError(
                f"tokenizer has {tokenizer.config.num_codes} codes but the backbone predicts {backbone.config.num_codes}"
            )
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.backbone = backbone

    def train(self, mode: bool = True) -> "MaskedCodeModel":
        super().train(mode)
        self.tokenizer.eval()  # frozen: no codebook updates, no dropout
        return self

    def forward(self, batch: dict):
        with torch.no_grad():
            codes = self.tokenizer.encode(batch["patches"], batch["lead_ids"], batch["pad_mask"])  # [B, L, P]
        return self.backbone(batch, codes=codes)


def model_config(stage: str, preset: str | None, tokenizer: TokenizerConfig, backbone: BackboneConfig | None,
                 window_s: int | None = None) -> dict:
    """config.json of an AnyECG checkpoint; `window_s`, the longest window it was pretrained on, makes
    `AnyECG.embed`/`tokenize` cut long recordings into windows of that length (positions past it
    were never trained)."""
    config = {"family": "anyecg", "stage": stage, "preset": preset, "tokenizer": dataclasses.asdict(tokenizer)}
    if backbone is not None:
        config["backbone"] = dataclasses.asdict(backbone)
    if window_s is not None:
        config["window_s"] = window_s
    return config


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """A tokenizer from a stage-1 (or stage-2) checkpoint folder, strictly loaded, in eval mode."""
    config = load_config(directory)
    tokenizer = Tokenizer(TokenizerConfig(**config["tokenizer"]))
    if config["stage"] == "tokenizer":
        load_state_dict_strict(tokenizer, directory)
    else:
        holder = MaskedCodeModel(tokenizer, Backbone(BackboneConfig(**config["backbone"])))
        load_state_dict_strict(holder, directory)
    return tokenizer.eval()


def _health_monitor(store: Store, out: str | Path, config: TrainConfig, every: int, records: int,
                    probe: str | Path | None, health_data: str | Path | None, preset: str, window_s: int | None):
    """The `after_step` hook that writes health figures every `every` steps (None when 0), on the
    held-out records of `health_data` (default: the pretraining store)."""
    if every == 0:
        return None
    if config.fsdp:
        raise ValueError("health figures are measured on the main process and cannot run with --fsdp; "
                         "pass --health-every 0")
    from anyecg.training.health import HealthMonitor  # imports the evaluation code, which imports this module

    measured = store if health_data is None else Store(health_data)
    measured.recipe.check_compatible(store.recipe)
    return HealthMonitor(measured, out, every=every, total_steps=config.max_steps, recipe=store.recipe, preset=preset,
                         window_s=window_s, max_records=records, probe_store=None if probe is None else Store(probe),
                         seed=config.seed)


def _windows(store: Store, split: str | None, seed: int, window_s: int | None,
             lead_subset_prob: float = 0.0) -> StoreWindows:
    windows = StoreWindows(store, split, random_crop=True, seed=seed, max_window_s=window_s,
                           lead_subset_prob=lead_subset_prob)
    if len(windows) == 0:
        raise ValueError(f"{store.root}: no records in split {split!r} to train on")
    return windows


def pretrain_tokenizer(
    data: str | Path, preset: str, out: str | Path, config: TrainConfig, *, split: str | None = "train",
    window_s: int | None = None, health_every: int = 0, health_records: int = 200,
    health_probe: str | Path | None = None, health_data: str | Path | None = None, **overrides,
) -> dict[str, float]:
    """Stage 1 on the store's `split` records; the finished tokenizer lands in `out/final`.

    Each record gives one random window per epoch: at most `window_s` seconds (default: as many as
    the 1024-token budget allows for its lead count). With `health_every`, `training.health` writes
    health figures on `health_records` val/test records of `health_data` (default: `data`; a store
    prepared with the same recipe), plus a linear probe on the labelled store `health_probe`.
    """
    store = Store(data)
    tok_config = tokenizer_config(preset, **overrides)
    torch.manual_seed(config.seed)  # initial weights from the run's seed, not from whatever ran before
    model = Tokenizer(tok_config)
    return train(
        model, _windows(store, split, config.seed, window_s), collate_windows, config, out,
        model_config=model_config("tokenizer", preset, tok_config, None, window_s), recipe_json=store.recipe.to_json(),
        after_step=_health_monitor(store, out, config, health_every, health_records, health_probe, health_data,
                                   preset, window_s),
    )


def pretrain_backbone(
    data: str | Path, tokenizer_dir: str | Path, preset: str, out: str | Path, config: TrainConfig,
    *, split: str | None = "train", window_s: int | None = None, health_every: int = 0, health_records: int = 200,
    health_probe: str | Path | None = None, health_data: str | Path | None = None, lead_subset_prob: float = 0.0,
    **overrides,
) -> dict[str, float]:
    """Stage 2 with the frozen tokenizer of `tokenizer_dir` (a stage-1 run folder or its `final`);
    health figures as in `pretrain_tokenizer`; `lead_subset_prob` as in `StoreWindows`."""
    store = Store(data)
    tokenizer_dir = _final(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    saved_recipe = (tokenizer_dir / "recipe.json")
    if saved_recipe.is_file():
        type(store.recipe).from_json(saved_recipe.read_text()).check_compatible(store.recipe)
    bb_config = backbone_config(preset, num_codes=tokenizer.config.num_codes, **overrides)
    torch.manual_seed(config.seed)  # initial weights from the run's seed, not from whatever ran before
    model = MaskedCodeModel(tokenizer, Backbone(bb_config))
    return train(
        model, _windows(store, split, config.seed, window_s, lead_subset_prob), collate_windows, config, out,
        model_config=model_config("pretrain", preset, tokenizer.config, bb_config, window_s),
        recipe_json=store.recipe.to_json(),
        after_step=_health_monitor(store, out, config, health_every, health_records, health_probe, health_data,
                                   preset, window_s),
    )


def _final(directory: str | Path) -> Path:
    """Accept a run folder or its `final` checkpoint."""
    directory = Path(directory)
    return directory / FINAL if (directory / FINAL / "config.json").is_file() else directory
