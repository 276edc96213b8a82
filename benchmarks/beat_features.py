"""A classical anchor for the AAMI beat task: the beat task's hand-computed features + gradient boosting.

    python benchmarks/beat_features.py --data STORE [--out beat-features.json]

On a store of MIT-BIH records (`benchmarks/aami_beats.py` prepares one), every N/S/V/F beat
becomes the features `anyecg finetune --task beats` joins to a network's by default: its 9
RR-interval features (`anyecg.tasks.beats.rr_features`) and its 5 shape features against its
record's median beat (`anyecg.tasks.beats.template_features`). With each group alone and with both,
scikit-learn's HistGradientBoostingClassifier (with and without balanced class weights, three
learning rates) is fitted on the DS1 training patients of the beat task's split; the setting with
the best macro F1 on its validation patients (classes with >= 20 beats, as `finetune` chooses
epochs) is scored once on all DS2 beats. The fit is deterministic. The last line printed is one
JSON object.

Measured on the store of all 48 MIT-BIH records (2-core CPU, one thread, beside two fine-tuning
runs; 54 s in all), test on the 49,705 DS2 beats: RR features alone accuracy 0.878, F1 V 0.63, S 0.08;
template features alone 0.931, V 0.85, S 0.02; both 0.918, V 0.86, S 0.15, F 0.36 (docs/results.md,
section 5).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from anyecg.data.store import Store
from anyecg.evaluation.metrics import beat_metrics, to_jsonable
from anyecg.tasks.beat_task import CLASSES, FEATURE_GROUPS, frequent_classes_f1, record_beats, split_rows

GRID = [(class_weight, rate) for class_weight in (None, "balanced") for rate in (0.03, 0.1, 0.3)]
FEATURE_SETS = {"rr": ("rr",), "template": ("template",), "rr+template": ("rr", "template")}


def split_features(store: Store, rows: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({feature group: float32 [N, F]}, labels [N]) of every N/S/V/F beat of the records `rows`."""
    beats = [beat for row in rows for beat in record_beats(store, row, window_s=3)[0]]
    groups = {group: np.stack([getattr(beat, group) for beat in beats]) for group in FEATURE_GROUPS}
    return groups, np.array([beat.label for beat in beats])


def class_index(labels: np.ndarray) -> np.ndarray:
    return np.array([CLASSES.index(label) for label in labels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a store of MIT-BIH records with their beat annotations")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    store = Store(args.data)
    start = time.perf_counter()
    data = {split: split_features(store, rows) for split, rows in split_rows(store).items()}
    feature_s = time.perf_counter() - start
    result = {"store": str(args.data), "beats": {split: len(labels) for split, (_, labels) in data.items()},
              "feature_s": round(feature_s, 1), "feature_sets": {}}
    for name, groups in FEATURE_SETS.items():
        x = {split: np.concatenate([features[g] for g in groups], axis=1) for split, (features, _) in data.items()}
        y = {split: labels for split, (_, labels) in data.items()}
        scored = []
        for class_weight, rate in GRID:
            model = HistGradientBoostingClassifier(learning_rate=rate, max_iter=300, class_weight=class_weight,
                                                   random_state=0).fit(x["train"], y["train"])
            val_f1 = frequent_classes_f1(class_index(y["val"]), class_index(model.predict(x["val"])))
            scored.append((val_f1, class_weight, rate, model))
        val_f1, class_weight, rate, model = max(scored, key=lambda item: item[0])
        predicted = model.predict(x["test"])
        metrics = beat_metrics(y["test"].tolist(), predicted.tolist(), CLASSES)
        result["feature_sets"][name] = {
            "selected": {"class_weight": class_weight, "learning_rate": rate, "val_f1_macro": val_f1},
            "accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"],
            "per_class": {c: {k: metrics["per_class"][c][k] for k in ("f1", "sensitivity", "ppv")} for c in CLASSES},
        }
        print(json.dumps(to_jsonable({name: result["feature_sets"][name]})), flush=True)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.out is not None:
        args.out.write_text(json.dumps(to_jsonable(result), indent=2))
    print(json.dumps(to_jsonable(result)))


if __name__ == "__main__":
    main()
