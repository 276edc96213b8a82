"""Named AnyECG sizes: plain dicts of tokenizer and backbone config fields.

`anyecg-tiny` and `anyecg-small` train on a laptop CPU in minutes. `anyecg-b`, `anyecg-l` and
`anyecg-xl` match the paper's 254M, 500M and 1.7B parameters (AnyECG-B/L/XL). The paper grows
them by "deepening the Transformer encoder and expanding the hidden layer sizes" without giving
widths or depths; ours are chosen to land within 5% of those counts.

Which parameters are counted: the stage-2 model, i.e. the backbone that pretraining produces and
downstream tasks fine-tune (patch embedding, mask token, transformer, code head). The frozen
stage-1 tokenizer only supplies targets; its size (6.2M for the large presets) is reported
separately as `tokenizer_parameters`. Counting tokenizer + backbone instead would still be within
5% of the paper's figures (B 255.6M, L 510.7M, XL 1.688B). Counts are taken on the meta device:
nothing is allocated.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import lru_cache
from typing import Any

import torch

from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.tokenizer import Tokenizer, TokenizerConfig

# How every preset's tokenizer trains (measured on PTB-XL, 300 steps, docs/pretraining.md): the codes
# seeded by k-means on 10K tokens, restarted when unused for 5 steps and moved by EMA; the commitment
# weight ramped in; magnitude wavelet targets without the two finest bands; patch amplitude as input.
_TOKENIZER_TRAINING = {
    "kmeans_pool": 10_000, "restart_after": 5, "ema_decay": 0.99, "beta_warmup_steps": 100,
    "frequency_magnitude": True, "frequency_drop_finest": 2, "amplitude_inputs": True,
}

# Tokenizer shared by the three paper-size presets: 4 encoder blocks (paper), K = 8192 codes.
_LARGE_TOKENIZER = {
    "dim": 256, "depth": 4, "n_heads": 8, "decoder_depth": 2,
    "code_dim": 64, "num_codes": 8192, "conv_channels": 16, **_TOKENIZER_TRAINING,
}

PRESETS: dict[str, dict[str, Any]] = {
    "anyecg-tiny": {
        "description": "test-scale model for unit tests and CPU smoke runs",
        "paper_parameters": None,
        "tokenizer": {"dim": 64, "depth": 2, "n_heads": 4, "decoder_depth": 1, "code_dim": 32, "num_codes": 512,
                      **_TOKENIZER_TRAINING},
        "backbone": {"dim": 64, "depth": 4, "n_heads": 4, "num_codes": 512, "amplitude_inputs": True},
    },
    "anyecg-small": {
        "description": "laptop-CPU model: minutes of pretraining on a few hundred recordings",
        "paper_parameters": None,
        "tokenizer": {"dim": 128, "depth": 4, "n_heads": 4, "decoder_depth": 2, "code_dim": 32, "num_codes": 1024,
                      **_TOKENIZER_TRAINING},
        "backbone": {"dim": 128, "depth": 6, "n_heads": 4, "num_codes": 1024, "amplitude_inputs": True},
    },
    "anyecg-b": {
        "description": "AnyECG-B (paper: 254M parameters)",
        "paper_parameters": 254_000_000,
        "tokenizer": _LARGE_TOKENIZER,
        "backbone": {"dim": 1024, "depth": 19, "n_heads": 16, "num_codes": 8192, "conv_channels": 16,
                     "amplitude_inputs": True},
    },
    "anyecg-l": {
        "description": "AnyECG-L (paper: 500M parameters)",
        "paper_parameters": 500_000_000,
        "tokenizer": _LARGE_TOKENIZER,
        "backbone": {"dim": 1280, "depth": 25, "n_heads": 16, "num_codes": 8192, "conv_channels": 16,
                     "amplitude_inputs": True},
    },
    "anyecg-xl": {
        "description": "AnyECG-XL (paper: 1.7B parameters)",
        "paper_parameters": 1_700_000_000,
        "tokenizer": _LARGE_TOKENIZER,
        "backbone": {"dim": 2048, "depth": 33, "n_heads": 32, "num_codes": 8192, "conv_channels": 16,
                     "amplitude_inputs": True},
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the named preset (safe to modify)."""
    if name not in PRESETS:
        raise KeyError(f"unknown AnyECG preset {name!r}; known: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def tokenizer_config(name: str, **overrides: Any) -> TokenizerConfig:
    """The preset's TokenizerConfig, with any field replaced by `overrides`."""
    return dataclasses.replace(TokenizerConfig(**get_preset(name)["tokenizer"]), **overrides)


def backbone_config(name: str, **overrides: Any) -> BackboneConfig:
    """The preset's BackboneConfig, with any field replaced by `overrides`."""
    return dataclasses.replace(BackboneConfig(**get_preset(name)["backbone"]), **overrides)


def build_tokenizer(name: str, **overrides: Any) -> Tokenizer:
    return Tokenizer(tokenizer_config(name, **overrides))


def build_backbone(name: str, **overrides: Any) -> Backbone:
    return Backbone(backbone_config(name, **overrides))


@lru_cache(maxsize=None)
def count_parameters(name: str) -> dict[str, int]:
    """{"tokenizer": n, "backbone": n} for a preset, counted on the meta device."""
    with torch.device("meta"):
        tokenizer, backbone = build_tokenizer(name), build_backbone(name)
    return {
        "tokenizer": sum(p.numel() for p in tokenizer.parameters()),
        "backbone": sum(p.numel() for p in backbone.parameters()),
    }


def list_presets() -> list[dict[str, Any]]:
    """One entry per preset, for `anyecg models --json`; `parameters` counts the backbone."""
    entries = []
    for name, preset in PRESETS.items():
        counts = count_parameters(name)
        backbone = preset["backbone"]
        entries.append({
            "name": name,
            "family": "anyecg",
            "parameters": counts["backbone"],
            "parameters_counted": "backbone (the stage-2 model)",
            "tokenizer_parameters": counts["tokenizer"],
            "paper_parameters": preset["paper_parameters"],
            "dim": backbone["dim"],
            "depth": backbone["depth"],
            "n_heads": backbone["n_heads"],
            "num_codes": backbone["num_codes"],
            "description": preset["description"],
        })
    return entries
