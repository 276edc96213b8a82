"""Label efficiency of frozen AnyECG embeddings: linear probes at 1%, 10% and 100% of the labels.

    python benchmarks/label_efficiency.py --data ptbxl-store/ --model runs/pretrain [--model ...] \
        [--fractions 0.01 0.1 1] [--seeds 5] [--out label-efficiency.json]

For each checkpoint (`shipped` names the one in the package) and a random-init control of the same
architecture, every store record is embedded (mean over its 10 s windows), then
`anyecg.evaluation.probe.linear_probe` fits one-vs-rest logistic regressions on the store's train
split subsampled by patient, chooses C on val and scores test once. Labels are the store's own
(`;`-separated classes, e.g. PTB-XL's superclasses with its official folds). The table gives test
macro AUROC, mean +/- sample std over seeds: each seed draws the label subset and, for the control,
its random weights (so at 100% of the labels only the pretrained rows agree across seeds).
Use a store whose records the checkpoints never saw in pretraining.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from anyecg.data.store import Store
from anyecg.evaluation.probe import linear_probe, random_init_like, store_embeddings, store_targets
from anyecg.pretrained import AnyECG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, help="checkpoint folder, or 'shipped'")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    store = Store(args.data)
    manifest = store.manifest
    classes, targets = store_targets(store)
    splits, patients = manifest["split"].to_numpy(), manifest["patient_id"].astype(str).to_numpy()

    results = []
    for name in args.model:
        pretrained = AnyECG.from_pretrained(None if name == "shipped" else name)
        start = time.perf_counter()
        pretrained_features = store_embeddings(pretrained, store)
        embed_s = time.perf_counter() - start
        # The control draws fresh random weights for each seed: one random network's features can
        # probe several AUROC points better or worse than another's.
        features = {"pretrained": [pretrained_features] * args.seeds,
                    "random init": [store_embeddings(random_init_like(pretrained, seed), store) for seed in range(args.seeds)]}
        for init, per_seed in features.items():
            for fraction in args.fractions:
                runs = [linear_probe(per_seed[seed], targets, splits, patients, label_fraction=fraction, seed=seed)
                        for seed in range(args.seeds)]
                scores = [run["test_macro_auroc"] for run in runs]
                results.append({"model": name, "init": init, "label_fraction": fraction,
                                "test_macro_auroc_mean": float(np.mean(scores)), "test_macro_auroc_std": float(np.std(scores, ddof=1)),
                                "test_macro_auroc_per_seed": scores,
                                "train_records": [run["train_records"] for run in runs], "C": [run["C"] for run in runs],
                                "embed_s_per_model": round(embed_s, 1)})
                row = results[-1]
                print(f"{name:>40} {init:>12} {fraction:>6.0%}  test macro AUROC {row['test_macro_auroc_mean']:.3f} "
                      f"+/- {row['test_macro_auroc_std']:.3f}  ({np.mean(row['train_records']):.0f} train records)", flush=True)
    report = {"store": str(args.data), "classes": classes, "records": int(len(manifest)), "results": results}
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
