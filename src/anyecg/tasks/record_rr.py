"""A whole record's RR-interval (heart-rate variability) features, for the record-level tasks.

Rhythm classes are largely classes of RR timing: atrial fibrillation is an irregularly irregular RR
sequence, sinus tachycardia and bradycardia are heart rates, bigeminy is alternating short and long
intervals. A network sees one 10 s window at a time; these features summarise the whole record, so
every window of a record is classified with its record's rhythm statistics at hand.

R peaks are found with wfdb's XQRS detector (`anyecg.signal.peaks.xqrs_peaks`) on one lead of the
preprocessed signal (lead II when the record has it, else its first lead). The 16 features are those AF detectors have used for decades:
mean, standard deviation and coefficient of variation of RR; RMSSD; the share of successive
differences over 50 ms (pNN50); the median and the largest absolute successive difference over mean
RR; the 10th and 90th RR percentiles, min and max; heart rate; the number of occupied 0.1 s
RR-histogram bins and the histogram's entropy; the mean and standard deviation of the ratio of each
RR to the previous one. A record with fewer than four detected beats gets NaN features, which
`RRStandardizer` turns into the training mean.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from anyecg.data.store import Store
from anyecg.signal.peaks import xqrs_peaks

RECORD_RR_FEATURES = ["rr_mean", "rr_std", "rr_cv", "rmssd", "pnn50", "median_abs_diff_over_mean",
                      "max_abs_diff_over_mean", "rr_p10", "rr_p90", "rr_min", "rr_max", "heart_rate",
                      "histogram_bins", "histogram_entropy", "rr_ratio_mean", "rr_ratio_std"]
CACHE_EVERY = 500  # records between cache writes, so an interrupted run resumes near where it stopped
RR_LEAD = "II"  # the lead R peaks are found on when a record has it
CLIP = 5.0  # standardized features are clipped to +/- CLIP standard deviations (a missed beat makes outliers)


def record_rr_features(signal: np.ndarray, fs: float) -> np.ndarray:
    """float64 [len(RECORD_RR_FEATURES)] of one lead `signal [T]` (NaN where fewer than four beats were found)."""
    if len(signal) < 2 * fs:  # too short for four beats, and for XQRS's filters
        return np.full(len(RECORD_RR_FEATURES), np.nan)
    return peak_rr_features(xqrs_peaks(signal, fs), fs)


def peak_rr_features(peaks: np.ndarray, fs: float) -> np.ndarray:
    """float64 [len(RECORD_RR_FEATURES)] from R-peak sample indices (NaN for fewer than four peaks)."""
    if len(peaks) < 4:
        return np.full(len(RECORD_RR_FEATURES), np.nan)
    rr = np.diff(peaks) / fs  # [n - 1] seconds
    diff = np.diff(rr)
    hist = np.histogram(rr, bins=np.arange(0.2, 2.05, 0.1))[0] / len(rr)
    occupied = hist[hist > 0]
    ratio = rr[1:] / rr[:-1]
    return np.array([
        rr.mean(), rr.std(), rr.std() / rr.mean(), np.sqrt((diff**2).mean()), (np.abs(diff) > 0.05).mean(),
        np.median(np.abs(diff)) / rr.mean(), np.abs(diff).max() / rr.mean(), np.percentile(rr, 10),
        np.percentile(rr, 90), rr.min(), rr.max(), 60.0 / rr.mean(), len(occupied),
        -(occupied * np.log(occupied)).sum(), ratio.mean(), ratio.std(),
    ])


def rr_lead_index(leads: list[str]) -> int:
    """Index of the lead R peaks are found on: lead II if present, else the first lead."""
    return leads.index(RR_LEAD) if RR_LEAD in leads else 0


def signal_rr_features(signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
    """float64 [F] of a preprocessed recording `signal [L, T]` whose leads are `leads`."""
    return record_rr_features(signal[rr_lead_index(list(leads))], fs)


def store_rr_features(store: Store, rows: np.ndarray, cache: Path | None = None, progress: bool = True) -> dict[int, np.ndarray]:
    """{manifest row: float64 [F]} for `rows` of `store`. With `cache` (a .npz), features already
    computed for a record id are read back and new ones added, so a resumed or repeated run on the
    same store does not detect the R peaks again."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            known = dict(zip(saved["record_id"].tolist(), saved["features"]))
    features, missing = {}, []
    for row in rows.tolist():
        record_id = store.record_id(row)
        if record_id in known:
            features[row] = known[record_id]
        else:
            missing.append(row)
    fs = float(store.recipe.target_fs)
    for done, row in enumerate(tqdm(missing, desc="R peaks", file=sys.stderr, disable=not progress or not missing), 1):
        features[row] = signal_rr_features(store.signal(row), fs, store.leads(row))
        known[store.record_id(row)] = features[row]
        if cache is not None and (done % CACHE_EVERY == 0 or done == len(missing)):
            _write_cache(cache, known)
    return features


def _write_cache(cache: Path, known: dict[str, np.ndarray]) -> None:
    """Atomically: a killed run leaves the previous cache whole."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial.npz")
    np.savez(partial, record_id=np.array(list(known)), features=np.stack(list(known.values())))
    partial.replace(cache)


@dataclass
class RRStandardizer:
    """z-scores with the training records' mean and standard deviation; NaN (no beats found) -> 0
    (the training mean); clipped to +/- CLIP."""

    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]

    @classmethod
    def fit(cls, features: np.ndarray) -> "RRStandardizer":
        """From training features `[n, F]` (NaN rows ignored per feature)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an all-NaN column (no beats anywhere) -> mean 0, std 1
            mean, std = np.nanmean(features, axis=0), np.nanstd(features, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(mean, std)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """float32 [..., F] standardized."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.std
        return np.clip(np.nan_to_num(z, nan=0.0), -CLIP, CLIP).astype(np.float32)

    def to_json(self) -> dict:
        return {"features": RECORD_RR_FEATURES, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "RRStandardizer":
        if list(data["features"]) != RECORD_RR_FEATURES:
            raise ValueError(f"the model's RR features {data['features']} differ from this version's {RECORD_RR_FEATURES}")
        return cls(np.array(data["mean"], dtype=np.float64), np.array(data["std"], dtype=np.float64))
