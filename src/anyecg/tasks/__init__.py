"""Downstream tasks: what each predicts, as labels over the prepared store.

    labels   record classes: normal vs abnormal (anomaly), rhythm class (arrhythmia), per-split counts
    beats    MIT-BIH beats in AAMI classes, the DS1/DS2 inter-patient split
    rhythm   rhythm stretches of long recordings, fixed AF / non-AF segments, CPSC 2021 record class

A training or evaluation example is a `Sample(record, start, stop, label)`: manifest row, window in
samples at the store's rate, class.
"""

from anyecg.tasks.beats import AAMI, AAMI_CLASSES, DS1, DS2, PACED, aami_beats, beat_samples, beat_windows, inter_patient_split
from anyecg.tasks.labels import LabelSet, Sample, anomaly_label, arrhythmia_label, build_record_labels
from anyecg.tasks.rhythm import af_or_not, long_record_label, long_segments, rhythm_segments, segment_labels

__all__ = [
    "AAMI", "AAMI_CLASSES", "DS1", "DS2", "PACED", "LabelSet", "Sample", "aami_beats", "af_or_not",
    "anomaly_label", "arrhythmia_label", "beat_samples", "beat_windows", "build_record_labels",
    "inter_patient_split", "long_record_label", "long_segments", "rhythm_segments", "segment_labels",
]
