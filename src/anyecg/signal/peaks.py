"""R peaks by wfdb's XQRS detector, at numpy speed.

XQRS looks for candidate peaks with `wfdb.processing.find_local_peaks`, a Python loop that calls
`max()` on a slice at every sample: 5 of the 5.1 s XQRS spends on a 30-minute MIT-BIH record.
`local_peaks` returns the same indices from one scipy maximum filter, and `xqrs_peaks` runs XQRS
with it in place of the loop, so the R peaks are XQRS's own (`benchmarks/rr_peaks.py` measures
both).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import wfdb.processing.qrs as wfdb_qrs
from scipy.ndimage import maximum_filter1d
from wfdb import processing

_SWAP_LOCK = threading.Lock()  # one swap at a time, so a concurrent call never restores the slow loop early


def local_peaks(signal: np.ndarray, radius: int) -> np.ndarray:
    """int [n]: what `wfdb.processing.find_local_peaks(signal, radius)` returns.

    A sample is a candidate when it equals the maximum of signal[i - radius : i + radius] (clipped
    to the signal); scanning left to right, a candidate is kept unless it lies within `radius`
    samples after the last kept one (wfdb skips `radius` samples after each peak).
    """
    signal = np.asarray(signal)
    if np.min(signal) == np.max(signal):
        return np.empty(0)
    # an even window of 2r samples centred by scipy on [i - r, i + r - 1]; "nearest" padding repeats
    # an edge sample that the clipped window already holds, so the maximum is the clipped one
    window_max = maximum_filter1d(signal, size=2 * radius, mode="nearest")
    kept, next_allowed = [], 0
    for i in np.flatnonzero(signal == window_max).tolist():
        if i >= next_allowed:
            kept.append(i)
            next_allowed = i + radius
    return np.array(kept)


def xqrs_peaks(signal: np.ndarray, fs: float) -> np.ndarray:
    """int [n]: the R-peak sample indices `wfdb.processing.xqrs_detect` finds in `signal [T]`."""
    with _SWAP_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = wfdb_qrs.find_local_peaks
        wfdb_qrs.find_local_peaks = local_peaks
        try:
            return processing.xqrs_detect(sig=np.asarray(signal, dtype=np.float64), fs=fs, verbose=False)
        finally:
            wfdb_qrs.find_local_peaks = slow
