"""The preprocessing recipe and the functions that apply it.

Pipeline (paper order), for a recording `signal` [L, T] in mV at `fs`:
1. zero-phase Butterworth band-pass 0.1-75 Hz (upper edge clamped to 0.45 x the input rate and
   0.45 x the target rate) and a 50 Hz (or 60 Hz) mains notch, one cascade at the input rate;
2. rational polyphase resampling to 300 Hz;
3. db6 wavelet denoising in 10 s blocks (`anyecg.signal.wavelet`);
4. amplitude normalisation per lead and recording (`anyecg.signal.normalize`), z-score by default.
`clean` / `clean_batch` / `clean_stream` run steps 1-3 and return mV: the store keeps mV and
applies step 4 on read. `preprocess` runs all four for one record.

The `Recipe` holding every parameter is saved with each prepared dataset and each checkpoint; a
model refuses input prepared with another one (`Recipe.check_compatible`).

Throughput: `clean_batch` cleans many same-rate, same-length records in one call. All leads of all
records form one [B * L, T] array whose rows go through compiled kernels 32 at a time, side by side
in memory, so each sequential recursion (IIR filter, FIR, wavelet filter bank) runs in SIMD lanes
across rows: filters and resampling in one pass per tile (`_linear_kernel`), then the wavelet step
(`anyecg.signal.wavelet`). The kernels compute what scipy's sosfiltfilt / resample_poly and
PyWavelets compute (tests compare them); they release the GIL, and row blocks are spread over a few
threads. Measured figures: `benchmarks/preprocess.py`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numba
import numpy as np

from anyecg.signal.filters import (
    MIN_KERNEL_ROWS, TILE_ROWS, bandpass_sos, default_padlen, filtfilt_tile, load_odd_extended, notch_sos, steady_state, upper_edge,
    zero_phase,
)
from anyecg.signal.normalize import NORMALIZATIONS, normalize
from anyecg.signal.resample import (
    fir_reach, polyphase_filter, polyphase_tile, resample, resample_ratio, resampled_length,
)
from anyecg.signal.wavelet import THRESHOLD_MODES, block_windows, denoise_rows, wavelet_denoise

RECIPE_VERSION = 1
_TUPLE_FIELDS = ("bandpass_hz", "filter_order")


@dataclass(frozen=True)
class Recipe:
    """Every parameter of anyecg preprocessing; JSON round trip is exact."""

    target_fs: int = 300  # Hz, the model's sampling rate
    bandpass_hz: tuple[float, float] = (0.1, 75.0)  # upper edge clamped below both Nyquists
    filter_order: tuple[int, int] = (2, 6)  # Butterworth orders (high-pass, low-pass), run forward and backward
    notch_hz: float | None = 50.0  # mains frequency: 50 Hz, or 60 Hz in the Americas; None for no notch
    notch_q: float = 30.0  # notch quality: bandwidth = notch_hz / notch_q
    wavelet: str | None = "db6"  # None skips wavelet denoising
    wavelet_level: int | None = None  # None: deepest level a denoising window supports
    threshold_mode: str = "hard"  # "hard" or "soft" thresholding of the detail coefficients (see wavelet.py)
    wavelet_block_seconds: float = 10.0  # denoising block
    wavelet_margin_seconds: float = 2.0  # context on each side of a block
    normalization: str = "zscore"  # "zscore", "robust" (median / IQR) or "none" (mV)
    normalization_eps: float = 1e-3  # mV: floor of a lead's scale, so a flat lead never divides by 0
    patch_seconds: float = 1.0  # one token per lead and patch
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:  # JSON gives lists back
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError(f"invalid preprocessing recipe: {name} must be a pair, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        low, high = self.bandpass_hz
        problems = []
        if self.target_fs <= 0:
            problems.append(f"target_fs must be > 0, got {self.target_fs}")
        if not 0 <= low < high:
            problems.append(f"bandpass_hz must satisfy 0 <= low < high, got {self.bandpass_hz}")
        if min(self.filter_order) < 0:
            problems.append(f"filter_order must be two orders >= 0 (high-pass, low-pass), got {self.filter_order}")
        if self.notch_hz is not None and (self.notch_hz <= 0 or self.notch_q <= 0):
            problems.append(f"notch_hz and notch_q must be > 0, got {self.notch_hz}, {self.notch_q}")
        if self.threshold_mode not in THRESHOLD_MODES:
            problems.append(f"threshold_mode must be one of {THRESHOLD_MODES}, got {self.threshold_mode!r}")
        if self.wavelet_level is not None and self.wavelet_level < 1:
            problems.append(f"wavelet_level must be >= 1 or None, got {self.wavelet_level}")
        if self.wavelet_block_seconds <= 0 or self.wavelet_margin_seconds < 0:
            problems.append(
                f"wavelet block must be > 0 s and margin >= 0 s, got {self.wavelet_block_seconds}, {self.wavelet_margin_seconds}"
            )
        if self.normalization not in NORMALIZATIONS:
            problems.append(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.normalization_eps <= 0:
            problems.append(f"normalization_eps must be > 0, got {self.normalization_eps}")
        size = self.target_fs * self.patch_seconds
        if size < 1 or abs(size - round(size)) > 1e-9:
            problems.append(f"target_fs x patch_seconds must be a whole number of samples, got {size}")
        if problems:
            raise ValueError("invalid preprocessing recipe: " + "; ".join(problems))

    @property
    def patch_size(self) -> int:
        """Samples per patch (300 = 1 s at 300 Hz)."""
        return int(round(self.target_fs * self.patch_seconds))

    @property
    def wavelet_block(self) -> int:
        return int(round(self.wavelet_block_seconds * self.target_fs))

    @property
    def wavelet_margin(self) -> int:
        return int(round(self.wavelet_margin_seconds * self.target_fs))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        """The recipe in `data`; unknown keys are an error, missing keys take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing recipe keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return cls.from_dict(json.loads(text))

    def check_compatible(self, other: Recipe) -> None:
        """Raise ValueError naming every field where `other` differs from this recipe."""
        diffs = [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
        if diffs:
            raise ValueError("input was prepared with another preprocessing recipe (expected != got): " + "; ".join(diffs))


def filter_sos(fs: float, recipe: Recipe) -> np.ndarray:
    """float64 [n_sections, 6]: the band-pass + notch cascade `recipe` applies at input rate `fs`."""
    fs = float(fs)
    low, high = recipe.bandpass_hz
    sos = bandpass_sos(fs, float(low), upper_edge(high, fs, recipe.target_fs), recipe.filter_order)
    if recipe.notch_hz is not None:
        sos = np.concatenate([sos, notch_sos(fs, float(recipe.notch_hz), float(recipe.notch_q))])
    return sos


def _linear_rows(rows: np.ndarray, fs: float, recipe: Recipe) -> np.ndarray:
    """float64 [R, T']: steps 1-2 (filters, resampling) of every row of `rows` [R, T].

    Equal to `resample(zero_phase(rows, filter_sos(fs, recipe)), fs, target_fs)`, in one pass over
    each tile of rows (no intermediate array).
    """
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    n = rows.shape[1]
    if n == 0:
        raise ValueError("cannot clean an empty signal (0 samples)")
    sos = filter_sos(fs, recipe)
    up, down = resample_ratio(fs, recipe.target_fs)
    if len(sos) == 0 or up == down or len(rows) < MIN_KERNEL_ROWS:
        return resample(zero_phase(rows, sos), fs, recipe.target_fs)
    taps, shift = polyphase_filter(up, down)
    padlen = min(default_padlen(sos), n - 1)
    return _linear_kernel(rows, sos, steady_state(sos), padlen, taps, up, down, shift, resampled_length(n, up, down))


@numba.njit(nogil=True, cache=True)
def _linear_kernel(x, sos, zi, padlen, taps, up, down, shift, n_out):
    n_rows, n = x.shape
    out = np.empty((n_rows, n_out))
    lanes = min(TILE_ROWS, n_rows)
    buf = np.empty((n + 2 * padlen, lanes))  # [T_ext, G]: rows side by side
    tile = np.empty((n_out, lanes))
    for r0 in range(0, n_rows, lanes):
        load_odd_extended(x, r0, buf, padlen)
        filtfilt_tile(buf, sos, zi)
        polyphase_tile(buf, padlen, n, taps, up, down, shift, tile)
        for g in range(min(lanes, n_rows - r0)):
            out[r0 + g] = tile[:, g]
    return out


def _denoise(rows: np.ndarray, recipe: Recipe) -> np.ndarray:
    """float32 [R, T']: step 3 in float64 (hard thresholding is discontinuous: a coefficient at the
    threshold must be decided the same way here, in `clean_stream` and in a float64 reference)."""
    if recipe.wavelet is not None:
        rows = wavelet_denoise(
            rows, recipe.wavelet, recipe.wavelet_level, recipe.threshold_mode, recipe.wavelet_block, recipe.wavelet_margin
        )
    return rows.astype(np.float32)


def _clean_rows(rows: np.ndarray, fs: float, recipe: Recipe) -> np.ndarray:
    return _denoise(_linear_rows(rows, fs, recipe), recipe)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def clean_batch(signals: np.ndarray, fs: float, recipe: Recipe = Recipe(), workers: int | None = None) -> np.ndarray:
    """float32 [B, L, T']: `clean` of every record in `signals` [B, L, T] (one rate, one length).

    T' = round(T * target_fs / fs). `workers` threads share the B * L rows (default: the CPU count,
    at most 8); the result does not depend on it.
    """
    signals = np.asarray(signals, dtype=np.float64)
    if signals.ndim != 3:
        raise ValueError(f"expected signals [records, leads, samples], got shape {signals.shape}")
    n_records, n_leads, n_samples = signals.shape
    if n_samples == 0:
        raise ValueError(f"cannot clean empty signals (shape {signals.shape})")
    rows = signals.reshape(-1, n_samples)  # [B * L, T]
    workers = default_workers() if workers is None else max(1, workers)
    # About two parts per worker, each a whole number of kernel tiles.
    part = TILE_ROWS * max(1, math.ceil(len(rows) / (2 * workers * TILE_ROWS)))
    if workers == 1 or len(rows) <= part:
        out = _clean_rows(rows, fs, recipe)
    else:
        parts = [rows[i : i + part] for i in range(0, len(rows), part)]
        with ThreadPoolExecutor(workers) as pool:
            out = np.concatenate(list(pool.map(lambda p: _clean_rows(p, fs, recipe), parts)))
    return out.reshape(n_records, n_leads, -1)  # [B, L, T']


def clean(signal: np.ndarray, fs: float, recipe: Recipe = Recipe(), workers: int | None = 1) -> np.ndarray:
    """float32 [L, T'] in mV at `recipe.target_fs`: filters, resampling and denoising of `signal` [L, T]."""
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise ValueError(f"expected a signal [leads, samples], got shape {signal.shape}")
    return clean_batch(signal[None], fs, recipe, workers)[0]


def preprocess(signal: np.ndarray, fs: float, recipe: Recipe = Recipe()) -> np.ndarray:
    """float32 [L, T']: `clean` then per-lead normalisation, for one record."""
    return normalize(clean(signal, fs, recipe), recipe)[0]


DEFAULT_STREAM_MARGIN_S = 30.0


def clean_stream(
    chunks: Iterable[np.ndarray], fs: float, recipe: Recipe = Recipe(), margin_s: float = DEFAULT_STREAM_MARGIN_S
) -> Iterator[np.ndarray]:
    """`clean` of a record too large for memory, given as consecutive chunks [L, n] (any sizes).

    Yields float32 [L, n'] pieces whose concatenation is `clean(whole record)` up to the filters'
    truncated memory (overlap-save):
    - filters + resampling run on segments of the input with `margin_s` seconds of real signal on
      each side; segment edges are multiples of the resampling `down` factor, so each segment's
      output lands exactly on the whole record's output grid (no gap, no duplicate sample). The
      first and last segments end at the record's true edges, exactly as in `clean`. Inside, the
      difference left is the filters' start-up transient after `margin_s` seconds: the slowest
      pole (0.1 Hz, order 2) decays as exp(-0.44 t), about 2e-6 of a baseline step after 30 s;
    - wavelet denoising runs on the same 10 s blocks, with the same windows, as in `clean`.
    Memory: a few margins of input at a time, whatever the record length.
    """
    up, down = resample_ratio(fs, recipe.target_fs)
    margin = max(math.ceil(margin_s * fs / down), math.ceil(fir_reach(up, down) / down)) * down  # input samples
    segment = max(4 * margin, down)  # emitted input samples per step
    linear = _linear_stream(chunks, fs, recipe, up, down, margin, segment)
    if recipe.wavelet is None:
        for piece in linear:
            yield piece.astype(np.float32)
        return
    yield from _denoise_stream(linear, recipe)


def _linear_stream(
    chunks: Iterable[np.ndarray], fs: float, recipe: Recipe, up: int, down: int, margin: int, segment: int
) -> Iterator[np.ndarray]:
    """Filters + resampling of a chunked record, overlap-save; yields float64 [L, n'] at target_fs."""
    buffer: list[np.ndarray] = []  # input samples from `buffer_start` on
    buffer_start, buffer_end = 0, 0
    start = 0  # first input sample whose output is not yet emitted (a multiple of `down`)
    n_leads = None
    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or (n_leads is not None and chunk.shape[0] != n_leads):
            raise ValueError(f"stream chunks must be [leads, samples] with {n_leads} leads, got shape {chunk.shape}")
        n_leads = chunk.shape[0]
        if chunk.shape[1] == 0:
            continue
        buffer.append(chunk)
        buffer_end += chunk.shape[1]
        while start + segment + margin <= buffer_end:
            held = np.concatenate(buffer, axis=1) if len(buffer) > 1 else buffer[0]  # [L, buffer_end - buffer_start]
            lo = max(0, start - margin)
            window = held[:, lo - buffer_start : start + segment + margin - buffer_start]
            out = _linear_rows(window, fs, recipe)  # [L, window * up / down]
            first = (start - lo) * up // down
            yield out[:, first : first + segment * up // down]
            start += segment
            keep = start - margin - buffer_start
            buffer, buffer_start = [held[:, keep:]], start - margin
    if buffer_end == 0:
        return
    held = np.concatenate(buffer, axis=1)
    lo = max(0, start - margin)
    out = _linear_rows(held[:, lo - buffer_start :], fs, recipe)
    total = resampled_length(buffer_end, up, down)
    first = (start - lo) * up // down
    if total > start * up // down:
        yield out[:, first : first + total - start * up // down]


def _denoise_stream(linear: Iterator[np.ndarray], recipe: Recipe) -> Iterator[np.ndarray]:
    """Wavelet step of `clean` on a stream of resampled pieces, block by block as `wavelet_denoise`."""
    block, margin = recipe.wavelet_block, recipe.wavelet_margin
    held = None  # float64 [L, n]: resampled samples from `held_start` on
    held_start, next_block = 0, 0
    for piece in linear:
        held = piece if held is None else np.concatenate([held, piece], axis=1)
        held_end = held_start + held.shape[1]
        # Block k's window is not clipped by the end of the record once [kB - M, kB + B + M) is here.
        while (next_block + 1) * block + margin <= held_end:
            b0 = next_block * block
            lo = max(0, b0 - margin)
            rows = denoise_rows(_window(held, held_start, lo, b0 + block + margin), *_wavelet_args(recipe))
            yield rows[:, b0 - lo : b0 - lo + block].astype(np.float32)
            next_block += 1
            drop = max(0, next_block * block - margin) - held_start
            held, held_start = held[:, drop:], held_start + drop
    if held is None:  # not one output sample
        return
    n_total = held_start + held.shape[1]
    for w in block_windows(n_total, block, margin):
        if w.start < next_block * block:
            continue
        rows = denoise_rows(_window(held, held_start, w.win_start, w.win_stop), *_wavelet_args(recipe))
        yield rows[:, w.start - w.win_start : w.stop - w.win_start].astype(np.float32)


def _window(held: np.ndarray, held_start: int, lo: int, hi: int) -> np.ndarray:
    return held[:, lo - held_start : hi - held_start]


def _wavelet_args(recipe: Recipe) -> tuple:
    return recipe.wavelet, recipe.wavelet_level, recipe.threshold_mode
