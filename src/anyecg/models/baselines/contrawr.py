"""ContraWR's encoder (Yang et al. 2021, "Self-supervised EEG representation learning for automatic
sleep staging", arXiv 2110.15278) trained supervised: each lead's STFT magnitude spectrogram is one
input channel of a 2-D residual CNN. The paper pretrains this encoder contrastively; here it is a
supervised baseline, as in BIOT and the AnyECG paper.

    x [B, C, T] --|STFT| per lead (Hann window n_fft, hop)--> [B, C, F, frames]
        --len(widths) 2-D residual blocks (stride 2 + max pool 2 each)--> [B, widths[-1], F', frames']
        --mean over frequency and time, ELU--> features [B, widths[-1]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyecg.models.baselines.common import BaselineClassifier, BaselineConfig
from anyecg.models.contract import checked_input


@dataclass
class ContraWRConfig(BaselineConfig):
    n_fft: int = 256  # STFT window: 0.85 s at 300 Hz; F = n_fft // 2 + 1 frequency bins
    hop_length: int = 32
    widths: tuple[int, ...] = (32, 64, 128, 256)
    dropout: float = 0.5  # after every block

    def __post_init__(self):
        super().__post_init__()
        self.widths = tuple(self.widths)
        if not 0 < self.hop_length <= self.n_fft or self.n_fft // 2 >= self.contract.n_samples:
            raise ValueError(
                f"need 0 < hop_length <= n_fft and n_fft / 2 below the window's {self.contract.n_samples} samples, "
                f"got n_fft {self.n_fft}, hop_length {self.hop_length}"
            )


class ResBlock2d(nn.Module):
    """max_pool(BN(conv(relu(BN(conv_stride(x))))) + BN(conv_stride(x))), then dropout."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, stride: int = 2):
        super().__init__()
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.pool(self.branch(x) + self.shortcut(x)))


class ContraWR(BaselineClassifier):
    def __init__(self, config: ContraWRConfig):
        c = config
        super().__init__(config, num_features=c.widths[-1])
        self.register_buffer("window", torch.hann_window(c.n_fft), persistent=False)
        channels = (len(c.leads),) + c.widths
        self.blocks = nn.Sequential(
            *[ResBlock2d(channels[i], channels[i + 1], c.dropout) for i in range(len(c.widths))]
        )

    def spectrogram(self, x: Tensor) -> Tensor:
        """x [B, C, T] -> STFT magnitude [B, C, F, frames] (frames centred, reflect-padded).

        The transform runs in float32 whatever the input dtype (FFTs have no bf16 kernels)."""
        B, C, T = x.shape
        spec = torch.stft(
            x.reshape(B * C, T).float(), self.config.n_fft, self.config.hop_length, window=self.window.float(),
            normalized=True, center=True, return_complex=True,
        )  # [B * C, F, frames] complex
        return spec.abs().view(B, C, *spec.shape[1:]).to(x.dtype)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        x = self.blocks(self.spectrogram(x))  # [B, widths[-1], F', frames']
        return F.elu(x.mean(dim=(2, 3)))  # [B, widths[-1]]
