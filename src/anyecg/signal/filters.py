"""Zero-phase IIR filters: Butterworth band-pass and mains notch, as second-order sections.

Every filter here runs forward and backward (`scipy.signal.sosfiltfilt`), so it shifts no wave in
time and its magnitude response is |H(f)|^2. Designs are cached per sampling rate: a prepare job
filters thousands of records at the same few rates.

Short inputs: sosfiltfilt pads each end by an odd reflection of `padlen` samples and refuses a signal
not longer than that. We clamp `padlen` to `T - 1`, so any non-empty signal is filtered (a 0.5 s
record at 200 Hz included); the result near the ends of such a short record is dominated by the
edge handling, as it would be with any filter whose impulse response is longer than the record.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.signal

# Highest usable filter edge as a fraction of the sampling rate (0.5 is Nyquist). Butterworth
# designs get numerically fragile right at Nyquist; 0.45 keeps the edge inside the passband.
MAX_EDGE_FRACTION = 0.45


def upper_edge(high_hz: float, *rates: float) -> float:
    """The low-pass edge actually used: `high_hz`, clamped to 0.45 x the lowest of `rates`."""
    return float(min([high_hz] + [MAX_EDGE_FRACTION * r for r in rates]))


@lru_cache(maxsize=64)
def bandpass_sos(fs: float, low_hz: float, high_hz: float, orders: tuple[int, int] = (2, 6)) -> np.ndarray:
    """float64 [n_sections, 6]: Butterworth high-pass at `low_hz` then low-pass at `high_hz`.

    The two edges get separate orders: a gentle high-pass (order 2) rings little after a baseline
    jump, a steeper low-pass (order 6) removes muscle noise just above the edge. A `low_hz` of 0
    (or order 0) disables the high-pass. Clamp `high_hz` with `upper_edge` first.
    """
    if not 0.0 <= low_hz < high_hz < fs / 2:
        raise ValueError(f"band-pass edges must satisfy 0 <= low < high < fs/2 = {fs / 2}, got ({low_hz}, {high_hz}) Hz")
    hp_order, lp_order = orders
    sections = []
    if low_hz > 0 and hp_order > 0:
        sections.append(scipy.signal.butter(hp_order, low_hz, btype="highpass", fs=fs, output="sos"))
    if lp_order > 0:
        sections.append(scipy.signal.butter(lp_order, high_hz, btype="lowpass", fs=fs, output="sos"))
    sos = np.concatenate(sections) if sections else np.empty((0, 6))
    sos.setflags(write=False)
    return sos


@lru_cache(maxsize=64)
def notch_sos(fs: float, freq_hz: float, q: float = 30.0) -> np.ndarray:
    """float64 [1, 6]: second-order IIR notch at `freq_hz` (bandwidth freq/q); [0, 6] at or above Nyquist.

    A notch at or above Nyquist has nothing to remove (that content is not representable at `fs`).
    """
    if freq_hz <= 0 or q <= 0:
        raise ValueError(f"notch needs freq > 0 and q > 0, got freq={freq_hz} Hz, q={q}")
    if freq_hz >= fs / 2:
        sos = np.empty((0, 6))
    else:
        b, a = scipy.signal.iirnotch(freq_hz, q, fs=fs)
        sos = scipy.signal.tf2sos(b, a)
    sos.setflags(write=False)
    return sos


def zero_phase(x: np.ndarray, sos: np.ndarray, axis: int = -1) -> np.ndarray:
    """`sosfiltfilt` along `axis` (float64), with padlen clamped so that any non-empty signal works."""
    x = np.asarray(x, dtype=np.float64)
    if len(sos) == 0:
        return x.copy()
    n = x.shape[axis]
    if n == 0:
        raise ValueError("cannot filter an empty signal (0 samples)")
    sos = np.array(sos, dtype=np.float64)  # scipy needs a writable copy of the cached design
    return scipy.signal.sosfiltfilt(sos, x, axis=axis, padlen=min(default_padlen(sos), n - 1))


def default_padlen(sos: np.ndarray) -> int:
    """The padlen `scipy.signal.sosfiltfilt` uses by default for `sos` (3 x the filter order)."""
    n_sections = len(sos)
    trailing_zeros = min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return 3 * (2 * n_sections + 1 - trailing_zeros)


def bandpass(
    x: np.ndarray, fs: float, band_hz: tuple[float, float] = (0.1, 75.0), orders: tuple[int, int] = (2, 6), axis: int = -1
) -> np.ndarray:
    """Zero-phase band-pass of `x` [..., T] sampled at `fs`; the upper edge is clamped below Nyquist."""
    return zero_phase(x, bandpass_sos(float(fs), float(band_hz[0]), upper_edge(band_hz[1], fs), tuple(orders)), axis)


def notch(x: np.ndarray, fs: float, freq_hz: float = 50.0, q: float = 30.0, axis: int = -1) -> np.ndarray:
    """Zero-phase mains notch of `x` [..., T]; returns a copy unchanged when `freq_hz` >= Nyquist."""
    return zero_phase(x, notch_sos(float(fs), float(freq_hz), float(q)), axis)
