"""Linear lead reconstruction: every target lead as a fixed linear combination of the present leads
at the same instant, y[:, t] = W x[:, t] + b.

The classic way to derive leads from a reduced set (Dower et al. 1988 derived the 12 leads from the
Frank leads with one fixed matrix; Nelwan et al. 2004 fitted patient-specific matrices by least
squares). Einthoven's and Goldberger's relations (III = II - I, aVR = -(I + II) / 2, ...) are
exactly of this form, so a fitted model recovers them. The baseline for learned lead generators.

`fit_least_squares` solves for (W, b) in closed form over every time step of the examples;
`LinearLeadGenerator` applies them as a 1x1 convolution and can also be trained by gradient descent
(`model(batch)` with `x`, optional `lead_mask` and `targets [B, C_out, T]` returns the mean squared
error as `.loss`, for `anyecg.training.loop`).

    x [B, C_in, T] --1x1 conv (W [C_out, C_in], b [C_out])--> y [B, C_out, T]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from anyecg.models.baselines.common import LeadGenConfig
from anyecg.models.contract import checked_input


def fit_least_squares(x_present: np.ndarray, y_target: np.ndarray, bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(W [C_out, C_in], b [C_out]) minimising sum over examples and time of ||y[:, t] - W x[:, t] - b||^2.

    x_present [..., C_in, T] and y_target [..., C_out, T] share their leading shape and T (one
    recording [C, T] or a batch [B, C, T]). Solved in float64 with numpy's lstsq (minimum-norm
    solution when the present leads are linearly dependent). With bias=False, b is zero.
    """
    x, y = np.asarray(x_present, dtype=np.float64), np.asarray(y_target, dtype=np.float64)
    if x.ndim < 2 or x.shape[:-2] != y.shape[:-2] or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x_present [..., C_in, T] and y_target [..., C_out, T] must share leading shape and T, "
            f"got {x.shape} and {y.shape}"
        )
    rows = np.moveaxis(x, -2, -1).reshape(-1, x.shape[-2])  # [M, C_in], one row per time step
    targets = np.moveaxis(y, -2, -1).reshape(-1, y.shape[-2])  # [M, C_out]
    if bias:
        rows = np.concatenate([rows, np.ones((len(rows), 1))], axis=1)  # [M, C_in + 1]
    solution, *_ = np.linalg.lstsq(rows, targets, rcond=None)  # [C_in (+ 1), C_out]
    weight = solution[: x.shape[-2]].T  # [C_out, C_in]
    offset = solution[-1] if bias else np.zeros(y.shape[-2])  # [C_out]
    return weight, offset


@dataclass
class LeadGenOutput:
    loss: Tensor  # scalar mean squared error over leads and samples
    mae: Tensor  # scalar mean absolute error
    generated: Tensor  # [B, C_out, T]


class LinearLeadGenerator(nn.Module):
    def __init__(self, config: LeadGenConfig):
        super().__init__()
        self.config = config
        self.contract = config.contract
        self.mix = nn.Conv1d(len(config.leads), len(config.target_leads), 1)  # weight [C_out, C_in, 1]

    @torch.no_grad()
    def fit(self, x_present: np.ndarray, y_target: np.ndarray) -> "LinearLeadGenerator":
        """Set W and b to the least-squares solution on these examples (see `fit_least_squares`)."""
        expected = (len(self.config.leads), len(self.config.target_leads))
        if (np.shape(x_present)[-2], np.shape(y_target)[-2]) != expected:
            raise ValueError(
                f"fit needs {expected[0]} input leads {list(self.config.leads)} and {expected[1]} target leads "
                f"{list(self.config.target_leads)}, got arrays of shape {np.shape(x_present)} and {np.shape(y_target)}"
            )
        weight, offset = fit_least_squares(x_present, y_target)
        self.mix.weight.copy_(torch.as_tensor(weight)[:, :, None])
        self.mix.bias.copy_(torch.as_tensor(offset))
        return self

    def forward(self, x: Tensor | Mapping[str, Any], lead_mask: Tensor | None = None) -> Tensor | LeadGenOutput:
        """x [B, C_in, T] -> generated target leads [B, C_out, T] (absent inputs count as zero);
        a batch dict (`x`, `lead_mask`, `targets`) gives the LeadGenOutput the training loop needs."""
        if isinstance(x, Mapping):
            return self.supervised(x)
        return self.mix(checked_input(x, lead_mask, self.contract))

    def supervised(self, batch: Mapping[str, Any]) -> LeadGenOutput:
        generated = self(batch["x"], batch.get("lead_mask"))  # [B, C_out, T]
        targets = batch.get("targets")
        if targets is None or tuple(targets.shape) != tuple(generated.shape):
            raise ValueError(
                f"a training batch needs 'targets' of shape {tuple(generated.shape)} "
                f"({list(self.config.target_leads)}), got {None if targets is None else tuple(targets.shape)}"
            )
        error = generated.float() - targets.float()
        return LeadGenOutput(loss=error.square().mean(), mae=error.abs().mean().detach(), generated=generated)
