"""ECGFounder: a Net1D convolutional network trained multi-label on expert ECG diagnoses.

ECGFounder (Li et al., 2024) is a supervised 1-D CNN trained on 10M+ ECGs of the Harvard-Emory
ECG Database against 150 diagnostic labels, with a 12-lead and a single-lead model, fine-tuned for
downstream tasks. Its network, Net1D, is RegNet-like:

    x [B, C, 5000]  (10 s at 500 Hz, one channel per lead slot, absent leads zero)
      --stem: SAME conv k=16, stride 2 [+ BN] + Swish-->           [B, F0, 2500]
      --stage s (s = 1..S): M_s bottleneck blocks, the first strided--> [B, F_s, T / 2^(s+1)]
            block: [BN] Swish [Dropout] conv1x1 -> [BN] Swish [Dropout] grouped conv k, stride
                   -> [BN] Swish [Dropout] conv1x1 -> squeeze-and-excitation (reduction 2)
                   + shortcut (SAME max-pool when strided, zero-padded channels when widened)
      --mean over time--> features [B, F_S]                        (forward_features)
      --Linear--> logits [B, num_classes]                          (forward_head)

The published configuration (`ecgfounder-base`), as the public ECGFounder scripts build Net1D
(PKUDigitalHealth/ECGFounder `finetune_model.py`; scripts that load the released
`12_lead_ECGFounder.pth` build the same): in_channels 12, base_filters 64, ratio 1, filter_list
[64, 160, 160, 400, 400, 1024, 1024], m_blocks_list [2, 2, 2, 3, 3, 4, 4], kernel_size 16,
stride 2, groups_width 16, use_bn False, use_do False, n_classes 150. Our build of it has
30,752,646 parameters. The public Net1D module constructs its BatchNorm layers even when `use_bn`
is False (they are then never used) and counts 30,819,014; `load_reference_weights` skips those
unused entries. That the released weights were trained without BatchNorm and dropout is our
reading of those scripts; the architecture is as listed.

Supervised pretraining: `model(batch)` with `batch = {"x", "lead_mask", "targets" [B, K]}` returns
a `MultiLabelOutput` whose `.loss` is binary cross-entropy with logits (optionally `pos_weight`
per class), so `anyecg.training.loop.train` can run it; `anyecg.data.multilabel` builds the label
vocabulary and the windows. Fine-tuning: `reset_head(num_classes)` and, for a linear probe,
`freeze_backbone()`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.contract import SignalContract, checked_input
from anyecg.models.state import state_mismatches
from anyecg.signal.leads import CANONICAL_LEADS, STANDARD_12


@dataclass
class ECGFounderConfig:
    leads: tuple[str, ...] = STANDARD_12  # canonical name of each input channel
    fs: float = 500.0
    window_s: float = 10.0
    base_filters: int = 64  # stem output channels
    filter_list: tuple[int, ...] = (64, 160, 160, 400, 400, 1024, 1024)  # output channels of each stage
    m_blocks_list: tuple[int, ...] = (2, 2, 2, 3, 3, 4, 4)  # blocks per stage
    kernel_size: int = 16
    stem_stride: int = 2
    stride: int = 2  # downsampling of the first block of every stage
    groups_width: int = 16  # channels per group of the grouped conv: groups = stage channels // groups_width
    ratio: float = 1.0  # bottleneck width relative to the stage's channels
    se_reduction: int = 2
    use_bn: bool = False
    dropout: float = 0.0  # before every block convolution; the public Net1D's use_do means 0.5
    num_classes: int = 150  # 0: no head, forward returns the pooled features
    pos_weight: tuple[float, ...] | None = None  # per-class weight of positive targets in the loss
    frozen_backbone: bool = False  # linear probe: only the head trains, BatchNorm statistics fixed

    def __post_init__(self) -> None:
        # JSON round trips give lists; tuples keep a reloaded config equal to the original.
        self.leads = tuple(self.leads)
        self.filter_list = tuple(int(f) for f in self.filter_list)
        self.m_blocks_list = tuple(int(m) for m in self.m_blocks_list)
        if self.pos_weight is not None:
            self.pos_weight = tuple(float(w) for w in self.pos_weight)
        unknown = [lead for lead in self.leads if lead not in CANONICAL_LEADS]
        if not self.leads or unknown or len(set(self.leads)) != len(self.leads):
            raise ValueError(f"leads must be distinct canonical lead names, got {list(self.leads)} (unknown: {unknown})")
        if len(self.filter_list) != len(self.m_blocks_list) or not self.filter_list:
            raise ValueError(
                f"filter_list {list(self.filter_list)} and m_blocks_list {list(self.m_blocks_list)} "
                "must give one entry per stage"
            )
        if min(self.m_blocks_list) < 1:
            raise ValueError(f"every stage needs at least one block, got m_blocks_list {list(self.m_blocks_list)}")
        widths = (self.base_filters, *self.filter_list)
        if any(b < a for a, b in zip(widths, widths[1:])):
            raise ValueError(f"stage widths must not shrink (shortcuts zero-pad channels), got {list(widths)}")
        for width in self.filter_list:
            middle, groups = int(width * self.ratio), width // self.groups_width
            if groups < 1 or middle % groups:
                raise ValueError(
                    f"stage width {width}: bottleneck width {middle} is not divisible into "
                    f"{groups} groups (groups_width {self.groups_width}, ratio {self.ratio})"
                )
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.pos_weight is not None and len(self.pos_weight) != self.num_classes:
            raise ValueError(f"pos_weight has {len(self.pos_weight)} entries for {self.num_classes} classes")

    @property
    def contract(self) -> SignalContract:
        return SignalContract(fs=self.fs, window_s=self.window_s, leads=self.leads)

    @property
    def num_features(self) -> int:
        return self.filter_list[-1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ECGFounderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown ECGFounderConfig fields {unknown}; known: {sorted(names)}")
        return cls(**values)


@dataclass
class MultiLabelOutput:
    loss: Tensor  # scalar BCE with logits, mean over batch and classes
    logits: Tensor  # [B, K]
    n_positive: Tensor  # scalar: positive targets in the batch


def multilabel_loss(logits: Tensor, targets: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Binary cross-entropy with logits over [B, K], in float32 whatever the autocast dtype."""
    if logits.shape != targets.shape:
        raise ValueError(f"targets shape {tuple(targets.shape)} does not match logits {tuple(logits.shape)}")
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), pos_weight=pos_weight)


class SameConv1d(nn.Conv1d):
    """Conv1d with TensorFlow-style SAME padding: output length ceil(T / stride), extra pad on the right."""

    def forward(self, x: Tensor) -> Tensor:
        kernel, stride = self.kernel_size[0], self.stride[0]
        length = x.shape[-1]
        pad = max(0, (-(-length // stride) - 1) * stride + kernel - length)
        return super().forward(F.pad(x, (pad // 2, pad - pad // 2)))


def same_max_pool(x: Tensor, kernel: int) -> Tensor:
    """Max-pool [B, C, T] -> [B, C, ceil(T / kernel)]; padded with zeros as the public Net1D does."""
    pad = kernel - 1
    return F.max_pool1d(F.pad(x, (pad // 2, pad - pad // 2)), kernel)


class SqueezeExcite(nn.Module):
    """Channel gates from the time-mean: x * sigmoid(fc2(swish(fc1(mean_t x))))."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean(-1)))))  # [B, C]
        return x * gate[:, :, None]


def _pre_activation(channels: int, config: ECGFounderConfig) -> nn.Sequential:
    """[BatchNorm] -> Swish -> [Dropout]: what comes before each convolution of a block."""
    layers: list[nn.Module] = [nn.BatchNorm1d(channels)] if config.use_bn else []
    layers.append(nn.SiLU())
    if config.dropout > 0:
        layers.append(nn.Dropout(config.dropout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Pre-activation bottleneck: conv1x1 -> grouped conv k (strided if downsampling) -> conv1x1 -> SE."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool, config: ECGFounderConfig):
        super().__init__()
        middle = int(out_channels * config.ratio)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride = config.stride if downsample else 1
        # The very first block follows the stem's own activation, so it starts with the conv.
        self.act1 = nn.Identity() if first else _pre_activation(in_channels, config)
        self.conv1 = SameConv1d(in_channels, middle, 1)
        self.act2 = _pre_activation(middle, config)
        self.conv2 = SameConv1d(
            middle, middle, config.kernel_size, stride=self.stride, groups=out_channels // config.groups_width
        )
        self.act3 = _pre_activation(middle, config)
        self.conv3 = SameConv1d(middle, out_channels, 1)
        self.se = SqueezeExcite(out_channels, config.se_reduction)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.act1(x))  # [B, M, T]
        out = self.conv2(self.act2(out))  # [B, M, T / stride]
        out = self.se(self.conv3(self.act3(out)))  # [B, F, T / stride]
        shortcut = same_max_pool(x, self.stride) if self.stride > 1 else x  # [B, F_in, T / stride]
        extra = self.out_channels - self.in_channels
        if extra:
            shortcut = F.pad(shortcut, (0, 0, extra // 2, extra - extra // 2))  # [B, F, T / stride]
        return out + shortcut


class ECGFounder(nn.Module):
    def __init__(self, config: ECGFounderConfig):
        super().__init__()
        self.config = config
        stem: list[nn.Module] = [
            SameConv1d(len(config.leads), config.base_filters, config.kernel_size, stride=config.stem_stride)
        ]
        if config.use_bn:
            stem.append(nn.BatchNorm1d(config.base_filters))
        stem.append(nn.SiLU())
        self.stem = nn.Sequential(*stem)
        stages, width = [], config.base_filters
        for index, (out_width, n_blocks) in enumerate(zip(config.filter_list, config.m_blocks_list)):
            blocks = [
                Bottleneck(width if b == 0 else out_width, out_width, downsample=b == 0, first=index == 0 and b == 0,
                           config=config)
                for b in range(n_blocks)
            ]
            stages.append(nn.Sequential(*blocks))
            width = out_width
        self.stages = nn.Sequential(*stages)
        self.head = self._new_head(config.num_classes)
        self.register_buffer("pos_weight", self._pos_weight_tensor(config), persistent=False)
        if config.frozen_backbone:
            self.freeze_backbone()

    @property
    def num_features(self) -> int:
        return self.config.num_features

    @property
    def n_outputs(self) -> int:
        return self.config.num_classes or self.num_features

    def _new_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _pos_weight_tensor(config: ECGFounderConfig) -> Tensor | None:
        return None if config.pos_weight is None else torch.tensor(config.pos_weight, dtype=torch.float32)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """x [B, C, T] (C = len(leads), T = fs * window_s) -> pooled features [B, D]."""
        x = checked_input(x, lead_mask, self.config.contract)  # absent leads read as zero
        h = self.stem(x)  # [B, F0, T / 2]
        h = self.stages(h)  # [B, D, T / 2^(S+1)]
        return h.mean(dim=-1)  # [B, D]

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """features [B, D] -> logits [B, num_classes] (features themselves when pre_logits or no head)."""
        return features if pre_logits else self.head(features)

    def embed(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        return self.forward_features(x, lead_mask)

    def forward(self, x: Tensor | Mapping[str, Any], lead_mask: Tensor | None = None) -> Tensor | MultiLabelOutput:
        """Logits [B, n_outputs] for a tensor; for a batch dict (`x`, `lead_mask`, `targets`) the
        supervised multi-label output with `.loss`, which is what the training loop calls."""
        if isinstance(x, Mapping):
            return self.supervised(x)
        return self.forward_head(self.forward_features(x, lead_mask))

    def supervised(self, batch: Mapping[str, Any]) -> MultiLabelOutput:
        if self.config.num_classes == 0:
            raise ValueError("the model has no head (num_classes 0): call reset_head(num_classes) before training")
        if batch.get("targets") is None:
            raise ValueError(f"a training batch needs 'targets' [B, K]; got keys {sorted(batch)}")
        logits = self.forward_head(self.forward_features(batch["x"], batch.get("lead_mask")))  # [B, K]
        targets = batch["targets"]  # [B, K]
        loss = multilabel_loss(logits, targets, self.pos_weight)
        return MultiLabelOutput(loss=loss, logits=logits, n_positive=targets.detach().sum())

    def reset_head(self, num_classes: int, pos_weight: tuple[float, ...] | None = None) -> None:
        """A fresh head for `num_classes` outputs (0: none), e.g. before fine-tuning on a new task."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes, pos_weight=pos_weight)
        reference = next(self.stem.parameters())
        self.head = self._new_head(num_classes).to(device=reference.device, dtype=reference.dtype)
        weights = self._pos_weight_tensor(self.config)
        self.pos_weight = None if weights is None else weights.to(reference.device)

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Linear probe: stem and stages stop learning and keep their BatchNorm statistics; the head trains."""
        self.config = dataclasses.replace(self.config, frozen_backbone=frozen)
        for module in (self.stem, self.stages):
            for parameter in module.parameters():
                parameter.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "ECGFounder":
        super().train(mode)
        if self.config.frozen_backbone:
            self.stem.eval()
            self.stages.eval()
        return self


# Parameter names of the public Net1D -> ours (its checkpoints are `{"state_dict": ...}` of these).
_REFERENCE_NAMES = [
    (re.compile(r"first_conv\.conv\.(.+)"), r"stem.0.\1"),
    (re.compile(r"first_bn\.(.+)"), r"stem.1.\1"),
    (re.compile(r"stage_list\.(\d+)\.block_list\.(\d+)\.conv([123])\.conv\.(.+)"), r"stages.\1.\2.conv\3.\4"),
    (re.compile(r"stage_list\.(\d+)\.block_list\.(\d+)\.bn([123])\.(.+)"), r"stages.\1.\2.act\3.0.\4"),
    (re.compile(r"stage_list\.(\d+)\.block_list\.(\d+)\.se_fc([12])\.(.+)"), r"stages.\1.\2.se.fc\3.\4"),
    (re.compile(r"dense\.(.+)"), r"head.\1"),
]
_REFERENCE_BATCH_NORM = re.compile(r"(^first_bn\.|\.bn[123]\.)")


def _at_batch_norm_default(name: str, value: Tensor) -> bool:
    """True when a BatchNorm entry still holds its initial value (the layer never trained)."""
    field = name.rsplit(".", 1)[-1]
    default = {"weight": 1.0, "running_var": 1.0, "bias": 0.0, "running_mean": 0.0, "num_batches_tracked": 0.0}
    return field in default and bool((value == default[field]).all())


def load_reference_weights(
    model: ECGFounder, state_dict: Mapping[str, Tensor], *, include_head: bool = True, source: str = "Net1D state dict"
) -> list[str]:
    """Load a state dict of the public Net1D (e.g. the released ECGFounder checkpoints) into `model`.

    `module.` prefixes (DataParallel) are dropped. BatchNorm entries the model does not use (all
    of them when `use_bn` is False; the first block's bn1 always) must hold their initial values
    (weight 1, bias 0, running mean 0, variance 1, no batches): they are skipped and returned. A
    checkpoint whose unused BatchNorm layers did train, or with any missing, unexpected or
    misshaped name, raises, listing them. `include_head=False` keeps the model's own head.
    """
    converted, skipped, trained_norms = {}, [], []
    expected = model.state_dict()
    for name, value in state_dict.items():
        name = name.removeprefix("module.")
        if not include_head and name.startswith("dense."):
            continue
        ours = next((pattern.sub(target, name) for pattern, target in _REFERENCE_NAMES if pattern.fullmatch(name)), None)
        if ours not in expected and _REFERENCE_BATCH_NORM.search(name):
            (skipped if _at_batch_norm_default(name, value) else trained_norms).append(name)
        else:
            converted[ours if ours is not None else name] = value
    # without the checkpoint's head the model keeps its own
    own_head = {} if include_head else {k: v for k, v in expected.items() if k.startswith("head.")}
    filled = {**own_head, **converted}
    missing, unexpected, misshaped = state_mismatches(expected, filled)
    misshaped = [f"{k}: {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}" for k in misshaped]
    if trained_norms:
        raise ValueError(
            f"{source}: BatchNorm entries the network does not use (use_bn {model.config.use_bn}) are not at "
            f"their initial values, so the checkpoint was trained with them: {sorted(trained_norms)[:10]}"
        )
    if missing or unexpected or misshaped:
        raise ValueError(
            f"{source} does not match the model ({len(model.config.leads)} leads, "
            f"filters {list(model.config.filter_list)}): missing {missing[:10]}, unexpected {unexpected[:10]}, "
            f"misshaped {misshaped[:10]}"
        )
    model.load_state_dict(filled, strict=True)
    return skipped


# CPU sizes train from scratch in minutes; BatchNorm makes that reliable at small widths.
_CPU = {"use_bn": True}

PRESETS: dict[str, dict[str, Any]] = {
    "ecgfounder-base": {
        "description": "ECGFounder 12-lead, the published Net1D configuration (150 classes)",
        "config": {},
    },
    "ecgfounder-1lead": {
        "description": "ECGFounder single-lead (lead I), the published Net1D configuration on one channel",
        "config": {"leads": ("I",)},
    },
    "ecgfounder-small": {
        "description": "laptop-CPU Net1D: the narrow stage widths listed in the public ECGFounder code, two blocks per stage",
        "config": {
            "base_filters": 16, "filter_list": (16, 32, 32, 80, 80, 256, 256), "m_blocks_list": (2,) * 7,
            **_CPU,
        },
    },
    "ecgfounder-tiny": {
        "description": "test-scale Net1D for unit tests and CPU smoke runs",
        "config": {
            "base_filters": 8, "filter_list": (8, 16, 32, 64), "m_blocks_list": (1, 1, 1, 1),
            "kernel_size": 8, "groups_width": 8, **_CPU,
        },
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the named preset (safe to modify)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ECGFounder preset {name!r}; known: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def ecgfounder_config(name: str, **overrides: Any) -> ECGFounderConfig:
    """The preset's config with any field replaced by `overrides` (e.g. num_classes=K)."""
    return ECGFounderConfig(**{**get_preset(name)["config"], **overrides})


def build_ecgfounder(name: str, **overrides: Any) -> ECGFounder:
    return ECGFounder(ecgfounder_config(name, **overrides))


@lru_cache(maxsize=None)
def count_parameters(name: str) -> int:
    """Parameters of a preset, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = build_ecgfounder(name)
    return sum(p.numel() for p in model.parameters())


def list_presets() -> list[dict[str, Any]]:
    """One entry per preset, for `anyecg models --json`."""
    entries = []
    for name, preset in PRESETS.items():
        config = ecgfounder_config(name)
        entries.append({
            "name": name,
            "family": "ecgfounder",
            "parameters": count_parameters(name),
            "fs": int(config.fs),
            "window_s": int(config.window_s),
            "leads": list(config.leads),
            "num_classes": config.num_classes,
            "num_features": config.num_features,
            "description": preset["description"],
        })
    return entries
