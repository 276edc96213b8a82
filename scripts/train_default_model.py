"""Train the `anyecg-small` checkpoint shipped inside the package, and write its model card.

    OMP_NUM_THREADS=1 python scripts/train_default_model.py --data ../shared/data --out runs/default

Steps: prepare every recording of the PhysioNet folder into one store (CODE-15 and CPSC 2019 get
their rate and lead names from a generated labels CSV), train the tokenizer (stage 1) and the
masked-code backbone (stage 2) on the store's patient-level train split, then measure on the
held-out val + test records: codebook usage and perplexity, patch reconstruction error,
masked-code accuracy against the most-frequent-code baseline, and a plot of original vs
reconstructed patches. With `--compare-dead-codes` a second tokenizer is trained with k-means
seeding and code restarts switched off, and the code usage of both is reported.
`--install` copies the final checkpoint and the card into `src/anyecg/weights/anyecg-small/`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from anyecg.data.physionet import corpus_labels_csv
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.tokenizer_report import held_out_metrics
from anyecg.pretrained import AnyECG
from anyecg.training.loop import TrainConfig
from anyecg.training.pretrain import pretrain_backbone, pretrain_tokenizer

PRESET = "anyecg-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokenizer-steps", type=int, default=1200)
    parser.add_argument("--backbone-steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compare-dead-codes", action="store_true")
    parser.add_argument("--install", action="store_true")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    start = time.perf_counter()
    result = prepare(PrepareConfig(sources=[args.data], out=out / "store", labels_csv=corpus_labels_csv(args.data, out / "labels.csv"),
                                   workers=2, progress=False))
    timings["prepare_s"] = time.perf_counter() - start
    store = Store(result.store)

    def config(steps: int, lr: float) -> TrainConfig:
        return TrainConfig(max_steps=steps, batch_size=args.batch_size, lr=lr, warmup_steps=steps // 20,
                           save_every=100, log_every=10, seed=0)

    start = time.perf_counter()
    pretrain_tokenizer(store.root, PRESET, out / "tokenizer", config(args.tokenizer_steps, 1e-4), window_s=10)
    timings["tokenizer_s"] = time.perf_counter() - start
    if args.compare_dead_codes:
        start = time.perf_counter()
        pretrain_tokenizer(store.root, PRESET, out / "tokenizer-no-remedy", config(args.tokenizer_steps, 1e-4), window_s=10,
                           kmeans_init=False, restart_after=0)
        timings["tokenizer_no_remedy_s"] = time.perf_counter() - start
    start = time.perf_counter()
    pretrain_backbone(store.root, out / "tokenizer", PRESET, out / "backbone", config(args.backbone_steps, 5e-4), window_s=10)
    timings["backbone_s"] = time.perf_counter() - start

    model = AnyECG.from_pretrained(out / "backbone")
    metrics = held_out_metrics(model, store, out / "patches.png")
    if args.compare_dead_codes:
        plain = AnyECG.from_pretrained(out / "tokenizer-no-remedy")
        model_plain = AnyECG(plain.tokenizer, model.backbone, model.recipe, PRESET)
        no_remedy = held_out_metrics(model_plain, store, out / "patches-no-remedy.png")
        metrics["without_dead_code_remedy"] = {k: no_remedy[k] for k in ("code_usage", "code_perplexity", "patch_mse")}
    summary = {
        "preset": PRESET,
        "records": len(store),
        "train_records": int((store.manifest["split"] == "train").sum()),
        "train_hours": round(float(store.manifest.loc[store.manifest["split"] == "train", "duration_s"].sum()) / 3600, 2),
        "skipped": result.skipped,
        "tokenizer_steps": args.tokenizer_steps,
        "backbone_steps": args.backbone_steps,
        "batch_size": args.batch_size,
        "window_s": 10,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "held_out": metrics,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if args.install:
        target = Path(__file__).resolve().parents[1] / "src" / "anyecg" / "weights" / PRESET
        if target.exists():
            shutil.rmtree(target)
        model.save_pretrained(target)
        shutil.copy(out / "summary.json", target / "training_summary.json")
        shutil.copy(out / "patches.png", target.parent / f"{PRESET}-patches.png")


if __name__ == "__main__":
    main()
