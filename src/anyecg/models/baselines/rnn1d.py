"""RNN1d: a stacked LSTM with concat pooling, the recurrent baseline of the PTB-XL benchmark
(Strodthoff et al. 2020: "lstm" and "lstm_bidir", 2 layers, pooled by the last output, mean and max).

    x [B, C, T] --average over `input_pool` samples--> [B, T', C]   (300 Hz -> 100 Hz by default)
        --LSTM (n_layers, optionally bidirectional)--> [B, T', H * dirs]
        --last output | mean | max over time--> features [B, 3 * H * dirs]

The benchmark ran its recurrent models at 100 Hz; averaging three samples brings the 300 Hz
contract rate to that and makes the recurrence three times shorter. For a bidirectional LSTM the
"last" output of the backward direction is the one at the first time step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import BaselineClassifier, BaselineConfig
from anyecg.models.contract import checked_input


@dataclass
class RNN1dConfig(BaselineConfig):
    hidden: int = 128  # LSTM units per direction
    n_layers: int = 2
    bidirectional: bool = False
    dropout: float = 0.0  # between LSTM layers
    input_pool: int = 3  # average this many samples per LSTM step (1 = every sample)

    def __post_init__(self):
        super().__post_init__()
        if self.input_pool < 1 or self.hidden < 1 or self.n_layers < 1:
            raise ValueError(
                f"input_pool, hidden and n_layers must be >= 1, got {self.input_pool}, {self.hidden}, {self.n_layers}"
            )


class RNN1d(BaselineClassifier):
    def __init__(self, config: RNN1dConfig):
        c = config
        directions = 2 if c.bidirectional else 1
        super().__init__(config, num_features=3 * c.hidden * directions)
        self.lstm = nn.LSTM(
            len(c.leads), c.hidden, c.n_layers, batch_first=True, bidirectional=c.bidirectional,
            dropout=c.dropout if c.n_layers > 1 else 0.0,
        )

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        x = F.avg_pool1d(x, self.config.input_pool, ceil_mode=True)  # [B, C, T']
        out, _ = self.lstm(x.transpose(1, 2))  # [B, T', H * dirs]
        H = self.config.hidden
        last = out[:, -1, :H] if not self.config.bidirectional else torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=1)
        return torch.cat([last, out.mean(dim=1), out.amax(dim=1)], dim=1)  # [B, 3 * H * dirs]
