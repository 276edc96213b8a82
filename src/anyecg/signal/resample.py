"""Rational polyphase resampling to the model rate (300 Hz) from any source rate.

`resample_poly` filters with a Kaiser-windowed sinc (anti-aliasing when going down, anti-imaging
when going up) and evaluates only the output samples it keeps, so 360 -> 300 Hz costs about as much
as one short FIR. The ratio target/fs is reduced to `up/down` with `Fraction.limit_denominator`, so
non-integer rates (128.5 Hz, EDF's 99.9 Hz) work; where the fraction had to be approximated the
effective output rate is fs * up / down (within 1/1000 relative).

Output length: round(T * up / down), halves rounded up. `resample_poly` itself returns
ceil(T * up / down) samples; the last one, when it exceeds the rounded length, lies past the final
input sample and is dropped.

Speed: `resample` computes what `scipy.signal.resample_poly(x, up, down)` computes (the same
filter, zero padding and output grid) in a compiled kernel that evaluates each output sample for a
tile of rows side by side (SIMD across rows), to float64 rounding; fewer than 8 rows go through
scipy itself.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numba
import numpy as np
import scipy.signal

from anyecg.signal.filters import MIN_KERNEL_ROWS, TILE_ROWS

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
    n_out = resampled_length(n, up, down)
    moved = np.moveaxis(x, axis, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, n)  # [R, T]
    if len(rows) < MIN_KERNEL_ROWS:
        y = scipy.signal.resample_poly(x, up, down, axis=axis)
        return np.moveaxis(np.moveaxis(y, axis, -1)[..., :n_out], -1, axis)
    taps, shift = polyphase_filter(up, down)
    out = resample_rows(rows, taps, up, down, shift, n_out)
    return np.moveaxis(out.reshape(moved.shape[:-1] + (-1,)), -1, axis)


@lru_cache(maxsize=64)
def polyphase_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """(taps, shift) of `scipy.signal.resample_poly(x, up, down)` with its default Kaiser window.

    Output sample j of resample_poly is sum_i x[i] * taps[(j + shift) * down - i * up] (x zero
    outside the record): scipy's `upfirdn` with its pre-padded filter, after dropping `shift` samples.
    """
    half_len = 10 * max(up, down)
    taps = scipy.signal.firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    pre_pad = down - half_len % down
    taps = np.concatenate([np.zeros(pre_pad), taps])
    taps.setflags(write=False)
    return taps, (half_len + pre_pad) // down


@numba.njit(nogil=True, cache=True)
def polyphase_tile(src, offset, n_in, taps, up, down, shift, out):
    """out[j, g] = sum_i src[offset + i, g] * taps[(j + shift) * down - i * up], 0 <= i < n_in.

    src [T_src, G] and out [n_out, G] hold rows side by side (one lane per row).
    """
    n_out, lanes = out.shape
    n_taps = taps.shape[0]
    for j in range(n_out):
        phase = (j + shift) * down
        i_hi = min(phase // up, n_in - 1)
        i_lo = max(0, -((n_taps - 1 - phase) // up))  # ceil((phase - n_taps + 1) / up)
        for g in range(lanes):
            out[j, g] = 0.0
        for i in range(i_lo, i_hi + 1):
            c = taps[phase - i * up]
            for g in range(lanes):
                out[j, g] += c * src[offset + i, g]


@numba.njit(nogil=True, cache=True)
def resample_rows(x, taps, up, down, shift, n_out):
    """float64 [R, n_out]: every row of `x` [R, T] resampled by up / down (see `polyphase_filter`)."""
    n_rows, n = x.shape
    out = np.empty((n_rows, n_out))
    lanes = min(TILE_ROWS, n_rows)
    src = np.empty((n, lanes))
    tile = np.empty((n_out, lanes))
    for r0 in range(0, n_rows, lanes):
        used = min(lanes, n_rows - r0)
        for g in range(used):
            src[:, g] = x[r0 + g]
        polyphase_tile(src, 0, n, taps, up, down, shift, tile)
        for g in range(used):
            out[r0 + g] = tile[:, g]
    return out


def fir_reach(up: int, down: int) -> int:
    """Input samples on each side that one output sample of `resample_poly(up, down)` depends on.

    scipy's default filter has 2 * 10 * max(up, down) + 1 taps at the upsampled rate.
    """
    return -(-10 * max(up, down) // up) + 1
