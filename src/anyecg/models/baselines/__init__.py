"""Downstream baselines: the supervised models the AnyECG paper compares against, under one API.

Classification (`x [B, C, T]` -> logits; `forward_features` gives the pooled embedding
`[B, D]`, `forward_head` the logits, `num_classes = 0` drops the head): xresnet1d, inception1d,
rnn1d, dens_ecg, cnn_transformer, contrawr, ffcl, st_transformer.
Lead generation (`x [B, C_in, T]` -> `y [B, C_out, T]`): leadgen_linear (least squares),
leadgen_gan (CGAN / WGAN-GP, trained by its own `GanTrainer`).

Every config states its signal contract (`fs`, `window_s`, `leads`; 300 Hz, 10 s, the 12 standard
leads by default); `anyecg.models.contract.to_model_input` brings any recording to it.

    model = build_baseline("xresnet1d101", num_classes=5)
    model = build_baseline("rnn1d", leads=("I",), bidirectional=True)

Training: a classifier or the linear generator called on a dict batch (`x`, `lead_mask`,
`targets`) returns an output with a scalar `.loss`, so `anyecg.training.loop.train` trains it;
checkpoint its config as `{"family": "baseline", "model": name, "config": dataclasses.asdict(config)}`
and rebuild with `build_baseline(model, **config)`. The GAN alternates two optimisers and has its
own loop (`leadgen_gan.GanTrainer`).

`BASELINES` maps a model name to its (config class, model class); `PRESETS` names configurations
(each model's defaults under its own name, plus variants such as xresnet1d101).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from anyecg.models.baselines.cnn_transformer import CNNTransformer, CNNTransformerConfig
from anyecg.models.baselines.common import BaselineConfig, LeadGenConfig
from anyecg.models.baselines.contrawr import ContraWR, ContraWRConfig
from anyecg.models.baselines.dens_ecg import DensEcg, DensEcgConfig
from anyecg.models.baselines.ffcl import FFCL, FFCLConfig
from anyecg.models.baselines.inception1d import Inception1d, Inception1dConfig
from anyecg.models.baselines.leadgen_gan import LeadGenGAN, LeadGenGANConfig
from anyecg.models.baselines.leadgen_linear import LinearLeadGenerator
from anyecg.models.baselines.rnn1d import RNN1d, RNN1dConfig
from anyecg.models.baselines.st_transformer import STTransformer, STTransformerConfig
from anyecg.models.baselines.xresnet1d import XResNet1d, XResNet1dConfig

BASELINES: dict[str, tuple[type, type[nn.Module]]] = {
    "xresnet1d": (XResNet1dConfig, XResNet1d),
    "inception1d": (Inception1dConfig, Inception1d),
    "rnn1d": (RNN1dConfig, RNN1d),
    "dens_ecg": (DensEcgConfig, DensEcg),
    "cnn_transformer": (CNNTransformerConfig, CNNTransformer),
    "contrawr": (ContraWRConfig, ContraWR),
    "ffcl": (FFCLConfig, FFCL),
    "st_transformer": (STTransformerConfig, STTransformer),
    "leadgen_linear": (LeadGenConfig, LinearLeadGenerator),
    "leadgen_gan": (LeadGenGANConfig, LeadGenGAN),
}

PRESETS: dict[str, dict[str, Any]] = {
    "xresnet1d": {
        "model": "xresnet1d", "config": {},
        "description": "XResNet1d, xresnet1d50 layout (Strodthoff et al. 2020)",
    },
    "xresnet1d-tiny": {
        "model": "xresnet1d",
        "config": {"layers": (1, 1, 1, 1), "expansion": 1, "widths": (16, 32, 64, 128), "stem_widths": (16, 16, 32)},
        "description": "XResNet1d, one basic block per stage at quarter width (smoke runs)",
    },
    "xresnet1d18": {
        "model": "xresnet1d", "config": {"layers": (2, 2, 2, 2), "expansion": 1},
        "description": "XResNet1d with basic blocks, 18 layers",
    },
    "xresnet1d101": {
        "model": "xresnet1d", "config": {"layers": (3, 4, 23, 3)},
        "description": "XResNet1d101, the PTB-XL benchmark's best model",
    },
    "inception1d": {
        "model": "inception1d", "config": {},
        "description": "InceptionTime as benchmarked on PTB-XL",
    },
    "rnn1d": {
        "model": "rnn1d", "config": {},
        "description": "2-layer LSTM with concat pooling (PTB-XL 'lstm')",
    },
    "rnn1d-bidir": {
        "model": "rnn1d", "config": {"bidirectional": True},
        "description": "2-layer bidirectional LSTM (PTB-XL 'lstm_bidir')",
    },
    "dens_ecg": {
        "model": "dens_ecg", "config": {},
        "description": "DENS-ECG: 3 convolutions + 2 BiLSTMs, pooled",
    },
    "cnn_transformer": {
        "model": "cnn_transformer", "config": {},
        "description": "1-D residual CNN + transformer encoder",
    },
    "contrawr": {
        "model": "contrawr", "config": {},
        "description": "ContraWR encoder: STFT spectrogram + 2-D residual CNN",
    },
    "ffcl": {
        "model": "ffcl", "config": {},
        "description": "FFCL: fused CNN and LSTM features",
    },
    "st_transformer": {
        "model": "st_transformer", "config": {},
        "description": "ST-Transformer: attention over leads, then over time patches",
    },
    "leadgen_linear": {
        "model": "leadgen_linear", "config": {},
        "description": "per-instant linear map from the present leads to the target leads",
    },
    "leadgen_gan": {
        "model": "leadgen_gan", "config": {},
        "description": "1-D U-Net generator + patch critic, WGAN-GP + L1",
    },
    "leadgen_cgan": {
        "model": "leadgen_gan", "config": {"loss": "cgan"},
        "description": "1-D U-Net generator + patch discriminator, conditional GAN + L1 (pix2pix)",
    },
}


def baseline_config(name: str, **config: Any) -> BaselineConfig | LeadGenConfig:
    """The config of a model or preset `name`, with any field replaced by `config`."""
    if name not in PRESETS:
        raise KeyError(f"unknown baseline {name!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[name]
    config_class, _ = BASELINES[preset["model"]]
    known = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"{config_class.__name__} has no field(s) {unknown}; fields: {sorted(known)}")
    return config_class(**{**preset["config"], **config})


def build_baseline(name: str, **config: Any) -> nn.Module:
    """The model of a model or preset `name` (see `PRESETS`), with config fields overridden by `config`."""
    model_config = baseline_config(name, **config)  # raises KeyError naming the known presets
    _, model_class = BASELINES[PRESETS[name]["model"]]
    return model_class(model_config)


@lru_cache(maxsize=None)
def count_parameters(name: str) -> dict[str, int]:
    """Parameters of a preset without a head, counted on the meta device: {"model": n} plus, for a GAN,
    {"generator": n, "discriminator": n}."""
    with torch.device("meta"):
        model = build_baseline(name)
    counts = {"model": sum(p.numel() for p in model.parameters())}
    if isinstance(model, LeadGenGAN):
        counts["generator"] = sum(p.numel() for p in model.generator.parameters())
        counts["discriminator"] = sum(p.numel() for p in model.discriminator.parameters())
    return counts


def list_presets() -> list[dict[str, Any]]:
    """One entry per preset, for `anyecg models --json`.

    `parameters` counts what runs at inference: the encoder of a classifier (no head, as its size
    depends on the task), the generator of a GAN (its discriminator is `discriminator_parameters`).
    """
    entries = []
    for name, preset in PRESETS.items():
        config = baseline_config(name)
        counts = count_parameters(name)
        generation = isinstance(config, LeadGenConfig)
        entry = {
            "name": name,
            "family": "baseline",
            "model": preset["model"],
            "task": "lead_generation" if generation else "classification",
            "parameters": counts.get("generator", counts["model"]),
            "fs": config.fs,
            "window_s": config.window_s,
            "leads": list(config.leads),
            "description": preset["description"],
        }
        if generation:
            entry["target_leads"] = list(config.target_leads)
        if "discriminator" in counts:
            entry["discriminator_parameters"] = counts["discriminator"]
        entries.append(entry)
    return entries


__all__ = ["BASELINES", "PRESETS", "baseline_config", "build_baseline", "count_parameters", "list_presets"]
