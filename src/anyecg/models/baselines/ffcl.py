"""FFCL (Li et al. 2022, "Motor imagery EEG classification algorithm based on CNN-LSTM feature
fusion network", Biomedical Signal Processing and Control 72): a CNN branch and an LSTM branch read
the same input side by side; their features are concatenated (fused) before the classifier.

    CNN branch:  x [B, C, T] --strided 1-D residual blocks--> [B, widths[-1], T'] --mean--> [B, widths[-1]]
    LSTM branch: x [B, C, T] --fold `fold` consecutive samples into one step--> [B, T / fold, C * fold]
                 --LSTM (n_layers)--> output at the last step [B, hidden]
    features = ELU([cnn | lstm])  [B, widths[-1] + hidden]

Folding samples into steps (as BIOT's FFCL does) keeps the recurrence short: 150 steps for 10 s at
300 Hz with the default fold of 20.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import BaselineClassifier, BaselineConfig, ConvResBlock1d
from anyecg.models.contract import checked_input


@dataclass
class FFCLConfig(BaselineConfig):
    widths: tuple[int, ...] = (32, 64, 128)  # CNN branch: channels per residual block
    kernel_size: int = 7
    stride: int = 4  # per CNN block
    fold: int = 20  # samples per LSTM step
    hidden: int = 128
    n_layers: int = 2
    dropout: float = 0.5  # between LSTM layers

    def __post_init__(self):
        super().__post_init__()
        self.widths = tuple(self.widths)
        if self.kernel_size % 2 == 0 or self.fold < 1 or self.stride < 1:
            raise ValueError(
                f"need an odd kernel_size, fold >= 1 and stride >= 1, "
                f"got {self.kernel_size}, {self.fold} and {self.stride}"
            )


class FFCL(BaselineClassifier):
    def __init__(self, config: FFCLConfig):
        c = config
        super().__init__(config, num_features=c.widths[-1] + c.hidden)
        channels = (len(c.leads),) + c.widths
        self.cnn = nn.Sequential(
            *[ConvResBlock1d(channels[i], channels[i + 1], c.kernel_size, stride=c.stride)
              for i in range(len(c.widths))]
        )
        self.lstm = nn.LSTM(
            len(c.leads) * c.fold, c.hidden, c.n_layers, batch_first=True, dropout=c.dropout if c.n_layers > 1 else 0.0
        )

    def fold_steps(self, x: Tensor) -> Tensor:
        """x [B, C, T] -> [B, ceil(T / fold), C * fold]; the last step is zero-padded."""
        B, C, T = x.shape
        fold = self.config.fold
        x = F.pad(x, (0, -T % fold))  # [B, C, S * fold]
        return x.view(B, C, -1, fold).permute(0, 2, 1, 3).reshape(B, -1, C * fold)  # [B, S, C * fold]

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        cnn = self.cnn(x).mean(dim=-1)  # [B, widths[-1]]
        steps, _ = self.lstm(self.fold_steps(x))  # [B, S, hidden]
        return F.elu(torch.cat([cnn, steps[:, -1]], dim=1))  # [B, widths[-1] + hidden]
