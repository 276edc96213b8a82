"""`AnyECG`: a pretrained checkpoint as a user meets it.

    model = AnyECG.from_pretrained("runs/pretrain/final")
    vector = model.embed(signal, fs=360, leads=["MLII", "V5"])     # [D], any rate, lead subset, length
    codes = model.tokenize(signal, fs=360, leads=["MLII", "V5"])   # [L, seconds] rhythm-code indices

The checkpoint's preprocessing recipe is applied to the raw input (mV), so a model never sees data
cleaned another way. Recordings longer than the token budget are cut into consecutive windows.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.tokenizer import Tokenizer, TokenizerConfig
from anyecg.signal.leads import canonical_leads, lead_ids
from anyecg.signal.patching import max_seconds_for_budget, patchify, window_bounds
from anyecg.signal.recipe import Recipe, preprocess
from anyecg.training.checkpoint import RECIPE_FILE, load_config, load_state_dict_strict, save_checkpoint
from anyecg.training.pretrain import MaskedCodeModel, model_config


DEFAULT_MODEL = "anyecg-small"


def token_windows(signal: np.ndarray, fs: float, leads: list[str], recipe: Recipe, window_s: int) -> list[dict[str, torch.Tensor]]:
    """A raw recording (mV, [leads, samples]) cleaned with `recipe` and cut into consecutive windows
    of `window_s` seconds, each a batch of one: `patches [1, L, P, S]`, `lead_ids [1, L]`, `pad_mask`."""
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 2 or signal.shape[0] != len(leads):
        raise ValueError(f"signal shape {signal.shape} does not match {len(leads)} lead names {list(leads)}")
    if signal.shape[1] == 0:
        raise ValueError(f"signal of shape {signal.shape} has no samples")
    if not np.isfinite(signal).all():
        raise ValueError(f"signal has {int((~np.isfinite(signal)).sum())} NaN/inf samples")
    if fs <= 0:
        raise ValueError(f"sampling rate must be positive, got {fs}")
    clean = preprocess(signal, fs, recipe)  # [L, T'] at the recipe's rate
    ids = torch.from_numpy(lead_ids(canonical_leads(list(leads))))[None]  # [1, L]
    size = window_s * recipe.patch_size
    batches = []
    for start, stop in window_bounds(0, clean.shape[1], size):
        patches, _ = patchify(clean[:, start:stop], recipe.patch_size)  # [L, P, S]
        batches.append({
            "patches": torch.from_numpy(patches)[None],  # [1, L, P, S]
            "lead_ids": ids,
            "pad_mask": torch.zeros(1, *patches.shape[:2], dtype=torch.bool),  # [1, L, P]
        })
    return batches


def default_checkpoint() -> Path:
    """The pretrained `anyecg-small` shipped inside the package (see its MODEL_CARD.md)."""
    return Path(str(files("anyecg") / "weights" / DEFAULT_MODEL))


class AnyECG:
    def __init__(self, tokenizer: Tokenizer, backbone: Backbone | None, recipe: Recipe, preset: str | None = None,
                 window_s: int | None = None):
        self.tokenizer = tokenizer.eval()
        self.backbone = backbone.eval() if backbone is not None else None
        self.recipe = recipe
        self.preset = preset
        self.window_s = window_s  # longest pretraining window; None: as long as the token budget allows

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None) -> "AnyECG":
        """Load a stage-1 (tokenizer only) or stage-2 checkpoint folder, or a run folder with `final/`;
        with no argument, the pretrained model shipped in the package."""
        directory = default_checkpoint() if directory is None else Path(directory)
        if (directory / "final" / "config.json").is_file():
            directory = directory / "final"
        config = load_config(directory)
        if config.get("family") != "anyecg":
            raise ValueError(f"{directory}: a {config.get('family')!r} checkpoint, not an AnyECG one")
        recipe_path = directory / RECIPE_FILE
        if not recipe_path.is_file():
            raise ValueError(f"{directory}: checkpoint has no {RECIPE_FILE}; cannot preprocess input the way it was trained")
        recipe = Recipe.from_json(recipe_path.read_text())
        tokenizer = Tokenizer(TokenizerConfig(**config["tokenizer"]))
        if config["stage"] == "tokenizer":
            load_state_dict_strict(tokenizer, directory)
            return cls(tokenizer, None, recipe, config.get("preset"), config.get("window_s"))
        backbone = Backbone(BackboneConfig(**config["backbone"]))
        load_state_dict_strict(MaskedCodeModel(tokenizer, backbone), directory)
        return cls(tokenizer, backbone, recipe, config.get("preset"), config.get("window_s"))

    def save_pretrained(self, directory: str | Path) -> Path:
        if self.backbone is None:
            state = self.tokenizer.state_dict()
            config = model_config("tokenizer", self.preset, self.tokenizer.config, None, self.window_s)
        else:
            holder = MaskedCodeModel(self.tokenizer, self.backbone)
            state = holder.state_dict()
            config = model_config("pretrain", self.preset, self.tokenizer.config, self.backbone.config, self.window_s)
        return save_checkpoint(directory, state, config, self.recipe.to_json())

    # ------------------------------------------------------------------ input

    def windows(self, signal: np.ndarray, fs: float, leads: list[str]) -> list[dict[str, torch.Tensor]]:
        """Preprocess a raw recording (mV, [leads, samples]) into model batches of one window each,
        as long as the token budget allows for its lead count and no longer than the pretraining windows."""
        seconds = max_seconds_for_budget(len(leads), self.tokenizer.config.max_tokens)
        if self.window_s is not None:
            seconds = min(seconds, self.window_s)
        return token_windows(signal, fs, leads, self.recipe, seconds)

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def tokenize(self, signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
        """int64 [L, seconds]: the rhythm-code index of every (lead, second) patch."""
        codes = [self.tokenizer.encode(b["patches"], b["lead_ids"], b["pad_mask"])[0] for b in self.windows(signal, fs, leads)]
        return torch.cat(codes, dim=1).numpy()

    @torch.no_grad()
    def embed(self, signal: np.ndarray, fs: float, leads: list[str], *, per_token: bool = False) -> np.ndarray:
        """float32 [D] for the recording (mean over all its tokens), or [L, seconds, D] with `per_token`.

        Uses the stage-2 backbone; a tokenizer-only checkpoint embeds with its encoder instead.
        """
        tokens = []
        for batch in self.windows(signal, fs, leads):
            _, L, P, _ = batch["patches"].shape
            if self.backbone is not None:
                features = self.backbone.forward_features(batch["patches"], batch["lead_ids"], batch["pad_mask"])
            else:
                features = self.tokenizer.encode_continuous(batch["patches"], batch["lead_ids"], batch["pad_mask"])
            tokens.append(features.reshape(L, P, -1))  # [L, P, D]
        grid = torch.cat(tokens, dim=1)  # [L, seconds, D]
        return grid.numpy() if per_token else grid.mean(dim=(0, 1)).numpy()

    def describe(self) -> dict:
        return {
            "preset": self.preset,
            "stage": "tokenizer" if self.backbone is None else "pretrain",
            "recipe": json.loads(self.recipe.to_json()),
            "codes": self.tokenizer.config.num_codes,
        }
