"""What every baseline shares: the signal contract in its config, input checks, the head, the API.

A classification baseline maps `x [B, C, T]` (C = len(config.leads), T = fs * window_s; see
`anyecg.models.contract`) to a pooled embedding `[B, D]` (`forward_features`), then to
`num_classes` logits (`forward_head`). `num_classes = 0` leaves the head out: `forward` then
returns the embedding. Absent leads (lead_mask False) are zeroed before the model sees them, so
a caller's stray values in an absent slot never leak in.

Training through `anyecg.training.loop`: `model(batch)` with a dict batch (`x`, optional
`lead_mask`, `targets`) returns a `ClassificationOutput` whose `.loss` is the cross-entropy for
class indices `targets [B]` (long) or the binary cross-entropy for multi-label `targets [B, K]`
(float); `reset_head(num_classes)` puts a fresh head on an encoder first.

A lead generator (`LeadGenConfig`) reads `leads` and writes `target_leads` at the same rate and
window: `x [B, len(leads), T]` -> `y [B, len(target_leads), T]`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.contract import SignalContract
from anyecg.signal.leads import STANDARD_12


@dataclass
class BaselineConfig:
    fs: float = 300.0  # Hz the model expects
    window_s: float = 10.0  # seconds per input window
    leads: tuple[str, ...] = STANDARD_12  # canonical lead name of each input channel
    num_classes: int = 0  # outputs of the linear head; 0 = no head (forward returns the embedding)
    head_dropout: float = 0.0  # dropout on the pooled embedding before the head

    def __post_init__(self):
        self.leads = tuple(self.leads)  # a JSON round trip turns the tuple into a list
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")

    @property
    def contract(self) -> SignalContract:
        return SignalContract(self.fs, self.window_s, self.leads)


@dataclass
class LeadGenConfig:
    """Lead generation: the leads a model reads (`leads`) and the leads it writes (`target_leads`)."""

    fs: float = 300.0  # Hz the model expects
    window_s: float = 10.0  # seconds per input window
    leads: tuple[str, ...] = ("I",)  # input leads (canonical names), one channel each
    target_leads: tuple[str, ...] = tuple(name for name in STANDARD_12 if name != "I")  # leads to generate

    def __post_init__(self):
        self.leads, self.target_leads = tuple(self.leads), tuple(self.target_leads)
        if not self.leads or not self.target_leads:
            raise ValueError(f"need at least one input and one target lead, got {self.leads} -> {self.target_leads}")

    @property
    def contract(self) -> SignalContract:
        return SignalContract(self.fs, self.window_s, self.leads)

    @property
    def target_contract(self) -> SignalContract:
        """The contract of the output (and of the targets it is trained against)."""
        return SignalContract(self.fs, self.window_s, self.target_leads)


@dataclass
class ClassificationOutput:
    loss: Tensor  # scalar
    logits: Tensor  # [B, num_classes]
    accuracy: Tensor  # scalar: top-1 for class indices, mean per-label accuracy for multi-label targets


def classification_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(loss, accuracy) in float32: cross-entropy for class indices [B] (integer), binary
    cross-entropy with logits for multi-label targets [B, K] (float, 0/1)."""
    logits = logits.float()
    if targets.dtype in (torch.int32, torch.int64) and targets.shape == logits.shape[:1]:
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return F.cross_entropy(logits, targets.long()), accuracy.detach()
    if targets.is_floating_point() and targets.shape == logits.shape:
        accuracy = ((logits > 0) == (targets > 0.5)).float().mean()
        return F.binary_cross_entropy_with_logits(logits, targets.float()), accuracy.detach()
    raise ValueError(
        f"targets must be class indices [B] (integer) or multi-label [B, K] (float) for logits "
        f"{tuple(logits.shape)}, got {targets.dtype} {tuple(targets.shape)}"
    )


class BaselineClassifier(nn.Module):
    """Base of the classification baselines: subclasses build their encoder and define `forward_features`."""

    def __init__(self, config: BaselineConfig, num_features: int):
        super().__init__()
        self.config = config
        self.contract = config.contract
        self.num_features = num_features  # D of the pooled embedding
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(num_features, config.num_classes) if config.num_classes > 0 else nn.Identity()

    @property
    def n_outputs(self) -> int:
        return self.config.num_classes or self.num_features

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """features [B, D] -> logits [B, num_classes], or the (dropped-out) features when pre_logits."""
        features = self.head_drop(features)
        return features if pre_logits else self.head(features)

    def forward(
        self, x: Tensor | Mapping[str, Any], lead_mask: Tensor | None = None
    ) -> Tensor | ClassificationOutput:
        """Logits [B, n_outputs] for a tensor; for a batch dict (`x`, `lead_mask`, `targets`) the
        supervised output with `.loss`, which is what the training loop calls."""
        if isinstance(x, Mapping):
            return self.supervised(x)
        return self.forward_head(self.forward_features(x, lead_mask))

    def supervised(self, batch: Mapping[str, Any]) -> ClassificationOutput:
        if self.config.num_classes == 0:
            raise ValueError("the model has no head (num_classes 0): call reset_head(num_classes) before training")
        if batch.get("targets") is None:
            raise ValueError(f"a training batch needs 'targets' ([B] indices or [B, K]); got keys {sorted(batch)}")
        logits = self.forward_head(self.forward_features(batch["x"], batch.get("lead_mask")))  # [B, K]
        loss, accuracy = classification_loss(logits, batch["targets"])
        return ClassificationOutput(loss=loss, logits=logits, accuracy=accuracy)

    def embed(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Pooled embedding [B, D] (same as forward_features)."""
        return self.forward_features(x, lead_mask)

    def reset_head(self, num_classes: int) -> None:
        """A fresh head for `num_classes` outputs (0: none), e.g. before fine-tuning on a new task."""
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        reference = next(self.parameters())
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head = head.to(device=reference.device, dtype=reference.dtype)


def concat_pool(x: Tensor) -> Tensor:
    """[B, C, T] -> [B, 2C]: mean and max over time side by side (fastai AdaptiveConcatPool)."""
    return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)


def sinusoidal_positions(n_positions: int, dim: int) -> Tensor:
    """[n_positions, dim] fixed sine/cosine position table (Vaswani et al. 2017)."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]  # [N, 1]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # [dim / 2]
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


def transformer_encoder(dim: int, n_heads: int, depth: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    """Pre-norm GELU transformer encoder, batch first (attention runs through scaled_dot_product_attention)."""
    layer = nn.TransformerEncoderLayer(
        dim, n_heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
    )
    # No nested-tensor fast path: it only applies to post-norm layers and would warn.
    return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)


class ConvResBlock1d(nn.Module):
    """relu(BN(conv(relu(BN(conv_stride(x))))) + BN(conv1x1_stride(x))): a strided 1-D residual block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        padding = kernel_size // 2
        self.branch = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(),
            nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm1d(out_channels)
        )
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch(x) + self.shortcut(x))  # [B, out_channels, ceil(T / stride)]
