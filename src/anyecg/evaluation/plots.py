"""Report figures: ROC and precision-recall curves, confusion matrices, lead reconstructions.

Each function draws one PNG (matplotlib's Agg backend, no display needed) and returns its path.
A class with no positives in the labels gets no curve but is still named in the legend, so a
figure never silently drops a class and never fails on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import auc, average_precision_score, confusion_matrix, precision_recall_curve, roc_curve

from anyecg.evaluation.metrics import encode_labels, label_indicator


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_roc_pr(
    y_true: Sequence | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    *,
    multilabel: bool = False,
    title: str = "",
) -> Path:
    """One figure with a ROC panel and a precision-recall panel, one one-vs-rest curve per class.

    `y_true` and `proba` [N, K] are read as in `classification_metrics`; legends give each class's
    AUROC and average precision, and the PR panel shows each class's prevalence as a dotted line.
    """
    plt = _pyplot()
    classes = [str(c) for c in classes]
    truth = label_indicator(y_true, classes, multilabel)  # [N, K] bool
    scores = np.asarray(proba, dtype=np.float64)
    if scores.ndim == 1 and len(classes) == 2:
        scores = np.stack([1.0 - scores, scores], axis=1)  # [N, 2]
    if scores.shape != truth.shape:
        raise ValueError(f"proba of shape {scores.shape} does not match labels {truth.shape} for classes {classes}")

    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.8))
    colors = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for j, name in enumerate(classes):
        color = colors(j % colors.N)
        positives = truth[:, j]
        if positives.all() or not positives.any():
            missing = "no positives" if not positives.any() else "no negatives"
            ax_roc.plot([], [], color=color, label=f"{name} ({missing})")
            ax_pr.plot([], [], color=color, label=f"{name} ({missing})")
            continue
        fpr, tpr, _ = roc_curve(positives, scores[:, j])
        precision, recall, _ = precision_recall_curve(positives, scores[:, j])
        ax_roc.plot(fpr, tpr, color=color, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        ap = average_precision_score(positives, scores[:, j])
        ax_pr.step(recall, precision, where="post", color=color, label=f"{name} (AP {ap:.3f})")
        ax_pr.axhline(positives.mean(), color=color, linestyle=":", linewidth=0.8)

    ax_roc.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(fontsize="small", loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    *,
    title: str = "",
) -> Path:
    """Confusion matrix (rows true, columns predicted). `normalize` divides each row by its count,
    so the diagonal reads as per-class recall; a class absent from `y_true` keeps a row of zeros."""
    plt = _pyplot()
    classes = [str(c) for c in classes]
    k = len(classes)
    counts = confusion_matrix(encode_labels(y_true, classes), encode_labels(y_pred, classes), labels=list(range(k)))
    values = counts.astype(np.float64)  # [K, K]
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)  # [K, 1]
        values = np.divide(values, rows, out=np.zeros_like(values), where=rows > 0)

    side = max(4.0, 0.55 * k + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, values.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if k <= 30:  # cell labels stay readable up to about thirty classes
        threshold = (1.0 if normalize else values.max()) / 2
        for i in range(k):
            for j in range(k):
                text = f"{values[i, j]:.2f}" if normalize else f"{counts[i, j]:d}"
                ax.text(j, i, text, ha="center", va="center", fontsize="small",
                        color="white" if values[i, j] > threshold else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), [f"{name} (n={counts[i].sum()})" for i, name in enumerate(classes)])
    ax.set(xlabel="predicted", ylabel="true", title=title or ("confusion (row-normalised)" if normalize else "confusion"))
    fig.tight_layout()
    return _save(fig, path)


def plot_reconstructions(
    target: np.ndarray,
    pred: np.ndarray,
    leads: Sequence[str],
    fs: float,
    path: str | Path,
    n: int = 3,
    *,
    title: str = "",
) -> Path:
    """Target against reconstructed leads for the first `n` examples of [N, C, T] (or one [C, T]):
    one row per lead, one column per example, each panel titled with its MAE in mV."""
    plt = _pyplot()
    target, pred = np.asarray(target, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if target.shape != pred.shape:
        raise ValueError(f"target shape {target.shape} and prediction shape {pred.shape} differ")
    if target.ndim == 2:
        target, pred = target[None], pred[None]
    if target.ndim != 3 or target.shape[1] != len(leads):
        raise ValueError(f"expected [N, {len(leads)}, T] signals for leads {list(leads)}, got shape {target.shape}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    shown = min(n, target.shape[0])
    n_leads, length = target.shape[1], target.shape[2]
    seconds = np.arange(length) / fs  # [T]

    fig, axes = plt.subplots(
        n_leads, shown, figsize=(4.5 * shown, 1.3 * n_leads + 0.8), sharex=True, squeeze=False
    )
    for col in range(shown):
        for row, lead in enumerate(leads):
            ax = axes[row, col]
            ax.plot(seconds, target[col, row], color="black", linewidth=0.8, label="target")
            ax.plot(seconds, pred[col, row], color="tab:red", linewidth=0.8, alpha=0.8, label="reconstruction")
            error = np.mean(np.abs(target[col, row] - pred[col, row]))
            ax.set_title(f"example {col}, {lead}: MAE {error:.3f} mV", fontsize="small")
            ax.tick_params(labelsize="x-small")
            if col == 0:
                ax.set_ylabel(f"{lead} (mV)", fontsize="small")
        axes[-1, col].set_xlabel("time (s)", fontsize="small")
    axes[0, 0].legend(fontsize="x-small", loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
