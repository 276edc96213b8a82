"""CNN-Transformer: a convolutional front end whose feature sequence a transformer encoder reads
(Peh et al. 2022, "Transformer convolutional neural networks for automated artifact detection in
scalp EEG", EMBC; a baseline in BIOT, LaBraM and the AnyECG paper).

Here the front end runs strided 1-D residual blocks on the raw leads (the BIOT version convolves
per-segment spectrograms); each output step is one token.

    x [B, C, T] --len(widths) residual blocks, stride 2 each--> [B, D, N]   (N = T / 16 by default)
        --+ sinusoidal positions, transformer encoder (pre-norm)--> [B, N, D]
        --mean over tokens--> features [B, D]
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from anyecg.models.baselines.common import (
    BaselineClassifier,
    BaselineConfig,
    ConvResBlock1d,
    sinusoidal_positions,
    transformer_encoder,
)
from anyecg.models.contract import checked_input


@dataclass
class CNNTransformerConfig(BaselineConfig):
    widths: tuple[int, ...] = (32, 64, 128, 128)  # channels of each stride-2 block; the last is the model dim
    kernel_size: int = 7
    n_heads: int = 4
    depth: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        self.widths = tuple(self.widths)
        if self.kernel_size % 2 == 0 or self.widths[-1] % self.n_heads != 0:
            raise ValueError(
                f"kernel_size must be odd and the model dim widths[-1] divisible by n_heads, "
                f"got kernel_size {self.kernel_size}, widths {self.widths}, n_heads {self.n_heads}"
            )

    @property
    def n_tokens(self) -> int:
        n = self.contract.n_samples
        for _ in self.widths:
            n = -(-n // 2)  # each stride-2 block: ceil(n / 2)
        return n


class CNNTransformer(BaselineClassifier):
    def __init__(self, config: CNNTransformerConfig):
        c = config
        super().__init__(config, num_features=c.widths[-1])
        channels = (len(c.leads),) + c.widths
        self.front = nn.Sequential(
            *[ConvResBlock1d(channels[i], channels[i + 1], c.kernel_size, stride=2) for i in range(len(c.widths))]
        )
        self.register_buffer("positions", sinusoidal_positions(c.n_tokens, c.widths[-1]), persistent=False)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = transformer_encoder(c.widths[-1], c.n_heads, c.depth, c.mlp_ratio, c.dropout)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        tokens = self.front(x).transpose(1, 2)  # [B, N, D]
        tokens = self.encoder(self.drop(tokens + self.positions))  # [B, N, D]
        return tokens.mean(dim=1)  # [B, D]
