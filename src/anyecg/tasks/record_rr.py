"""A whole record's RR-interval (heart-rate variability) and beat-shape features, for the record-level tasks.

Rhythm classes are largely classes of RR timing: atrial fibrillation is an irregularly irregular RR
sequence, sinus tachycardia and bradycardia are heart rates, bigeminy is alternating short and long
intervals. A network sees one 10 s window at a time; these features summarise the whole record, so
every window of a record is classified with its record's rhythm statistics at hand.

R peaks are found with wfdb's XQRS detector (`anyecg.signal.peaks.xqrs_peaks`) on one lead of the
preprocessed signal (lead II when the record has it, else its first lead). The 16 RR features are
those AF detectors have used for decades: mean, standard deviation and coefficient of variation of
RR; RMSSD; the share of successive differences over 50 ms (pNN50); the median and the largest
absolute successive difference over mean RR; the 10th and 90th RR percentiles, min and max; heart
rate; the number of occupied 0.1 s RR-histogram bins and the histogram's entropy; the mean and
standard deviation of the ratio of each RR to the previous one.

Six more features compare each detected beat with the record's median beat (`RECORD_SHAPE_FEATURES`,
`peak_shape_features`), because RR irregularity alone confuses atrial fibrillation with sinus rhythm
full of ectopic beats: the share of beats whose QRS is unlike the median beat's (ectopic); the RR
variability of the intervals between two beats of the dominant shape (regular in sinus rhythm with
ectopy, irregular in AF); and whether a P wave precedes the beats -- the correlation of each beat's
P-wave segment with the median beat's (consistent in sinus rhythm, fibrillatory waves are not) and
the median beat's P-wave size against its QRS. A record with fewer than four detected beats gets
NaN features, which `RRStandardizer` turns into the training mean.
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
from anyecg.tasks.beats import QRS_HALF_S, TEMPLATE_FEATURES, beat_segments, template_features

RECORD_RR_FEATURES = ["rr_mean", "rr_std", "rr_cv", "rmssd", "pnn50", "median_abs_diff_over_mean",
                      "max_abs_diff_over_mean", "rr_p10", "rr_p90", "rr_min", "rr_max", "heart_rate",
                      "histogram_bins", "histogram_entropy", "rr_ratio_mean", "rr_ratio_std"]
RECORD_SHAPE_FEATURES = ["ectopic_share", "dominant_rr_cv", "dominant_rmssd_over_mean", "p_wave_correlation",
                         "p_wave_over_qrs", "median_difference_ratio"]
RECORD_FEATURES = RECORD_RR_FEATURES + RECORD_SHAPE_FEATURES  # what `record_rr_features` returns, in order
DOMINANT_QRS_CORRELATION = 0.8  # a beat whose QRS correlates less with the median beat's counts as ectopic
P_WAVE_S = (0.25, 0.1)  # the P-wave segment: from 250 ms to 100 ms before the R peak
CACHE_EVERY = 500  # records between cache writes, so an interrupted run resumes near where it stopped
RR_LEAD = "II"  # the lead R peaks are found on when a record has it
CLIP = 5.0  # standardized features are clipped to +/- CLIP standard deviations (a missed beat makes outliers)


def record_rr_features(signal: np.ndarray, fs: float) -> np.ndarray:
    """float64 [len(RECORD_FEATURES)] of one lead `signal [T]` (NaN where fewer than four beats were found)."""
    if len(signal) < 2 * fs:  # too short for four beats, and for XQRS's filters
        return np.full(len(RECORD_FEATURES), np.nan)
    peaks = xqrs_peaks(signal, fs)
    return np.concatenate([peak_rr_features(peaks, fs), peak_shape_features(signal, peaks, fs)])


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


def peak_shape_features(signal: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """float64 [len(RECORD_SHAPE_FEATURES)] of one lead `signal [T]` and its R-peak samples (NaN for
    fewer than four peaks; the two dominant-RR features also when fewer than three, resp. two
    differences of, intervals join two dominant beats)."""
    features = np.full(len(RECORD_SHAPE_FEATURES), np.nan)
    if len(peaks) < 4:
        return features
    signal = np.asarray(signal, dtype=np.float64)[None]  # [1, T]
    beats = template_features(signal, peaks, fs)  # [n, len(TEMPLATE_FEATURES)]
    dominant = beats[:, TEMPLATE_FEATURES.index("qrs_correlation")] >= DOMINANT_QRS_CORRELATION  # [n]
    rr = np.diff(peaks) / fs  # [n - 1]
    between_dominant = dominant[1:] & dominant[:-1]  # [n - 1]
    clean_rr = rr[between_dominant]
    clean_diff = np.diff(rr)[between_dominant[1:] & between_dominant[:-1]]  # successive dominant intervals
    before, after = (int(round(s * fs)) for s in P_WAVE_S)
    half_qrs = int(round(QRS_HALF_S * fs))
    p_waves = beat_segments(signal, peaks, before, -after)[0]  # [n, S_p]: 250 to 100 ms before each R peak
    qrs = beat_segments(signal, peaks, half_qrs, half_qrs)[0]  # [n, S_q]
    p_median, qrs_median = np.median(p_waves, axis=0), np.median(qrs, axis=0)  # [S_p], [S_q]
    tiny = 1e-9
    p_correlation = p_waves @ p_median / (np.linalg.norm(p_waves, axis=1) * np.linalg.norm(p_median) + tiny)  # [n]
    features[:] = [
        1.0 - dominant.mean(),
        clean_rr.std() / clean_rr.mean() if len(clean_rr) >= 3 else np.nan,
        np.sqrt((clean_diff**2).mean()) / clean_rr.mean() if len(clean_diff) >= 2 else np.nan,
        np.median(p_correlation),
        np.sqrt((p_median**2).mean()) / (np.sqrt((qrs_median**2).mean()) + tiny),
        np.median(beats[:, TEMPLATE_FEATURES.index("log_difference_ratio")]),
    ]
    return features


def rr_lead_index(leads: list[str]) -> int:
    """Index of the lead R peaks are found on: lead II if present, else the first lead."""
    return leads.index(RR_LEAD) if RR_LEAD in leads else 0


def signal_rr_features(signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
    """float64 [len(RECORD_FEATURES)] of a preprocessed recording `signal [L, T]` whose leads are `leads`."""
    return record_rr_features(signal[rr_lead_index(list(leads))], fs)


def store_rr_features(store: Store, rows: np.ndarray, cache: Path | None = None, progress: bool = True) -> dict[int, np.ndarray]:
    """{manifest row: float64 [len(RECORD_FEATURES)]} for `rows` of `store`. With `cache` (a .npz),
    features already computed for a record id are read back and new ones added, so a resumed or
    repeated run on the same store does not detect the R peaks again; a cache of another feature
    list (an earlier version's) is computed afresh."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            if "names" in saved and saved["names"].tolist() == RECORD_FEATURES:
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
    np.savez(partial, record_id=np.array(list(known)), features=np.stack(list(known.values())),
             names=np.array(RECORD_FEATURES))
    partial.replace(cache)


@dataclass
class RRStandardizer:
    """z-scores of the record features named `features` (a model's: all of `RECORD_FEATURES`, or the
    16 RR features of a model fine-tuned before the shape features) with the training records' mean
    and standard deviation; NaN (no beats found) -> 0 (the training mean); clipped to +/- CLIP."""

    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]
    features: tuple[str, ...] = tuple(RECORD_FEATURES)  # names of the F columns

    def __post_init__(self):
        self.features = tuple(self.features)  # a JSON round trip gives a list
        unknown = [name for name in self.features if name not in RECORD_FEATURES]
        if unknown:
            raise ValueError(f"the model's record features {unknown} are not among this version's {RECORD_FEATURES}")
        if not len(self.mean) == len(self.std) == len(self.features):
            raise ValueError(f"{len(self.features)} feature names for {len(self.mean)} means and {len(self.std)} deviations")
        self._columns = [RECORD_FEATURES.index(name) for name in self.features]

    @classmethod
    def fit(cls, features: np.ndarray) -> "RRStandardizer":
        """From training features `[n, len(RECORD_FEATURES)]` (NaN rows ignored per feature)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an all-NaN column (no beats anywhere) -> mean 0, std 1
            mean, std = np.nanmean(features, axis=0), np.nanstd(features, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(mean, std)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """float32 [..., F]: the standardized columns `self.features` of `features [..., len(RECORD_FEATURES)]`."""
        z = (np.asarray(features, dtype=np.float64)[..., self._columns] - self.mean) / self.std
        return np.clip(np.nan_to_num(z, nan=0.0), -CLIP, CLIP).astype(np.float32)

    def to_json(self) -> dict:
        return {"features": list(self.features), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "RRStandardizer":
        return cls(np.array(data["mean"], dtype=np.float64), np.array(data["std"], dtype=np.float64), data["features"])
