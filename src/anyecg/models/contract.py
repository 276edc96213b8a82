"""The signal contract of fixed-input models: rate, window length and lead slots.

CNN-style models (ECG-FM, ECGFounder, the baselines) take `x [B, C, T]` with one channel per lead
slot. `to_model_input` turns any recording into that form: leads are placed by canonical name
(absent slots zero-filled and flagged in `lead_mask`, extra leads dropped; a single-lead model reads
the one lead of a single-lead recording whose lead is unnamed), the rate is converted
with a polyphase filter, and the window is cropped or zero-padded. `segments` tiles a longer
recording so a caller can score each window and aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from scipy.signal import resample_poly

from anyecg.signal.leads import STANDARD_12


@dataclass(frozen=True)
class SignalContract:
    fs: float = 300.0  # samples per second the model expects
    window_s: float = 10.0  # seconds per input window
    leads: tuple[str, ...] = STANDARD_12  # canonical lead name of each input channel

    @property
    def n_samples(self) -> int:
        return int(round(self.fs * self.window_s))

    def check(self, x_shape: tuple[int, ...]) -> None:
        """Raise if a batch `x [B, C, T]` does not match the contract, printing both."""
        if len(x_shape) != 3 or x_shape[1] != len(self.leads) or x_shape[2] != self.n_samples:
            raise ValueError(
                f"input shape {tuple(x_shape)} does not match the model's contract [B, {len(self.leads)}, "
                f"{self.n_samples}] ({len(self.leads)} leads {list(self.leads)}, {self.window_s:g} s at {self.fs:g} Hz); "
                "use anyecg.models.contract.to_model_input"
            )


def checked_input(x: torch.Tensor, lead_mask: torch.Tensor | None, contract: SignalContract) -> torch.Tensor:
    """x [B, C, T] with absent leads zeroed (whatever the caller filled in); raises ValueError
    printing any shape that breaks the contract or a lead mask that is not bool [B, C]."""
    contract.check(tuple(x.shape))
    if lead_mask is None:
        return x
    if tuple(lead_mask.shape) != tuple(x.shape[:2]) or lead_mask.dtype != torch.bool:
        raise ValueError(
            f"lead_mask must be a bool tensor of shape {tuple(x.shape[:2])} (True = present), "
            f"got {lead_mask.dtype} {tuple(lead_mask.shape)}"
        )
    return x * lead_mask[:, :, None].to(x.dtype)  # [B, C, T]


def convert_rate(signal: np.ndarray, src_fs: float, fs: float) -> np.ndarray:
    """float32 [L, round(T * fs / src_fs)]: polyphase resampling along time (identity when equal)."""
    if src_fs <= 0 or fs <= 0:
        raise ValueError(f"sampling rates must be positive, got {src_fs} -> {fs}")
    if src_fs == fs:
        return np.asarray(signal, dtype=np.float32)
    ratio = Fraction(fs / src_fs).limit_denominator(1000)
    out = resample_poly(np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return out[:, : int(round(signal.shape[-1] * fs / src_fs))].astype(np.float32)


def place_leads(signal: np.ndarray, src_leads: list[str], contract: SignalContract) -> tuple[np.ndarray, np.ndarray]:
    """(x [C, T], lead_mask [C]): each of the contract's slots filled from the lead of the same name."""
    if signal.ndim != 2 or signal.shape[0] != len(src_leads):
        raise ValueError(f"signal shape {signal.shape} does not match {len(src_leads)} lead names {src_leads}")
    x = np.zeros((len(contract.leads), signal.shape[1]), dtype=np.float32)
    lead_mask = np.zeros(len(contract.leads), dtype=bool)
    index = {name: i for i, name in enumerate(src_leads) if name != "unknown" or "unknown" in contract.leads}
    for slot, name in enumerate(contract.leads):
        if name in index:
            x[slot] = signal[index[name]]
            lead_mask[slot] = True
    if not lead_mask.any() and len(contract.leads) == 1 and list(src_leads) == ["unknown"]:
        # a single unnamed lead (wearables, patches) is the one lead of a single-lead model
        x[0], lead_mask[0] = signal[0], True
    if not lead_mask.any():
        raise ValueError(f"none of the leads {src_leads} is among the model's leads {list(contract.leads)}")
    return x, lead_mask


def fit_window(x: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop or zero-pad [C, T] to [C, n_samples] (the start of the recording is kept)."""
    if x.shape[1] >= n_samples:
        return x[:, :n_samples]
    return np.pad(x, ((0, 0), (0, n_samples - x.shape[1])))


def to_model_input(
    signal: np.ndarray, src_fs: float, src_leads: list[str], contract: SignalContract
) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 [C, T], lead_mask bool [C]) for one window starting at the recording's start."""
    x, lead_mask = place_leads(np.asarray(signal), src_leads, contract)
    return fit_window(convert_rate(x, src_fs, contract.fs), contract.n_samples), lead_mask


def segments(
    signal: np.ndarray, src_fs: float, src_leads: list[str], contract: SignalContract, *, min_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 [S, C, T], lead_mask [C]): consecutive windows covering the recording.

    A last window shorter than `min_fraction` of the window is dropped unless it is the only one.
    """
    x, lead_mask = place_leads(np.asarray(signal), src_leads, contract)
    x = convert_rate(x, src_fs, contract.fs)
    size = contract.n_samples
    starts = list(range(0, max(x.shape[1], 1), size))
    if len(starts) > 1 and x.shape[1] - starts[-1] < min_fraction * size:
        starts.pop()
    windows = np.stack([fit_window(x[:, s : s + size], size) for s in starts])  # [S, C, T]
    return windows, lead_mask
