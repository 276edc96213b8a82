"""Per-lead amplitude normalisation, computed per recording and stored beside the signal.

The store keeps cleaned signals in mV and the (offset, scale) of every lead; normalisation is
applied on read as (signal - offset) / scale. Methods (`Recipe.normalization`):
- "zscore": offset = mean, scale = standard deviation (the default);
- "robust": offset = median, scale = interquartile range / 1.349 (equals the standard deviation
  for Gaussian data, and ignores a few huge artefacts);
- "none": offset 0, scale 1 (the signal stays in mV).
A flat lead (a disconnected electrode) would have scale 0: scales are floored at
`Recipe.normalization_eps` (1 uV by default, about one ADC step), so such a lead comes out as zeros
and never as NaN or amplified rounding noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anyecg.signal.recipe import Recipe

NORMALIZATIONS = ("zscore", "robust", "none")
IQR_TO_SIGMA = 1.349  # interquartile range of N(0, 1)


def normalization_stats(signal: np.ndarray, method: str = "zscore", eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(offset, scale), float32 [L] each, of `signal` [L, T] for `method`."""
    signal = np.asarray(signal)
    if signal.ndim != 2 or signal.shape[1] == 0:
        raise ValueError(f"expected a non-empty signal [leads, samples], got shape {signal.shape}")
    x = signal.astype(np.float64)
    if method == "zscore":
        offset, scale = x.mean(axis=1), x.std(axis=1)
    elif method == "robust":
        q25, offset, q75 = np.percentile(x, [25, 50, 75], axis=1)
        scale = (q75 - q25) / IQR_TO_SIGMA
    elif method == "none":
        offset, scale = np.zeros(len(x)), np.ones(len(x))
    else:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}")
    return offset.astype(np.float32), np.maximum(scale, eps).astype(np.float32)


def apply_normalization(signal: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 [L, T]: (signal - offset) / scale, lead by lead (`offset`, `scale` [L])."""
    offset = np.asarray(offset, dtype=np.float32)[:, None]  # [L, 1]
    scale = np.asarray(scale, dtype=np.float32)[:, None]  # [L, 1]
    return ((np.asarray(signal, dtype=np.float32) - offset) / scale).astype(np.float32, copy=False)


def normalize(signal: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised float32 [L, T], offset float32 [L], scale float32 [L]) as `recipe` says."""
    offset, scale = normalization_stats(signal, recipe.normalization, recipe.normalization_eps)
    return apply_normalization(signal, offset, scale), offset, scale
