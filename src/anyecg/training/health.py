"""Health figures during pretraining: every N steps, appended to `health.jsonl` and drawn to `health.png`.

Loss curves say little about a tokenizer: a collapsed encoder can show falling losses, full code
usage and a high perplexity. Every `every` steps (and at the last one) the monitor measures, on the
run's held-out data, what `anyecg.evaluation.tokenizer_health` measures: code usage and perplexity,
the mean cosine between encoder outputs, patch MSE against the zero / mean-patch / PCA / k-means
baselines, code stability under a 0.1 s shift and, in stage 2, masked-code accuracy against the
most-frequent-code, copy-other-lead and copy-neighbour guesses. They run on a seeded draw of at
most `max_records` val + test records of the pretraining store (and as many train records for the
most frequent code); the reconstruction baselines are fitted once, on the first call.

With `probe_store` (a labelled store with train / val / test splits, e.g. PTB-XL superclasses),
each entry also holds a linear probe of the frozen embedding: `probe_val_macro_auroc`, the
validation macro AUROC (the probe's C chosen on it too; its test split is never scored here).

`train_s` is the training wall time up to the entry, health passes left out. The measurement runs
in eval mode on the main process with the random state saved and restored, so it changes neither
the model nor the data order of the run: the same run with and without the monitor trains the same
weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist

from anyecg.data.store import Store
from anyecg.evaluation.probe import linear_probe, store_embeddings, store_targets
from anyecg.evaluation.tokenizer_health import split_rows, tokenizer_health
from anyecg.signal.recipe import Recipe

HEALTH_LOG = "health.jsonl"
HEALTH_PLOT = "health.png"
BASELINE_KEYS = ("zero_mse", "mean_patch_mse", "kmeans_mse", "pca_mse", "shifted_patch_mse",
                 "kmeans_codes_unchanged_by_0.1s_shift", "spectral_kmeans_codes_unchanged_by_0.1s_shift")


class HealthMonitor:
    """An `after_step` hook of `training.loop.train` for a Tokenizer or a MaskedCodeModel."""

    def __init__(self, store: Store, out: str | Path, *, every: int, total_steps: int, recipe: Recipe,
                 preset: str | None = None, window_s: int | None = None, max_records: int = 200,
                 probe_store: Store | None = None, seed: int = 0):
        if every < 1:
            raise ValueError(f"health figures every {every} steps: give a positive number of steps")
        if len(split_rows(store, ("val", "test"), None, seed)) == 0:
            raise ValueError(f"{store.root}: health figures need val or test records in the pretraining store "
                             "(prepare it with a split, or turn the figures off)")
        self.store, self.out, self.every, self.total_steps = store, Path(out), every, total_steps
        self.recipe, self.preset, self.window_s = recipe, preset, window_s
        self.max_records, self.seed = max_records, seed
        self.probe = None
        if probe_store is not None:
            manifest = probe_store.manifest
            classes, targets = store_targets(probe_store)
            if not classes or not {"train", "val"} <= set(manifest["split"]):
                raise ValueError(f"{probe_store.root}: the probe store needs labels and train and val records")
            self.probe = (probe_store, targets, manifest["split"].to_numpy(),
                          manifest["patient_id"].astype(str).to_numpy())
        self.baselines: dict[str, float] | None = None
        self.history = self._read_history()
        self.clock_start = time.perf_counter()
        self.health_s = 0.0  # time spent measuring, left out of train_s
        self.resumed_s: float | None = None  # train_s at the resume point, set on the first call

    def _read_history(self) -> list[dict]:
        path = self.out / HEALTH_LOG
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def __call__(self, model: torch.nn.Module, step: int) -> None:
        if step % self.every and step != self.total_steps:
            return
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        started = time.perf_counter()
        # After a resume, entries past the checkpoint's step were measured on weights that are gone.
        self.history = [entry for entry in self.history if entry["step"] < step]
        if self.resumed_s is None:
            self.resumed_s = self.history[-1]["train_s"] if self.history else 0.0
        entry = {"step": step, "train_s": round(self.resumed_s + started - self.clock_start - self.health_s, 1),
                 **self.measure(model)}
        self.history.append(entry)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / HEALTH_LOG).write_text("".join(json.dumps(e) + "\n" for e in self.history))
        plot_health(self.history, self.out / HEALTH_PLOT)
        self.health_s += time.perf_counter() - started

    @torch.no_grad()
    def measure(self, model: torch.nn.Module) -> dict:
        from anyecg.pretrained import AnyECG  # the model view of the API, which imports training modules
        from anyecg.training.pretrain import MaskedCodeModel

        tokenizer, backbone = (model.tokenizer, model.backbone) if isinstance(model, MaskedCodeModel) else (model, None)
        was_training = model.training
        with torch.random.fork_rng(devices=[]):
            try:
                view = AnyECG(tokenizer, backbone, self.recipe, self.preset, self.window_s)  # puts both in eval mode
                health = tokenizer_health(view, self.store, seed=self.seed, max_records=self.max_records,
                                          baselines=self.baselines)
                if self.baselines is None:
                    self.baselines = {key: health[key] for key in BASELINE_KEYS if key in health}
                if self.probe is not None:
                    probe_store, targets, splits, patients = self.probe
                    features = store_embeddings(view, probe_store)
                    health["probe_val_macro_auroc"] = linear_probe(features, targets, splits, patients,
                                                                   seed=self.seed)["val_macro_auroc"]
            finally:
                model.train(was_training)
        return health


def plot_health(history: list[dict], path: str | Path) -> None:
    """The health figures against training hours, one panel per question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [entry["train_s"] / 3600 for entry in history]

    def series(key: str) -> list[float]:
        return [entry.get(key, float("nan")) for entry in history]

    # (title, lines, y limits): shares and cosines on their full range, so "near 0" reads as such
    panels = [
        ("codebook (held out)", [("usage", "code_usage"), ("perplexity / K", "code_perplexity_fraction"),
                                 ("codes unchanged by 0.1 s shift", "codes_unchanged_by_0.1s_shift"),
                                 ("the same, k-means on |FFT|", "spectral_kmeans_codes_unchanged_by_0.1s_shift")],
         (0, 1.05)),
        ("encoder collapse", [("mean cosine of encoder outputs", "encoder_mean_cosine")], (-0.05, 1.05)),
        ("patch reconstruction MSE", [("tokenizer", "patch_mse"), ("k-means, same K", "kmeans_mse"),
                                      ("mean patch", "mean_patch_mse")], None),
    ]
    if any("masked_code_accuracy" in entry for entry in history):
        panels.append(("masked-code accuracy", [("backbone", "masked_code_accuracy"),
                                                ("copy other lead", "copy_other_lead_accuracy"),
                                                ("copy neighbour", "copy_neighbour_accuracy"),
                                                ("most frequent code", "most_frequent_code_accuracy")], None))
    if any("probe_val_macro_auroc" in entry for entry in history):
        panels.append(("linear probe", [("val macro AUROC", "probe_val_macro_auroc")], None))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, lines, limits) in zip(axes[0], panels):
        for label, key in lines:
            ax.plot(hours, series(key), marker="o", markersize=3, label=label)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training hours")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
