"""XResNet1d: the 1-D ResNet that led the PTB-XL benchmark (Strodthoff et al. 2020, "Deep learning
for ECG analysis: benchmarks and insights from PTB-XL", IEEE JBHI; xresnet1d101 macro AUROC .925).

The "x" is the ResNet-D of He et al. 2019 ("Bag of tricks for image classification"): a stem of
three convolutions instead of one wide one, the stride on the middle (kernel-k) convolution of a
bottleneck, an average pool before the 1x1 projection of a downsampling shortcut, and the last
BatchNorm of every residual branch initialised to zero so each block starts as the identity.

    x [B, C, T] --stem (3 convs, stride 2) + max pool--> [B, 64, T/4]
        --4 stages of blocks (strides 1, 2, 2, 2)--> [B, widths[-1] * expansion, T/32]
        --mean and max pool over time--> features [B, 2 * widths[-1] * expansion]

`layers` sets the depth: (3, 4, 23, 3) with expansion 4 is xresnet1d101, (3, 4, 6, 3) xresnet1d50
(the default), (2, 2, 2, 2) with expansion 1 xresnet1d18. Kernel size 5 throughout, as in the
benchmark's 1-D variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from anyecg.models.baselines.common import BaselineClassifier, BaselineConfig, concat_pool
from anyecg.models.contract import checked_input


@dataclass
class XResNet1dConfig(BaselineConfig):
    layers: tuple[int, ...] = (3, 4, 6, 3)  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # inner channels per stage (output = width * expansion)
    expansion: int = 4  # 4: bottleneck blocks (xresnet50/101), 1: basic blocks (xresnet18/34)
    stem_widths: tuple[int, ...] = (32, 32, 64)
    kernel_size: int = 5

    def __post_init__(self):
        super().__post_init__()
        self.layers, self.widths, self.stem_widths = tuple(self.layers), tuple(self.widths), tuple(self.stem_widths)
        if len(self.layers) != len(self.widths):
            raise ValueError(f"layers {self.layers} and widths {self.widths} must have one entry per stage")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {self.kernel_size}")


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True,
            zero_bn: bool = False) -> nn.Sequential:
    """Conv1d (no bias) + BatchNorm (+ ReLU); zero_bn starts the BatchNorm scale at 0."""
    bn = nn.BatchNorm1d(out_channels)
    nn.init.constant_(bn.weight, 0.0 if zero_bn else 1.0)
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    return nn.Sequential(conv, bn, nn.ReLU()) if relu else nn.Sequential(conv, bn)


class ResBlock(nn.Module):
    """ResNet-D block: relu(branch(x) + shortcut(x)); the shortcut pools then projects when shapes change."""

    def __init__(self, in_channels: int, width: int, expansion: int, stride: int, kernel_size: int):
        super().__init__()
        out_channels = width * expansion
        if expansion == 1:
            self.branch = nn.Sequential(
                conv_bn(in_channels, width, kernel_size, stride),
                conv_bn(width, out_channels, kernel_size, relu=False, zero_bn=True),
            )
        else:
            self.branch = nn.Sequential(
                conv_bn(in_channels, width, 1),
                conv_bn(width, width, kernel_size, stride),
                conv_bn(width, out_channels, 1, relu=False, zero_bn=True),
            )
        pool = nn.AvgPool1d(stride, ceil_mode=True) if stride > 1 else nn.Identity()
        project = conv_bn(in_channels, out_channels, 1, relu=False) if in_channels != out_channels else nn.Identity()
        self.shortcut = nn.Sequential(pool, project)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class XResNet1d(BaselineClassifier):
    def __init__(self, config: XResNet1dConfig):
        c = config
        super().__init__(config, num_features=2 * c.widths[-1] * c.expansion)
        stem_channels = (len(c.leads),) + c.stem_widths
        self.stem = nn.Sequential(
            *[conv_bn(stem_channels[i], stem_channels[i + 1], c.kernel_size, stride=2 if i == 0 else 1)
              for i in range(len(c.stem_widths))],
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages = []
        in_channels = c.stem_widths[-1]
        for stage, (n_blocks, width) in enumerate(zip(c.layers, c.widths)):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(ResBlock(in_channels, width, c.expansion, stride, c.kernel_size))
                in_channels = width * c.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

    def forward_features(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        x = checked_input(x, lead_mask, self.contract)  # [B, C, T]
        x = self.stem(x)  # [B, 64, T/4]
        x = self.stages(x)  # [B, widths[-1] * expansion, T/32]
        return concat_pool(x)  # [B, 2 * widths[-1] * expansion]
