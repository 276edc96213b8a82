"""Checkpoints: `model.safetensors` + `config.json` + `recipe.json` (+ `trainer_state.pt` to resume).

A checkpoint folder is written to a temporary sibling and renamed into place, so a crash mid-write
leaves the previous checkpoint intact. Loading is strict: any missing or unexpected key is reported.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from anyecg.models.state import state_mismatches

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
RECIPE_FILE = "recipe.json"
TRAINER_FILE = "trainer_state.pt"


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(
    directory: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict,
    recipe_json: str | None = None,
    trainer_state: dict | None = None,
) -> Path:
    """Write a checkpoint folder atomically (replacing an older one at the same path)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # safetensors refuses shared storage; contiguous clones are safe to write.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(tmp / MODEL_FILE))
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
    if recipe_json is not None:
        (tmp / RECIPE_FILE).write_text(recipe_json)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER_FILE)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def load_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE})")
    return json.loads(path.read_text())


def load_state_dict_strict(model: torch.nn.Module, directory: str | Path) -> None:
    """Load `model.safetensors` into `model`; raise listing every missing, unexpected or misshaped key."""
    model.load_state_dict(check_keys(model, directory), strict=True)


def check_keys(model: torch.nn.Module, directory: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, after checking that their names and shapes are exactly the model's."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {MODEL_FILE}")
    saved = load_file(str(path))
    expected = model.state_dict()
    missing, unexpected, misshaped = state_mismatches(expected, saved)
    misshaped = [f"{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(expected[k].shape)}" for k in misshaped]
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{path}: checkpoint does not match the model; missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}, misshaped {misshaped[:10]}"
        )
    return saved


def load_trainer_state(directory: str | Path) -> dict | None:
    path = Path(directory) / TRAINER_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
