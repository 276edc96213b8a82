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
import ast
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anyecg.data.dataset import StoreWindows, collate_windows
from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.models.backbone import random_token_mask
from anyecg.pretrained import AnyECG
from anyecg.training.loop import TrainConfig
from anyecg.training.pretrain import pretrain_backbone, pretrain_tokenizer

PRESET = "anyecg-small"
CODE15_LABELS = ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]


def labels_csv(data: Path, path: Path) -> Path:
    """Rate, leads and labels for the two sources whose .mat files carry none."""
    rows = []
    for _, exam in pd.read_csv(data / "code15" / "labels.csv").iterrows():
        labels = [name for name in CODE15_LABELS if exam[name]] or (["normal_ecg"] if exam["normal_ecg"] else [])
        leads = ";".join(ast.literal_eval(exam["lead_order"]))
        rows.append({"record": f"code_15_{exam['exam_id']}", "label": ";".join(labels),
                     "fs": exam["sample_rate"], "leads": leads})
    for mat in sorted((data / "cpsc2019" / "data").glob("*.mat")):
        rows.append({"record": mat.stem, "label": "", "fs": 500, "leads": "unknown"})  # single unnamed lead
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@torch.no_grad()
def held_out_metrics(model: AnyECG, store: Store, plot_path: Path, seed: int = 0) -> dict:
    """Tokenizer and backbone figures on the val + test records (10 s windows, tiled)."""
    windows = [StoreWindows(store, split, random_crop=False, max_window_s=10) for split in ("val", "test")]
    train_windows = StoreWindows(store, "train", random_crop=False, max_window_s=10)
    tokenizer, backbone = model.tokenizer, model.backbone
    K = tokenizer.config.num_codes

    train_counts = np.zeros(K, dtype=np.int64)
    for start in range(0, len(train_windows), 64):
        batch = collate_windows([train_windows[i] for i in range(start, min(start + 64, len(train_windows)))])
        codes = tokenizer.encode(batch["patches"], batch["lead_ids"], batch["pad_mask"])
        train_counts += np.bincount(codes[codes >= 0].numpy(), minlength=K)
    most_frequent = int(train_counts.argmax())

    counts = np.zeros(K, dtype=np.int64)
    sq_error = sq_signal = 0.0
    correct = baseline_correct = scored = 0
    generator = torch.Generator().manual_seed(seed)
    examples = None
    for dataset in windows:
        for start in range(0, len(dataset), 64):
            batch = collate_windows([dataset[i] for i in range(start, min(start + 64, len(dataset)))])
            patches, lead_ids, pad = batch["patches"], batch["lead_ids"], batch["pad_mask"]
            out = tokenizer(batch)
            valid = ~pad  # [B, L, P]
            codes = out.indices
            counts += np.bincount(codes[valid].numpy(), minlength=K)
            recon = out.reconstruction.reshape(patches.shape)  # [B, L, P, S]
            sq_error += float(((recon - patches) ** 2)[valid].sum())
            sq_signal += float((patches**2)[valid].sum())
            if examples is None:
                examples = (patches[0].numpy(), recon[0].numpy(), codes[0].numpy())
            mask = random_token_mask(pad, backbone.config.mask_ratio, generator)  # [B, L, P]
            features = backbone.forward_features(patches, lead_ids, pad, mask)  # [B, N, D]
            predicted = backbone.forward_head(features).argmax(-1).view(pad.shape)
            correct += int((predicted == codes)[mask].sum())
            baseline_correct += int((codes[mask] == most_frequent).sum())
            scored += int(mask.sum())
    probabilities = counts / counts.sum()
    nonzero = probabilities[probabilities > 0]
    _plot_patches(examples, plot_path)
    return {
        "held_out_tokens": int(counts.sum()),
        "codes": K,
        "code_usage": float((counts > 0).mean()),
        "code_perplexity": float(np.exp(-(nonzero * np.log(nonzero)).sum())),
        "patch_mse": sq_error / max(int(counts.sum()) * tokenizer.config.patch_size, 1),
        "patch_relative_error": float(np.sqrt(sq_error / max(sq_signal, 1e-12))),
        "masked_code_accuracy": correct / max(scored, 1),
        "most_frequent_code_accuracy": baseline_correct / max(scored, 1),
        "masked_tokens_scored": scored,
    }


def _plot_patches(example, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patches, recon, codes = example  # [L, P, S], [L, P, S], [L, P]
    leads = min(3, patches.shape[0])
    fig, axes = plt.subplots(leads, 1, figsize=(12, 2.2 * leads), squeeze=False)
    for row in range(leads):
        ax = axes[row, 0]
        ax.plot(patches[row].reshape(-1), color="black", lw=0.8, label="original (z-scored)")
        ax.plot(recon[row].reshape(-1), color="tab:red", lw=0.8, label="reconstructed from codes")
        for second, code in enumerate(codes[row]):
            ax.axvline(second * patches.shape[2], color="0.85", lw=0.5)
            ax.text(second * patches.shape[2] + 5, ax.get_ylim()[1] * 0.85, str(code), fontsize=7, color="tab:blue")
        ax.set_xlim(0, patches.shape[1] * patches.shape[2])
    axes[0, 0].legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("samples at 300 Hz (1 s patches, code index of each patch in blue)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    result = prepare(PrepareConfig(sources=[args.data], out=out / "store", labels_csv=labels_csv(args.data, out / "labels.csv"),
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
