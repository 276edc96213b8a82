"""Cutting leads into 1-second patches, the tokens of the model, and back.

A token is a (lead, second) pair: `patchify` turns [L, T] into [L, P, S] with P = ceil(T / S); the
last patch of a record whose length is not a multiple of S is zero-padded and flagged so that
attention and losses can leave the padding out.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TOKEN_BUDGET = 1024  # tokens in one sequence (paper)


def patchify(signal: np.ndarray, patch_size: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(patches float32 [L, P, patch_size], is_padded bool [L, P]) of `signal` [L, T].

    `is_padded[:, -1]` is True when the last patch was zero-padded (T not a multiple of patch_size).
    """
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise ValueError(f"expected a signal [leads, samples], got shape {signal.shape}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    n_leads, n_samples = signal.shape
    if n_samples == 0:
        raise ValueError(f"cannot patchify an empty signal (shape {signal.shape})")
    n_patches = -(-n_samples // patch_size)
    padded = np.zeros((n_leads, n_patches * patch_size), dtype=np.float32)
    padded[:, :n_samples] = signal
    is_padded = np.zeros((n_leads, n_patches), dtype=bool)
    is_padded[:, -1] = n_samples % patch_size != 0
    return padded.reshape(n_leads, n_patches, patch_size), is_padded  # [L, P, S], [L, P]


def unpatchify(patches: np.ndarray, n_samples: int | None = None) -> np.ndarray:
    """[L, n_samples] from `patches` [L, P, S]: the patches joined, cropped to `n_samples` (all when None)."""
    patches = np.asarray(patches)
    if patches.ndim != 3:
        raise ValueError(f"expected patches [leads, patches, samples], got shape {patches.shape}")
    n_leads, n_patches, patch_size = patches.shape
    joined = patches.reshape(n_leads, n_patches * patch_size)  # [L, P * S]
    if n_samples is None:
        return joined
    if not 0 < n_samples <= joined.shape[1]:
        raise ValueError(f"n_samples must be in 1..{joined.shape[1]} for {n_patches} patches of {patch_size}, got {n_samples}")
    return joined[:, :n_samples]


def max_seconds_for_budget(n_leads: int, token_budget: int = DEFAULT_TOKEN_BUDGET, patch_seconds: float = 1.0) -> int:
    """Whole seconds of an `n_leads`-lead recording that fit in `token_budget` tokens (one per lead-patch).

    12 leads -> 85 s, 2 leads -> 512 s, 1 lead -> 1024 s with 1 s patches.
    """
    if n_leads < 1:
        raise ValueError(f"n_leads must be >= 1, got {n_leads}")
    patches_per_lead = token_budget // n_leads
    if patches_per_lead < 1:
        raise ValueError(f"{n_leads} leads do not fit in a budget of {token_budget} tokens (one patch each)")
    return int(patches_per_lead * patch_seconds)


def window_bounds(start: int, stop: int, size: int) -> np.ndarray:
    """int64 [S, 2]: consecutive `size`-sample windows tiling `[start, stop)`, the last one shorter."""
    if size <= 0 or stop <= start:
        raise ValueError(f"need size > 0 and stop > start, got size {size}, [{start}, {stop})")
    starts = np.arange(start, stop, size, dtype=np.int64)  # [S]
    return np.stack([starts, np.minimum(starts + size, stop)], axis=1)
