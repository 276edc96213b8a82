"""How good is a pretrained AnyECG on held-out records: codebook health, reconstruction, masked codes.

    metrics = held_out_metrics(model, store, "patches.png", usage_plot="codes.png")

Figures are measured on the store's val + test records, tiled into 10 s windows: codebook usage
(fraction of codes any held-out token picks) and perplexity, patch reconstruction error of the
morphology head, and the backbone's masked-code accuracy against always guessing the code most
frequent in the train split. Two plots: original vs reconstructed patches with each patch's code,
and the held-out code counts sorted from most to least used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anyecg.data.dataset import StoreWindows, collate_windows
from anyecg.data.store import Store
from anyecg.models.backbone import random_token_mask
from anyecg.pretrained import AnyECG

BATCH = 64


def window_batches(windows: StoreWindows):
    """Collated batches of BATCH consecutive windows, in order."""
    for start in range(0, len(windows), BATCH):
        yield collate_windows([windows[i] for i in range(start, min(start + BATCH, len(windows)))])


@torch.no_grad()
def held_out_metrics(
    model: AnyECG, store: Store, plot_path: str | Path, seed: int = 0, *, usage_plot: str | Path | None = None
) -> dict:
    """Tokenizer and backbone figures on the val + test records (10 s windows, tiled).

    Draws original vs reconstructed patches of the first held-out window to `plot_path` and, with
    `usage_plot`, the sorted code counts. Needs a stage-2 checkpoint (tokenizer and backbone).
    """
    if model.backbone is None:
        raise ValueError("held-out figures need a stage-2 checkpoint: masked-code accuracy uses the backbone")
    windows = [StoreWindows(store, split, random_crop=False, max_window_s=10) for split in ("val", "test")]
    if sum(len(w) for w in windows) == 0:
        raise ValueError(f"{store.root}: no val or test records to measure on")
    train_windows = StoreWindows(store, "train", random_crop=False, max_window_s=10)
    tokenizer, backbone = model.tokenizer, model.backbone
    K = tokenizer.config.num_codes

    train_counts = np.zeros(K, dtype=np.int64)
    for batch in window_batches(train_windows):
        codes = tokenizer.encode(batch["patches"], batch["lead_ids"], batch["pad_mask"])  # [B, L, P], -1 on padding
        train_counts += np.bincount(codes[codes >= 0].numpy(), minlength=K)
    most_frequent = int(train_counts.argmax())

    counts = np.zeros(K, dtype=np.int64)
    sq_error = sq_signal = 0.0
    correct = baseline_correct = scored = 0
    generator = torch.Generator().manual_seed(seed)
    example = None
    for dataset in windows:
        for batch in window_batches(dataset):
            patches, lead_ids, pad = batch["patches"], batch["lead_ids"], batch["pad_mask"]
            out = tokenizer(batch)
            valid = ~pad  # [B, L, P]
            codes = out.indices
            counts += np.bincount(codes[valid].numpy(), minlength=K)
            recon = out.reconstruction.reshape(patches.shape)  # [B, L, P, S]
            sq_error += float(((recon - patches) ** 2)[valid].sum())
            sq_signal += float((patches**2)[valid].sum())
            if example is None:
                example = (patches[0].numpy(), recon[0].numpy(), codes[0].numpy())
            mask = random_token_mask(pad, backbone.config.mask_ratio, generator)  # [B, L, P]
            features = backbone.forward_features(patches, lead_ids, pad, mask)  # [B, N, D]
            predicted = backbone.forward_head(features).argmax(-1).view(pad.shape)  # [B, L, P]
            correct += int((predicted == codes)[mask].sum())
            baseline_correct += int((codes[mask] == most_frequent).sum())
            scored += int(mask.sum())
    plot_patches(example, plot_path)
    metrics = {
        "held_out_tokens": int(counts.sum()),
        "codes": K,
        "code_usage": float((counts > 0).mean()),
        "code_perplexity": code_perplexity(counts),
        "patch_mse": sq_error / max(int(counts.sum()) * tokenizer.config.patch_size, 1),
        "patch_relative_error": float(np.sqrt(sq_error / max(sq_signal, 1e-12))),
        "masked_code_accuracy": correct / max(scored, 1),
        "most_frequent_code_accuracy": baseline_correct / max(scored, 1),
        "masked_tokens_scored": scored,
    }
    if usage_plot is not None:
        plot_code_usage(counts, usage_plot, metrics["code_usage"], metrics["code_perplexity"])
    return metrics


def code_perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of the code distribution: the number of equally used codes it is worth."""
    probabilities = counts / max(int(counts.sum()), 1)
    nonzero = probabilities[probabilities > 0]
    return float(np.exp(-(nonzero * np.log(nonzero)).sum()))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_patches(example: tuple[np.ndarray, np.ndarray, np.ndarray], path: str | Path) -> Path:
    """Original vs reconstructed patches of up to 3 leads, with each 1 s patch's code index."""
    plt = _pyplot()
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
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_code_usage(counts: np.ndarray, path: str | Path, usage: float | None = None,
                    perplexity: float | None = None) -> Path:
    """Held-out token counts per code, sorted from most to least used (log scale); unused codes
    show as the flat empty tail."""
    plt = _pyplot()
    counts = np.asarray(counts)
    usage = float((counts > 0).mean()) if usage is None else usage
    perplexity = code_perplexity(counts) if perplexity is None else perplexity
    ranked = np.sort(counts)[::-1]  # [K]
    used = int((counts > 0).sum())
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(np.arange(len(ranked)), ranked, width=1.0, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(ranked) - 0.5)
    ax.set_xlabel(f"codes sorted by use ({used} of {len(counts)} used, {len(counts) - used} never picked)")
    ax.set_ylabel("held-out tokens")
    ax.set_title(f"{int(counts.sum())} held-out tokens: codebook usage {usage:.1%}, perplexity {perplexity:.1f}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
