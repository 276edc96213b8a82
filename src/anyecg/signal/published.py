"""The preprocessing the authors of ECGFounder and ECG-FM put in front of their published models.

A published model only gives its authors' results on input prepared as in their code, so these
recipes reproduce that code rather than anyecg's own cleaning (`anyecg.signal.recipe`):

ECGFounder (PKUDigitalHealth/ECGFounder `util.filter_bandpass`, `dataset.py`, `ptbxl_eval.py`):
    linear interpolation to 500 Hz over the record's duration (`resample_unequal`, which always
    makes 5000 samples: 500 Hz for the 10 s records it is given)
    -> 50 Hz notch (Q 30) and 4th-order 0.67-40 Hz Butterworth band-pass, each run forward and
       backward (`filtfilt`), lead by lead
    -> baseline removal: minus a median filter of int(0.4 fs) + 1 samples (made odd)
    -> 10 s windows, each z-scored with one mean and one standard deviation over all its leads and
       samples (+1e-8), as their datasets do per 10 s record.
ECG-FM (fairseq-signals `scripts/preprocess/ecg/preprocess.py`; ECG-FM's inference notebook):
    linear interpolation to 500 Hz (`resample`: int(T * 500 / fs) samples, ends aligned)
    -> per-lead z-score over the record, constant leads set to 0 (`lead_std_divide`, 'zero')
    -> non-overlapping 5 s segments, the remainder dropped (`segment_mat`).

Where the authors' code has no answer, anyecg's choice: a record shorter than one window gives one
window, zero-padded at the end; absent leads are zero and left out of ECGFounder's statistics.
The recipes that apply these to a recording live in `anyecg.models.published`.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import interp1d
from scipy.signal import butter, filtfilt, iirnotch, medfilt

PUBLISHED_FS = 500


def ecgfounder_resample(signal: np.ndarray, fs: float) -> np.ndarray:
    """float64 [L, T'] at 500 Hz: linear interpolation on a time axis from 0 to the record's duration."""
    signal = np.asarray(signal, dtype=np.float64)
    if fs == PUBLISHED_FS:
        return signal
    duration = signal.shape[1] / fs
    n_out = int(round(duration * PUBLISHED_FS))
    x_old = np.linspace(0, duration, num=signal.shape[1], endpoint=True)
    x_new = np.linspace(0, duration, num=n_out, endpoint=True)
    return interp1d(x_old, signal, kind="linear", axis=-1)(x_new)


def ecgfounder_filter(signal: np.ndarray, fs: float = PUBLISHED_FS) -> np.ndarray:
    """float64 [L, T]: notch, band-pass and median baseline removal of `signal` [L, T], lead by lead."""
    signal = np.asarray(signal, dtype=np.float64)
    b, a = iirnotch(50, 30, fs)
    filtered = filtfilt(b, a, signal, axis=-1)
    b, a = butter(N=4, Wn=[0.67, 40], btype="bandpass", fs=fs)
    filtered = filtfilt(b, a, filtered, axis=-1)
    kernel = int(0.4 * fs) + 1
    kernel += 1 - kernel % 2  # medfilt needs an odd kernel
    baseline = np.stack([medfilt(lead, kernel_size=kernel) for lead in filtered])  # [L, T]
    return filtered - baseline


def ecgfounder_normalize(window: np.ndarray, lead_mask: np.ndarray | None = None) -> np.ndarray:
    """[C, T] z-scored with one mean and std over its present leads and all samples; absent leads stay 0."""
    present = np.ones(len(window), dtype=bool) if lead_mask is None else np.asarray(lead_mask, dtype=bool)
    values = window[present]
    out = np.zeros_like(window)
    out[present] = (values - values.mean()) / (values.std() + 1e-8)
    return out


def ecgfm_resample(signal: np.ndarray, fs: float) -> np.ndarray:
    """float64 [L, int(T * 500 / fs)]: fairseq-signals' linear-interpolation resampling."""
    signal = np.asarray(signal, dtype=np.float64)
    if fs == PUBLISHED_FS:
        return signal
    n_out = int(signal.shape[-1] * (PUBLISHED_FS / fs))
    x = np.linspace(0, n_out - 1, signal.shape[-1])
    return interp1d(x, signal, kind="linear")(np.arange(n_out))


def ecgfm_standardize(signal: np.ndarray) -> np.ndarray:
    """[L, T] minus each lead's mean, divided by its std; a constant lead becomes 0."""
    centred = signal - signal.mean(axis=1, keepdims=True)
    std = centred.std(axis=1, keepdims=True)
    return np.where(std == 0, 0.0, centred / np.where(std == 0, 1.0, std))


def _pad(x: np.ndarray, n_samples: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, n_samples - x.shape[1])))


def ecgfounder_windows(x: np.ndarray, fs: float, lead_mask: np.ndarray, size: int) -> np.ndarray:
    """float32 [S, C, size]: ECGFounder's inputs from a recording x [C, T] (absent leads zero) at `fs`."""
    clean = ecgfounder_filter(ecgfounder_resample(x, fs))  # [C, T'] at 500 Hz
    if clean.shape[1] < size:  # zero padding after the statistics, which cover the real samples only
        windows = [_pad(ecgfounder_normalize(clean, lead_mask), size)]
    else:  # whole windows, the remainder dropped
        windows = [ecgfounder_normalize(clean[:, s : s + size], lead_mask) for s in range(0, clean.shape[1] - size + 1, size)]
    return np.stack(windows).astype(np.float32)


def ecgfm_windows(x: np.ndarray, fs: float, size: int) -> np.ndarray:
    """float32 [S, C, size]: ECG-FM's 5 s segments of a recording x [C, T] (absent leads zero, then constant: 0)."""
    clean = ecgfm_standardize(ecgfm_resample(x, fs))  # [C, T'] at 500 Hz
    if clean.shape[1] < size:
        return _pad(clean, size)[None].astype(np.float32)
    n_segments = clean.shape[1] // size
    return clean[:, : n_segments * size].reshape(len(clean), n_segments, size).transpose(1, 0, 2).astype(np.float32)
