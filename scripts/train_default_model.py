"""Train the `anyecg-small` checkpoint shipped inside the package, and measure it.

    OMP_NUM_THREADS=1 python scripts/train_default_model.py --data ../shared/data --out runs/default [--install]

Steps:
1. Link the pretraining corpus: every recording of the PhysioNet folder whose patient is in no
   downstream test split (`anyecg.data.physionet.pretraining_corpus`: PTB-XL folds 1-8, MIT-BIH DS1,
   CinC 2021, CODE-15%, CPSC 2019, PTB) and prepare it into one store.
2. Train the tokenizer (stage 1) and the masked-code backbone (stage 2) on all of its records with
   the preset's training aids, 10 s windows.
3. Measure on PTB-XL, which the model saw only through folds 1-8 and never with labels: the health
   figures of `anyecg.evaluation.tokenizer_health` on folds 9-10 (baselines fitted on folds 1-8) and
   linear probes of the frozen embedding on the five diagnostic superclasses at 1%, 10% and 100% of
   the fold 1-8 labels (C chosen on fold 9, test on fold 10), against a random-init control.

During training, health figures (`anyecg.training.health`) on 200 PTB-XL fold 9-10 records and a
linear probe's fold-9 macro AUROC are written every `--health-every` steps to `health.jsonl` and
`health.png` in the `tokenizer/` and `backbone/` run folders.

`--install` copies the final checkpoint and `training_summary.json` into
`src/anyecg/weights/anyecg-small/`. A killed run resumes from its checkpoints when rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from anyecg.data.physionet import pretraining_corpus
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.probe import linear_probe, random_init_like, store_embeddings, store_targets
from anyecg.evaluation.tokenizer_health import tokenizer_health
from anyecg.pretrained import AnyECG
from anyecg.training.health import HEALTH_LOG
from anyecg.training.loop import TrainConfig
from anyecg.training.pretrain import pretrain_backbone, pretrain_tokenizer

PRESET = "anyecg-small"
LABEL_FRACTIONS = (0.01, 0.1, 1.0)
PROBE_SEEDS = 5


def probe_table(model: AnyECG, store: Store) -> dict[str, dict[str, float]]:
    """Test macro AUROC (mean, std over seeds) of linear probes at each label fraction."""
    manifest = store.manifest
    _, targets = store_targets(store)
    features = store_embeddings(model, store)
    table = {}
    for fraction in LABEL_FRACTIONS:
        scores = [linear_probe(features, targets, manifest["split"].to_numpy(), manifest["patient_id"].astype(str).to_numpy(),
                               label_fraction=fraction, seed=seed)["test_macro_auroc"] for seed in range(PROBE_SEEDS)]
        table[f"{fraction:.0%}"] = {"mean": round(float(np.mean(scores)), 4), "std": round(float(np.std(scores)), 4)}
    return table


def training_seconds(run: Path, measured: float) -> float:
    """A stage's training time: its health log keeps the total across resumes (checks left out), the clock
    of this call only sees the part after the last resume."""
    log = run / HEALTH_LOG
    if not log.is_file():
        return measured
    return json.loads(log.read_text().splitlines()[-1])["train_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer-steps", type=int, default=3200)
    parser.add_argument("--backbone-steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--health-every", type=int, default=200, help="0: no figures during training")
    parser.add_argument("--install", action="store_true")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    start = time.perf_counter()
    labels = pretraining_corpus(args.data, out / "corpus")
    result = prepare(PrepareConfig(sources=[out / "corpus"], out=out / "store", labels_csv=labels, workers=2, progress=False))
    ptbxl = prepare(PrepareConfig(sources=[args.data / "ptbxl" / "records250"], out=out / "ptbxl-store",
                                  labels_csv=args.data / "ptbxl" / "labels.csv", workers=2, progress=False))
    timings["prepare_s"] = time.perf_counter() - start
    store, ptbxl_store = Store(result.store), Store(ptbxl.store)

    def config(steps: int, lr: float) -> TrainConfig:
        return TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=lr, warmup_steps=steps // 20,
                           save_every=100, log_every=10, seed=0)

    start = time.perf_counter()
    health = {"health_every": args.health_every, "health_data": ptbxl_store.root, "health_probe": ptbxl_store.root}
    pretrain_tokenizer(store.root, PRESET, out / "tokenizer", config(args.tokenizer_steps, 1e-3), split=None, window_s=10,
                       **health)
    timings["tokenizer_s"] = training_seconds(out / "tokenizer", time.perf_counter() - start)
    start = time.perf_counter()
    pretrain_backbone(store.root, out / "tokenizer", PRESET, out / "backbone", config(args.backbone_steps, 5e-4),
                      split=None, window_s=10, **health)
    timings["backbone_s"] = training_seconds(out / "backbone", time.perf_counter() - start)

    model = AnyECG.from_pretrained(out / "backbone")
    control = random_init_like(model, seed=0)
    manifest = store.manifest
    summary = {
        "preset": PRESET,
        "records": len(store),
        "hours": round(float(manifest["duration_s"].sum()) / 3600, 2),
        "records_by_source": manifest["source"].map(lambda s: Path(s).parent.name).value_counts().to_dict(),
        "skipped": result.skipped,
        "tokenizer_steps": args.tokenizer_steps,
        "backbone_steps": args.backbone_steps,
        "batch_size": args.batch_size,
        "window_s": 10,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "ptbxl_health": tokenizer_health(model, ptbxl_store),
        "ptbxl_probe_macro_auroc": {"pretrained": probe_table(model, ptbxl_store),
                                    "random_init": probe_table(control, ptbxl_store)},
        "torch_threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if args.install:
        target = Path(__file__).resolve().parents[1] / "src" / "anyecg" / "weights" / PRESET
        card = (target / "MODEL_CARD.md").read_text() if (target / "MODEL_CARD.md").is_file() else None
        if target.exists():
            shutil.rmtree(target)
        model.save_pretrained(target)
        shutil.copy(out / "summary.json", target / "training_summary.json")
        if card is not None:
            (target / "MODEL_CARD.md").write_text(card)  # the card is written by hand from the summary


if __name__ == "__main__":
    main()
