"""DENS-ECG (Peimankar & Puthusserypady 2021, "DENS-ECG: A deep learning approach for ECG signal
delineation", Expert Systems with Applications 165): three 1-D convolutions (32, 64, 128 filters)
then two bidirectional LSTMs (250 and 125 units) and dropout.

The paper labels every sample (P, QRS, T, none); as a recording classifier, as the AnyECG paper
uses it, the per-step outputs of the last LSTM are pooled (mean and max over time) into one
embedding. As in `rnn1d`, the input is first averaged over `input_pool` samples (300 Hz -> 100 Hz)
so the recurrence stays short enough for a CPU.

    x [B, C, T] --average pool--> [B, C, T'] --3 x (Conv1d + ReLU)--> [B, 128, T']
        --BiLSTM 250 --> BiLSTM 125 --> dropout--> [B, T', 250]
        --mean and max over time--> features [B, 500]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import BaselineClassifier, BaselineConfig, concat_pool
from anyecg.models.contract import checked_input


@dataclass
class DensEcgConfig(BaselineConfig):
    conv_channels: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    lstm_hidden: tuple[int, ...] = (250, 125)  # units per direction of each BiLSTM
    dropout: float = 0.2
    input_pool: int = 3  # average this many samples before the convolutions (1 = full rate)

    def __post_init__(self):
        super().__post_init__()
        self.conv_channels, self.lstm_hidden = tuple(self.conv_channels), tuple(self.lstm_hidden)
        if not self.conv_channels or not self.lstm_hidden or self.input_pool < 1:
            raise ValueError(
                f"need at least one conv and one LSTM and input_pool >= 1, got conv_channels {self.conv_channels}, "
                f"lstm_hidden {self.lstm_hidden}, input_pool {self.input_pool}"
            )


class DensEcg(BaselineClassifier):
    def __init__(self, config: DensEcgConfig):
        c = config
        super().__init__(config, num_features=2 * 2 * c.lstm_hidden[-1])
        convs, in_channels = [], len(c.leads)
        for channels in c.conv_channels:
            convs += [nn.Conv1d(in_channels, channels, c.kernel_size, padding=c.kernel_size // 2), nn.ReLU()]
            in_channels = channels
        self.convs = nn.Sequential(*convs)
        lstms = []
        for hidden in c.lstm_hidden:
            lstms.append(nn.LSTM(in_channels, hidden, batch_first=True, bidirectional=True))
            in_channels = 2 * hidden
        self.lstms = nn.ModuleList(lstms)
        self.dropout = nn.Dropout(c.dropout)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        x = F.avg_pool1d(x, self.config.input_pool, ceil_mode=True)  # [B, C, T']
        x = self.convs(x).transpose(1, 2)  # [B, T', conv_channels[-1]]
        for lstm in self.lstms:
            x, _ = lstm(x)  # [B, T', 2 * hidden]
        x = self.dropout(x)
        return concat_pool(x.transpose(1, 2))  # [B, 4 * lstm_hidden[-1]]
