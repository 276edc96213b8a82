"""A classical anchor for record-level rhythm classes: heart-rate-variability features + gradient boosting.

    python benchmarks/rhythm_features.py --data store/ [--lead 0] [--out rhythm-features.json]

For a store whose records carry one rhythm class each (e.g. the N / AF / O set that
`benchmarks/finetune_quality.py` builds), R peaks are found on one lead with wfdb's XQRS detector,
and every record becomes the 22 features of `anyecg.tasks.record_rr` (the ones `anyecg finetune`
joins to a network's features by default): 16 RR-interval features (mean, standard deviation and
coefficient of variation of RR; RMSSD; pNN50; the median and the largest absolute successive
difference over mean RR; RR percentiles, min and max; heart rate; RR-histogram occupancy and
entropy; successive RR ratios) and 6 beat-shape features (the share of ectopic beats, the RR
variability between beats of the dominant shape, P-wave consistency and size, the beats' difference
from the median beat). Records with fewer than four detected beats get missing values, which the
classifier handles.

For the 16 RR features alone and for all 22, scikit-learn's HistGradientBoostingClassifier (with
and without balanced class weights, three learning rates) is fitted on train; the setting with the
best val macro F1 is scored once on test. The anchor says how much of a rhythm task a model could
get from RR timing (and beat shape) alone. The last line printed is one JSON object.

Measured (2-core CPU, 1 thread) on the 2,919-record single-lead N / AF / O set of
`finetune_quality.py` (split by patient; 19 s of R-peak detection and features beside three
fine-tuning runs):
- RR features: balanced class weights at learning rate 0.3 selected (val macro F1 0.695); test macro
  F1 0.652 (AF 0.65, N 0.90, O 0.41), accuracy 0.827, macro AUROC 0.890;
- RR + shape features: no class weights at learning rate 0.3 (val 0.837); test macro F1 0.759 (AF
  0.95, N 0.94, O 0.39), accuracy 0.900, macro AUROC 0.941.
The fit is deterministic; with ~40 test records per minority class, differences under ~0.05 are
within noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score, roc_auc_score

from anyecg.data.store import Store
from anyecg.tasks.record_rr import RECORD_FEATURES, RECORD_RR_FEATURES, record_rr_features

GRID = [(class_weight, rate) for class_weight in (None, "balanced") for rate in (0.03, 0.1, 0.3)]
FEATURE_SETS = {"rr": list(range(len(RECORD_RR_FEATURES))), "rr+shape": list(range(len(RECORD_FEATURES)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="store with one class per record and train/val/test")
    parser.add_argument("--lead", type=int, default=0, help="index of the lead the R peaks are found on")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    store = Store(args.data)
    manifest = store.manifest
    labels = manifest["labels"].fillna("").astype(str).to_numpy()
    if any(";" in label for label in labels):
        raise ValueError(f"{args.data}: multi-label records; this anchor needs one class per record")
    labelled = labels != ""
    start = time.perf_counter()
    features = np.stack([record_rr_features(store.signal(row)[args.lead], store.recipe.target_fs) if labelled[row]
                         else np.full(len(RECORD_FEATURES), np.nan) for row in range(len(manifest))])
    feature_s = time.perf_counter() - start
    split = manifest["split"].to_numpy()
    rows = {name: labelled & (split == name) for name in ("train", "val", "test")}
    classes = sorted(set(labels[labelled]))

    result = {"store": str(args.data), "records": {name: int(mask.sum()) for name, mask in rows.items()},
              "no_beats_found": int(np.isnan(features[labelled, 0]).sum()), "feature_s": round(feature_s, 1),
              "feature_sets": {}}
    for name, columns in FEATURE_SETS.items():
        x = features[:, columns]
        scored = []
        for class_weight, rate in GRID:
            model = HistGradientBoostingClassifier(learning_rate=rate, max_iter=300, class_weight=class_weight,
                                                   random_state=0).fit(x[rows["train"]], labels[rows["train"]])
            val_f1 = f1_score(labels[rows["val"]], model.predict(x[rows["val"]]), average="macro")
            scored.append((val_f1, class_weight, rate, model))
        val_f1, class_weight, rate, model = max(scored, key=lambda item: item[0])
        truth, predicted = labels[rows["test"]], model.predict(x[rows["test"]])
        probabilities = model.predict_proba(x[rows["test"]])
        result["feature_sets"][name] = {
            "selected": {"class_weight": class_weight, "learning_rate": rate, "val_f1_macro": round(float(val_f1), 4)},
            "test_f1_macro": round(float(f1_score(truth, predicted, average="macro")), 4),
            "test_f1_per_class": dict(zip(classes, np.round(f1_score(truth, predicted, average=None, labels=classes), 4).tolist())),
            "test_accuracy": round(float((truth == predicted).mean()), 4),
            "test_macro_auroc": round(float(roc_auc_score(truth, probabilities, multi_class="ovr", average="macro",
                                                          labels=model.classes_)), 4),
        }
    text = json.dumps(result)
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
