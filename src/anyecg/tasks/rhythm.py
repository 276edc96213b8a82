"""Rhythm labels of long recordings (MIT-BIH, CPSC 2021): rhythm segments, fixed windows, record class.

WFDB rhythm annotations are aux strings starting with "(" ("(AFIB", "(N", "(AFL", "(VT", ...),
usually on a "+" annotation; each rhythm lasts until the next rhythm annotation. CPSC 2021 marks an
AF episode with "(AFIB" at its onset and "(N" at its end and writes "None" in the aux field of every
beat; aux strings that do not start with "(" are not rhythm changes and are ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from anyecg.io.recording import Annotations
from anyecg.tasks.labels import CPSC2021_CLASSES, Sample

# MIT-BIH and CPSC 2021 both count atrial flutter with atrial fibrillation as "AF".
AF_RHYTHMS: frozenset[str] = frozenset({"AFIB", "AFL"})
# Rhythm of the stretch before the first rhythm annotation (CPSC 2021 non-AF records carry none).
UNKNOWN_RHYTHM = "unknown"
# WFDB beat symbols (MIT-BIH): "N" is a normal beat; every other one is an abnormal or
# unclassifiable beat. Annotations not in this set ("+", "~", "|", '"', ...) are not beats.
BEAT_SYMBOLS: frozenset[str] = frozenset("NLRBAaJSVrFejnE/fQ?")
NORMAL_SINUS = "N"


def rhythm_name(aux: str) -> str | None:
    """"(AFIB" -> "AFIB"; None for an aux string that is not a rhythm change."""
    text = str(aux).strip().rstrip("\x00").strip()
    if not text.startswith("(") or len(text) < 2:
        return None
    return text[1:]


def rhythm_segments(
    annotations: Annotations | None, n_samples: int, fs: float = 300.0, initial: str = UNKNOWN_RHYTHM
) -> list[tuple[int, int, str]]:
    """(start, stop, rhythm) stretches that tile `[0, n_samples)` without gaps or overlaps.

    Each rhythm annotation starts a stretch that lasts until the next one (or the record's end);
    before the first, the rhythm is `initial`. Consecutive stretches of one rhythm are merged, empty
    ones dropped (an annotation on the last sample, as CPSC 2021 writes, leaves nothing). `fs` is
    the rate of the annotation samples and `n_samples`; it is only checked, since both are given at
    one rate.
    """
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if fs <= 0:
        raise ValueError(f"fs must be positive, got {fs}")
    changes: list[tuple[int, str]] = []
    if annotations is not None:
        for sample, aux in zip(annotations.sample.tolist(), annotations.aux):
            name = rhythm_name(aux)
            if name is not None:
                changes.append((min(max(int(sample), 0), n_samples), name))
    changes.sort(key=lambda change: change[0])  # stable: annotations on one sample keep file order
    bounds = [(0, initial)] + changes
    segments: list[tuple[int, int, str]] = []
    for i, (start, name) in enumerate(bounds):
        stop = bounds[i + 1][0] if i + 1 < len(bounds) else n_samples
        if stop <= start:
            continue
        if segments and segments[-1][2] == name and segments[-1][1] == start:
            segments[-1] = (segments[-1][0], stop, name)
        else:
            segments.append((start, stop, name))
    return segments


def af_or_not(rhythm: str) -> str:
    """Default segment class: "AF" for atrial fibrillation or flutter, else "non-AF"."""
    return "AF" if rhythm in AF_RHYTHMS else "non-AF"


def segment_labels(
    segments: list[tuple[int, int, str]],
    windows: np.ndarray,
    label_fn: Callable[[str], str] = af_or_not,
    rule: str = "majority",
    positive: str = "AF",
) -> list[str]:
    """Class of each `[start, stop)` row of `windows` ([n, 2]) from the rhythm stretches it overlaps.

    rule "majority": the class covering most of the window (ties go to the class listed first in
    `segments`). rule "any": `positive` if any sample of the window is `positive`, otherwise the
    majority class.
    """
    if rule not in ("majority", "any"):
        raise ValueError(f"rule must be 'majority' or 'any', got {rule!r}")
    starts = np.array([s[0] for s in segments], dtype=np.int64)  # [S]
    stops = np.array([s[1] for s in segments], dtype=np.int64)  # [S]
    classes = [label_fn(s[2]) for s in segments]
    names = list(dict.fromkeys(classes))
    class_of = np.array([names.index(c) for c in classes], dtype=np.int64)  # [S]
    labels = []
    for window_start, window_stop in windows.tolist():
        # overlap of this window with every stretch, summed per class
        overlap = np.clip(np.minimum(stops, window_stop) - np.maximum(starts, window_start), 0, None)  # [S]
        per_class = np.bincount(class_of, weights=overlap, minlength=len(names))  # [C]
        if rule == "any" and positive in names and per_class[names.index(positive)] > 0:
            labels.append(positive)
        else:
            labels.append(names[int(np.argmax(per_class))])
    return labels


def long_segments(
    store,
    record_index: int,
    segment_s: float = 10.0,
    label_fn: Callable[[str], str] = af_or_not,
    rule: str = "majority",
    hop_s: float | None = None,
) -> list[Sample]:
    """Cut one stored record into fixed `segment_s` windows (every `hop_s`, default no overlap),
    each labelled from the record's rhythm annotations by `segment_labels`.

    A tail shorter than `segment_s` is left out; a record shorter than one segment gives none.
    A record without annotations has no rhythm information, and is refused.
    """
    row = store.manifest.iloc[record_index]
    record_id = str(row["record_id"])
    fs = float(store.recipe.target_fs)
    n_samples = int(row["n_samples"])
    length = int(round(segment_s * fs))
    hop = length if hop_s is None else int(round(hop_s * fs))
    if length <= 0 or hop <= 0:
        raise ValueError(f"segment_s and hop_s must be positive, got {segment_s}, {hop_s}")
    annotations = store.annotations(record_id)
    if annotations is None:
        raise ValueError(f"record {record_id}: no annotations in the store, so no rhythm to label segments with")
    starts = np.arange(0, n_samples - length + 1, hop, dtype=np.int64)  # [n]
    windows = np.stack([starts, starts + length], axis=1)  # [n, 2]
    labels = segment_labels(rhythm_segments(annotations, n_samples, fs), windows, label_fn, rule)
    return [Sample(record_index, int(a), int(b), label) for (a, b), label in zip(windows.tolist(), labels)]


def window_anomaly_labels(annotations: Annotations, n_samples: int, window: int, hop: int | None = None) -> list[Sample]:
    """Consecutive `window`-sample windows of one beat-annotated record (MIT-BIH), each "normal" or
    "abnormal" (the anomaly-detection classes; record index -1: the caller's record).

    "normal": the whole window lies in normal sinus rhythm ("(N") and holds at least one beat, all of
    them normal ("N"). "abnormal": any other rhythm or any other beat in the window. Windows before
    the first rhythm annotation are left out: their rhythm is unknown.
    """
    if window <= 0 or n_samples < window:
        return []
    hop = window if hop is None else hop
    segments = rhythm_segments(annotations, n_samples)
    beats = [(int(s), sym) for s, sym in zip(annotations.sample.tolist(), annotations.symbol) if sym in BEAT_SYMBOLS]
    beat_samples = np.array([b[0] for b in beats], dtype=np.int64)  # [n_beats]
    abnormal_beat = np.array([b[1] != "N" for b in beats], dtype=bool)  # [n_beats]
    samples = []
    for start in range(0, n_samples - window + 1, hop):
        stop = start + window
        rhythms = {name for a, b, name in segments if a < stop and b > start}
        if UNKNOWN_RHYTHM in rhythms:
            continue
        inside = (beat_samples >= start) & (beat_samples < stop)  # [n_beats]
        normal = rhythms == {NORMAL_SINUS} and inside.any() and not abnormal_beat[inside].any()
        samples.append(Sample(-1, start, stop, "normal" if normal else "abnormal"))
    return samples


def long_record_label(labels: list[str]) -> str | None:
    """Record class from a CPSC 2021 header comment: persistent or paroxysmal AF -> "AF",
    non atrial fibrillation -> "non-AF"; None for any other label list."""
    for label in labels:
        name = CPSC2021_CLASSES.get(str(label).strip().lower())
        if name is not None:
            return name
    return None
