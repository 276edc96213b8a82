"""Rational polyphase resampling to the model rate (300 Hz) from any source rate.

`resample_poly` filters with a Kaiser-windowed sinc (anti-aliasing when going down, anti-imaging
when going up) and evaluates only the output samples it keeps, so 360 -> 300 Hz costs about as much
as one short FIR. The ratio target/fs is reduced to `up/down` with `Fraction.limit_denominator`, so
non-integer rates (128.5 Hz, EDF's 99.9 Hz) work; where the fraction had to be approximated the
effective output rate is fs * up / down (within 1/1000 relative).

Output length: round(T * up / down), halves rounded up. `resample_poly` itself returns
ceil(T * up / down) samples; the last one, when it exceeds the rounded length, lies past the final
input sample and is dropped.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import scipy.signal

MAX_DENOMINATOR = 1000


def resample_ratio(fs: float, target_fs: float, max_denominator: int = MAX_DENOMINATOR) -> tuple[int, int]:
    """(up, down) in lowest terms with up / down ~= target_fs / fs."""
    if fs <= 0 or target_fs <= 0:
        raise ValueError(f"sampling rates must be positive, got fs={fs}, target_fs={target_fs}")
    ratio = (Fraction(target_fs) / Fraction(fs)).limit_denominator(max_denominator)
    return ratio.numerator, ratio.denominator


def resampled_length(n_samples: int, up: int, down: int) -> int:
    """round(n_samples * up / down), halves up, in exact integer arithmetic."""
    return (2 * n_samples * up + down) // (2 * down)


def resample(x: np.ndarray, fs: float, target_fs: float = 300.0, axis: int = -1) -> np.ndarray:
    """float64 [..., round(T * target_fs / fs)]: `x` [..., T] resampled along `axis`."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("cannot resample an empty signal (0 samples)")
    up, down = resample_ratio(fs, target_fs)
    if up == down:
        return x.copy()
    y = scipy.signal.resample_poly(x, up, down, axis=axis)
    return np.take(y, np.arange(resampled_length(n, up, down)), axis=axis)


def fir_reach(up: int, down: int) -> int:
    """Input samples on each side that one output sample of `resample_poly(up, down)` depends on.

    scipy's default filter has 2 * 10 * max(up, down) + 1 taps at the upsampled rate.
    """
    return -(-10 * max(up, down) // up) + 1
