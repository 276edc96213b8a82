"""Beat classes of MIT-BIH under the AAMI EC57 grouping, with the inter-patient split of
de Chazal et al. (IEEE TBME 51(7), 2004): train on DS1, test on DS2, paced records left out.

Only beat annotations are classified; rhythm changes ("+"), noise ("~"), isolated QRS-like
artefacts ("|"), comments ('"'), non-conducted P waves ("x") and other non-beat symbols are skipped.
"""

from __future__ import annotations

import numpy as np

from anyecg.io.recording import Annotations
from anyecg.tasks.labels import Sample

AAMI: dict[str, list[str]] = {
    "N": ["N", "L", "R", "e", "j"],  # normal, bundle branch block, atrial / nodal escape
    "S": ["A", "a", "J", "S"],  # supraventricular ectopic
    "V": ["V", "E"],  # premature ventricular contraction, ventricular escape
    "F": ["F"],  # fusion of ventricular and normal
    "Q": ["/", "f", "Q"],  # paced, fusion of paced and normal, unclassifiable
}
AAMI_CLASSES: list[str] = list(AAMI)
SYMBOL_TO_AAMI: dict[str, str] = {symbol: name for name, symbols in AAMI.items() for symbol in symbols}

DS1: list[str] = [
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
    "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
]
DS2: list[str] = [
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
    "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
]
PACED: list[str] = ["102", "104", "107", "217"]


def aami_beats(annotations: Annotations | None) -> list[tuple[int, str]]:
    """(sample, AAMI class) of every beat annotation, in file order; non-beat symbols skipped."""
    if annotations is None:
        return []
    return [
        (int(sample), SYMBOL_TO_AAMI[symbol])
        for sample, symbol in zip(annotations.sample.tolist(), annotations.symbol)
        if symbol in SYMBOL_TO_AAMI
    ]


def beat_samples(store, record_index: int) -> list[tuple[int, str]]:
    """(R-peak sample at the store's rate, AAMI class) of every beat of one stored record."""
    record_id = str(store.manifest.iloc[record_index]["record_id"])
    return aami_beats(store.annotations(record_id))


RR_FEATURES: list[str] = [
    "log_pre_rr", "log_post_rr", "log_local_rr", "log_record_rr",  # seconds, log
    "log_pre_over_local", "log_post_over_local", "log_pre_over_record", "log_post_over_record", "log_pre_over_post",
]
LOCAL_BEATS = 10  # the local rhythm: mean of the RR intervals ending at this beat and the 9 before


def rr_features(peaks: np.ndarray, fs: float) -> np.ndarray:
    """float32 [n, len(RR_FEATURES)] RR-interval features of each of `n` beats (R-peak samples, in time order).

    The RR interval before the beat (pre), after it (post), the local mean of the last LOCAL_BEATS
    intervals up to this beat, the record's median, and their ratios -- the features inter-patient
    beat classifiers rely on (de Chazal et al. 2004; Mondejar-Guerra et al. 2019): a premature beat
    has a short pre and a long post interval *relative to the patient's own rhythm*, which a window
    of the signal alone cannot tell. Logs make ratios symmetric around 0. The first beat's pre is its
    post and the last beat's post is its pre; fewer than two beats give zeros (no rhythm known).
    """
    n = len(peaks)
    if n < 2:
        return np.zeros((n, len(RR_FEATURES)), dtype=np.float32)
    intervals = np.diff(np.asarray(peaks, dtype=np.float64)) / fs  # [n - 1] seconds
    intervals = np.maximum(intervals, 1.0 / fs)  # two annotations on one sample: one sample apart
    pre = np.r_[intervals[0], intervals]  # [n]
    post = np.r_[intervals, intervals[-1]]  # [n]
    cumulative = np.r_[0.0, np.cumsum(pre)]  # [n + 1]
    index = np.arange(n)
    first = np.maximum(index + 1 - LOCAL_BEATS, 0)
    local = (cumulative[index + 1] - cumulative[first]) / (index + 1 - first)  # [n]
    record = np.full(n, np.median(intervals))
    logs = np.log(np.stack([pre, post, local, record], axis=1))  # [n, 4]
    ratios = np.stack([logs[:, 0] - logs[:, 2], logs[:, 1] - logs[:, 2], logs[:, 0] - logs[:, 3],
                       logs[:, 1] - logs[:, 3], logs[:, 0] - logs[:, 1]], axis=1)  # [n, 5]
    return np.concatenate([logs, ratios], axis=1).astype(np.float32)


TEMPLATE_FEATURES: list[str] = [
    "qrs_correlation", "beat_correlation",  # Pearson r with the record's median beat
    "log_qrs_rms_ratio", "log_qrs_range_ratio",  # QRS size against the median beat's
    "log_difference_ratio",  # RMS of (beat - median beat) over the median beat's RMS
]
BEAT_SPAN_S = (0.25, 0.45)  # the beat compared: 250 ms before the R peak (P wave) to 450 ms after (T wave)
QRS_HALF_S = 0.1  # the QRS compared: R peak +/- 100 ms


def beat_segments(signal: np.ndarray, peaks: np.ndarray, before: int, after: int) -> np.ndarray:
    """float64 [L, n, before + after + 1]: each lead of `signal [L, T]` from `before` samples before each
    of the `n` peaks to `after` samples after it (a negative `after` ends the segment before the peak),
    its mean removed; the signal's edge samples repeat beyond its ends."""
    pad_before, pad_after = max(before, 0), max(after, 0)
    padded = np.pad(np.asarray(signal, dtype=np.float64), ((0, 0), (pad_before, pad_after)), mode="edge")  # [L, T + pads]
    offsets = np.arange(-before, after + 1)  # [S]
    segments = padded[:, np.asarray(peaks)[:, None] + pad_before + offsets[None, :]]  # [L, n, S]
    return segments - segments.mean(axis=2, keepdims=True)


def template_features(signal: np.ndarray, peaks: np.ndarray, fs: float) -> np.ndarray:
    """float32 [n, len(TEMPLATE_FEATURES)] shape of each of `n` beats against the record's median beat.

    `signal` is [leads, T]; the leads of a beat are compared together (their segments joined). The
    median over all the record's beats is its dominant morphology: a ventricular beat is far from it
    and a bundle-branch-block beat, wide as it is, matches its own record's -- what a network trained
    on other patients cannot tell from the beat alone (the patient-relative idea of the RR features).
    Each segment's mean is removed per lead (`beat_segments`), so baseline offsets do not count.
    Fewer than two beats give zeros (no dominant beat known).
    """
    n = len(peaks)
    if n < 2:
        return np.zeros((n, len(TEMPLATE_FEATURES)), dtype=np.float32)
    before, after = (int(round(s * fs)) for s in BEAT_SPAN_S)
    half_qrs = int(round(QRS_HALF_S * fs))
    segments = beat_segments(signal, peaks, before, after)  # [L, n, S]
    template = np.median(segments, axis=1, keepdims=True)  # [L, 1, S]
    qrs = slice(before - half_qrs, before + half_qrs + 1)

    def joined(x: np.ndarray) -> np.ndarray:  # [L, m, s] -> [m, L * s]: the leads side by side
        return np.moveaxis(x, 0, 1).reshape(x.shape[1], -1)

    beat, median = joined(segments), joined(template)  # [n, L*S], [1, L*S]
    beat_qrs, median_qrs = joined(segments[:, :, qrs]), joined(template[:, :, qrs])
    tiny = 1e-6

    def correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # Pearson r of each row of a with b
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + tiny)

    def rms(x: np.ndarray) -> np.ndarray:
        return np.sqrt((x**2).mean(axis=1)) + tiny

    def value_range(x: np.ndarray) -> np.ndarray:
        return x.max(axis=1) - x.min(axis=1) + tiny

    features = np.stack([
        correlation(beat_qrs, median_qrs),
        correlation(beat, median),
        np.log(rms(beat_qrs) / rms(median_qrs)),
        np.log(value_range(beat_qrs) / value_range(median_qrs)),
        np.log(rms(beat - median) / rms(median)),
    ], axis=1)  # [n, F]
    return features.astype(np.float32)


def beat_windows(store, record_index: int, window_s: float = 1.0, center_s: float | None = None) -> list[Sample]:
    """A fixed window around each beat of one stored record.

    The window is `window_s` long with the R peak `center_s` after its start (default: the middle).
    Near the record's edges the window is shifted to lie inside the record, so every window has the
    same length and the beat stays inside it; a record shorter than one window gives none.
    """
    fs = float(store.recipe.target_fs)
    n_samples = int(store.manifest.iloc[record_index]["n_samples"])
    length = int(round(window_s * fs))
    before = length // 2 if center_s is None else int(round(center_s * fs))
    if length <= 0 or not 0 <= before < length:
        raise ValueError(f"need window_s > 0 and 0 <= center_s < window_s, got {window_s}, {center_s}")
    if n_samples < length:
        return []
    samples = []
    for center, label in beat_samples(store, record_index):
        start = min(max(center - before, 0), n_samples - length)
        samples.append(Sample(record_index, start, start + length, label))
    return samples


def inter_patient_split(record_ids) -> dict[str, list[str]]:
    """{"train": DS1 ids present, "test": DS2 ids present}, in DS order; paced and other ids left out."""
    present = {str(record_id) for record_id in record_ids}
    return {
        "train": [record_id for record_id in DS1 if record_id in present],
        "test": [record_id for record_id in DS2 if record_id in present],
    }
