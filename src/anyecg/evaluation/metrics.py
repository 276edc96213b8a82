"""Downstream scores: classification (anomaly, arrhythmia, multi-label SNOMED), AAMI beats, lead generation.

Every classification figure comes from scikit-learn; this module only decides which classes a score is
defined for and keeps undefined scores as NaN instead of crashing (`to_jsonable` turns them into JSON
`null`). Results are flat dicts so that `mean_std_over_seeds` can aggregate five seeds leaf by leaf.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    precision_score,
    roc_auc_score,
)

NAN = float("nan")


# ----------------------------------------------------------------------------- label encoding


def encode_labels(y_true: Sequence | np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Class indices [N] from labels given as names (in `classes`) or as integer indices."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"expected one label per example, got y_true of shape {y.shape}")
    if y.dtype.kind in "iu":
        bad = sorted(set(y[(y < 0) | (y >= len(classes))].tolist()))
        if bad:
            raise ValueError(f"label indices {bad} are outside 0..{len(classes) - 1} for classes {list(classes)}")
        return y.astype(np.int64)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({str(v) for v in y.tolist() if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among classes {list(classes)}")
    return np.array([index[v] for v in y.tolist()], dtype=np.int64)


def label_indicator(y_true: Sequence | np.ndarray, classes: Sequence[str], multilabel: bool = False) -> np.ndarray:
    """Boolean indicator matrix [N, K] from single labels, or (multi-label) a 0/1 matrix or lists of names."""
    if not multilabel:
        y = encode_labels(y_true, classes)
        return np.arange(len(classes))[None, :] == y[:, None]  # [N, K]
    if isinstance(y_true, np.ndarray) and y_true.ndim == 2:
        if y_true.shape[1] != len(classes):
            raise ValueError(f"y_true has {y_true.shape[1]} columns but {len(classes)} classes were named")
        values = set(np.unique(y_true).tolist())
        if not values <= {0, 1, False, True}:
            raise ValueError(f"multi-label y_true must be 0/1, found values {sorted(values)[:10]}")
        return y_true.astype(bool)
    index = {name: i for i, name in enumerate(classes)}
    out = np.zeros((len(y_true), len(classes)), dtype=bool)  # [N, K]
    for row, names in enumerate(y_true):
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f"example {row}: labels {unknown} are not among classes {list(classes)}")
        out[row, [index[n] for n in names]] = True
    return out


def _proba_matrix(proba: np.ndarray, n: int, classes: Sequence[str]) -> np.ndarray:
    """Scores as [N, K]; a 1-D binary score is taken as the score of classes[1]."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1 and len(classes) == 2:
        p = np.stack([1.0 - p, p], axis=1)  # [N, 2]
    if p.shape != (n, len(classes)):
        raise ValueError(f"proba of shape {p.shape} does not match {n} examples x {len(classes)} classes {list(classes)}")
    if not np.isfinite(p).all():
        raise ValueError("proba contains NaN or infinite scores")
    return p


# ----------------------------------------------------------------------------- classification


def _binary_scores(positive: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(AUROC, average precision) of one class; NaN unless it has both positives and negatives
    (with no negatives every ranking scores a trivial AP of 1, which would inflate a macro average)."""
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == len(positive):
        return NAN, NAN
    return float(roc_auc_score(positive, score)), float(average_precision_score(positive, score))


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


def classification_metrics(
    y_true: Sequence | np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    positive: str | None = None,
    multilabel: bool = False,
    threshold: float | Sequence[float] = 0.5,
) -> dict:
    """Accuracy, AUROC, AUPRC, F1 and precision of class scores `proba` [N, K] against `y_true`.

    Single-label (binary or multi-class): `y_true` holds names from `classes` or indices, predictions
    are the arg-max of `proba`. `auroc` and `auprc` are macro averages of one-vs-rest scores over the
    classes that have positives in `y_true` (the others are listed in `classes_without_positives`
    and get NaN per-class scores). Binary tasks score `positive` (default `classes[1]`) instead and
    also report `auroc_<c>_positive` / `auprc_<c>_positive` for both classes, since the AnyECG paper
    treats *normal* as the positive class of anomaly detection while most work treats abnormal so.

    Multi-label (`multilabel=True`): `y_true` is a 0/1 matrix [N, K] or lists of names, `proba`
    holds independent per-class probabilities, predictions are `proba >= threshold` (one threshold, or
    one per class, reported per class as `per_class[c]["threshold"]`); `accuracy` is
    subset accuracy (every label right) and `hamming_accuracy` the fraction of right label slots.
    Macro AUROC and AUPRC cover the classes with both positives and negatives; the others are listed
    in `classes_without_positives` / `classes_without_negatives`.
    """
    classes = [str(c) for c in classes]
    truth = label_indicator(y_true, classes, multilabel)  # [N, K] bool
    n, k = truth.shape
    if n == 0:
        raise ValueError("no examples to score")
    p = _proba_matrix(proba, n, classes)  # [N, K]

    per_class_rank = [_binary_scores(truth[:, j], p[:, j]) for j in range(k)]  # (auroc, ap) per class
    support = truth.sum(axis=0)  # [K]
    out: dict = {"n": int(n)}

    if multilabel:
        thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (k,))  # [K]
        pred = p >= thresholds  # [N, K]
        out["accuracy"] = float(accuracy_score(truth, pred))
        out["hamming_accuracy"] = float(1.0 - hamming_loss(truth, pred))
        y_for_f1, pred_for_f1, labels = truth, pred, None
        out["auroc"] = _nanmean([a for a, _ in per_class_rank])
        out["auprc"] = _nanmean([ap for _, ap in per_class_rank])
        out["threshold"] = float(threshold) if np.ndim(threshold) == 0 else [float(t) for t in thresholds]
        # one 2x2 matrix per class: [[true negatives, false positives], [false negatives, true positives]]
        out["confusion"] = {name: m.tolist() for name, m in zip(classes, multilabel_confusion_matrix(truth, pred))}
    else:
        y_idx = truth.argmax(axis=1)  # [N]
        pred_idx = p.argmax(axis=1)  # [N]
        out["accuracy"] = float(accuracy_score(y_idx, pred_idx))
        y_for_f1, pred_for_f1, labels = y_idx, pred_idx, list(range(k))
        out["decision"] = "argmax"
        out["confusion"] = confusion_matrix(y_idx, pred_idx, labels=labels).tolist()  # rows true, columns predicted
        out["confusion_classes"] = classes
        if k == 2:
            if positive is not None and positive not in classes:
                raise ValueError(f"positive class {positive!r} is not among classes {classes}")
            pos = classes.index(positive) if positive is not None else 1
            out["positive"] = classes[pos]
            out["auroc"], out["auprc"] = per_class_rank[pos]
            for j, name in enumerate(classes):
                out[f"auroc_{name}_positive"], out[f"auprc_{name}_positive"] = per_class_rank[j]
        else:
            if positive is not None:
                raise ValueError(f"positive={positive!r} only applies to binary tasks, got {k} classes")
            out["auroc"] = _nanmean([a for a, _ in per_class_rank])
            out["auprc"] = _nanmean([ap for _, ap in per_class_rank])

    # Aggregates count an undefined precision/recall as 0 (sklearn's convention for reported averages);
    # per-class values keep NaN so an empty class is visibly undefined rather than scored 0.
    out["f1_weighted"] = float(f1_score(y_for_f1, pred_for_f1, labels=labels, average="weighted", zero_division=0))
    out["f1_macro"] = float(f1_score(y_for_f1, pred_for_f1, labels=labels, average="macro", zero_division=0))
    out["precision"] = float(
        precision_score(y_for_f1, pred_for_f1, labels=labels, average="weighted", zero_division=0)
    )
    prec, rec, f1, _ = precision_recall_fscore_support(
        y_for_f1, pred_for_f1, labels=labels, average=None, zero_division=np.nan
    )
    out["per_class"] = {
        name: {
            "f1": float(f1[j]),
            "precision": float(prec[j]),
            "recall": float(rec[j]),
            "support": int(support[j]),
            "auroc": per_class_rank[j][0],
            "auprc": per_class_rank[j][1],
            **({"threshold": float(thresholds[j])} if multilabel else {}),
        }
        for j, name in enumerate(classes)
    }
    out["classes_without_positives"] = [name for j, name in enumerate(classes) if support[j] == 0]
    if multilabel:
        out["classes_without_negatives"] = [name for j, name in enumerate(classes) if support[j] == n]
    return out


def best_f1_thresholds(truth: np.ndarray, proba: np.ndarray, default: float = 0.5) -> np.ndarray:
    """float [K]: per class, the probability threshold (predict `proba >= t`) with the highest F1 on
    `truth` [N, K] (0/1); `default` for a class without positives, where F1 cannot be chosen."""
    truth, proba = np.asarray(truth) > 0.5, np.asarray(proba, dtype=np.float64)
    thresholds = np.full(truth.shape[1], default)
    for j in range(truth.shape[1]):
        if not truth[:, j].any():
            continue
        precision, recall, candidates = precision_recall_curve(truth[:, j], proba[:, j])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)  # [len(candidates)]
        thresholds[j] = candidates[int(np.argmax(f1))]
    return thresholds


def beat_metrics(
    y_true: Sequence | np.ndarray,
    y_pred: Sequence | np.ndarray,
    classes: Sequence[str] = ("N", "S", "V", "F"),
) -> dict:
    """AAMI beat-classification report in the style of de Chazal et al. (2004).

    Per class: sensitivity (recall), positive predictive value (precision), F1, false-positive rate
    and support, plus overall accuracy, macro F1 and the confusion matrix (rows true, columns
    predicted, in `classes` order). Labels are class names or indices; a label outside `classes`
    is an error (add "Q" to `classes` to score unclassifiable beats).
    """
    classes = [str(c) for c in classes]
    y = encode_labels(y_true, classes)  # [N]
    pred = encode_labels(y_pred, classes)  # [N]
    if y.shape != pred.shape:
        raise ValueError(f"{len(y)} true labels but {len(pred)} predictions")
    if len(y) == 0:
        raise ValueError("no beats to score")
    labels = list(range(len(classes)))
    cm = confusion_matrix(y, pred, labels=labels)  # [K, K]
    ppv, sens, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    per_class = {}
    for j, name in enumerate(classes):
        fp = int(cm[:, j].sum() - cm[j, j])
        negatives = int(len(y) - support[j])
        per_class[name] = {
            "sensitivity": float(sens[j]),
            "ppv": float(ppv[j]),
            "f1": float(f1[j]),
            "fpr": fp / negatives if negatives else NAN,
            "support": int(support[j]),
        }
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "classes": classes,
    }


# ----------------------------------------------------------------------------- seeds and JSON


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def mean_std_over_seeds(runs: Sequence[Mapping], ddof: int = 1) -> dict:
    """Aggregate metric dicts from several seeds: every numeric leaf becomes {"mean", "std", "n"}.

    `std` is the sample standard deviation (ddof=1, NaN for a single seed) unless `ddof` says
    otherwise. NaN or None values (undefined scores in some seeds) are left out and `n` counts the seeds
    that were used. Nested dicts (per_class, per_lead) are aggregated the same way; other leaves
    are kept when every seed agrees and listed per seed otherwise.
    """
    if not runs:
        raise ValueError("no runs to aggregate")
    keys: list = []
    for run in runs:
        keys.extend(key for key in run if key not in keys)
    out: dict = {}
    for key in keys:
        values = [run[key] for run in runs if key in run]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = mean_std_over_seeds(values, ddof)
        elif all(_is_number(v) or v is None for v in values) and any(_is_number(v) for v in values):
            # None is how `to_jsonable` stores NaN, so results read back from JSON aggregate the same
            finite = np.array([float(v) for v in values if v is not None and not math.isnan(float(v))])
            mean = float(finite.mean()) if len(finite) else NAN
            std = float(finite.std(ddof=ddof)) if len(finite) > ddof else NAN
            out[key] = {"mean": mean, "std": std, "n": int(len(finite))}
        elif all(v == values[0] for v in values[1:]):
            out[key] = values[0]
        else:
            out[key] = list(values)
    return out


def to_jsonable(value):
    """Plain Python copy of a metrics structure: numpy scalars and arrays become floats/ints/lists,
    NaN and infinities become None (JSON has no NaN), tuples become lists, keys become strings."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# ----------------------------------------------------------------------------- lead generation


def mae(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error over all samples (in the signal's unit, mV for ECG)."""
    target, pred = _same_shape(target, pred)
    return float(np.mean(np.abs(target - pred)))


def psnr(target: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(L^2 / MSE), with L the target's peak-to-peak range
    unless `data_range` is given. Infinite for a perfect reconstruction, NaN for a flat target."""
    target, pred = _same_shape(target, pred)
    peak = float(np.ptp(target)) if data_range is None else float(data_range)
    mse = float(np.mean((target - pred) ** 2))
    if peak <= 0:
        return NAN
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(peak**2 / mse))


def ssim_1d(
    target: np.ndarray,
    pred: np.ndarray,
    *,
    window: int = 11,
    gaussian: bool = True,
    sigma: float = 1.5,
    data_range: float | np.ndarray | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
    use_sample_covariance: bool = False,
) -> float | np.ndarray:
    """Structural similarity of signals along the last axis (Wang et al. 2004, in one dimension).

    Local means, variances and covariance come from a sliding window: Gaussian (`sigma`, `window`
    samples wide) or uniform (`window` samples). SSIM = (2 mu_x mu_y + C1)(2 cov + C2) /
    ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2)) with C1 = (k1 L)^2, C2 = (k2 L)^2, L the data range
    (per signal: the target's peak-to-peak, unless given). The map is averaged after dropping
    (window - 1) / 2 samples at each end, as scikit-image does. Returns a float for a 1-D signal,
    else one value per signal, shape target.shape[:-1]; a flat target with no data_range gives NaN.
    """
    target, pred = _same_shape(target, pred)
    if window < 3 or window % 2 == 0:
        raise ValueError(f"SSIM window must be odd and >= 3, got {window}")
    length = target.shape[-1]
    if length < window:
        raise ValueError(f"signals of {length} samples are shorter than the SSIM window of {window}")
    x = target.astype(np.float64)  # [..., T]
    y = pred.astype(np.float64)  # [..., T]
    if data_range is None:
        data_range = np.ptp(x, axis=-1)  # [...]
    data_range = np.asarray(data_range, dtype=np.float64)
    c1 = ((k1 * data_range) ** 2)[..., None]  # [..., 1]
    c2 = ((k2 * data_range) ** 2)[..., None]  # [..., 1]

    if gaussian:
        # truncate so the kernel spans exactly `window` samples
        truncate = ((window - 1) / 2) / sigma

        def smooth(a: np.ndarray) -> np.ndarray:
            return gaussian_filter1d(a, sigma, axis=-1, mode="reflect", truncate=truncate)

    else:

        def smooth(a: np.ndarray) -> np.ndarray:
            return uniform_filter1d(a, window, axis=-1, mode="reflect")

    mu_x, mu_y = smooth(x), smooth(y)  # [..., T]
    cov_norm = window / (window - 1) if use_sample_covariance else 1.0
    var_x = cov_norm * (smooth(x * x) - mu_x * mu_x)
    var_y = cov_norm * (smooth(y * y) - mu_y * mu_y)
    cov_xy = cov_norm * (smooth(x * y) - mu_x * mu_y)
    pad = (window - 1) // 2
    # a flat target with zero range makes 0/0 here; those rows become NaN below
    with np.errstate(divide="ignore", invalid="ignore"):
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
            (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
        )  # [..., T]
        scores = ssim_map[..., pad : length - pad].mean(axis=-1)  # [...]
    scores = np.where(data_range > 0, scores, np.nan)
    return float(scores) if scores.ndim == 0 else scores


def leadgen_metrics(
    target: np.ndarray,
    pred: np.ndarray,
    leads: Sequence[str] | None = None,
    *,
    data_range: float | None = None,
    **ssim_options,
) -> dict:
    """PSNR, SSIM and MAE of reconstructed leads, target and pred [N, C, T] (or [C, T]).

    PSNR and SSIM are computed per signal (one lead of one example, with its own peak-to-peak range
    unless `data_range` is given) and averaged; flat target signals (a lead that is all zeros) have
    no range and are left out of both, counted in `n_flat`. Perfect signals (infinite PSNR) are
    averaged as they are, so a perfect reconstruction reports infinite PSNR. `per_lead` holds the
    same three figures for each lead, keyed by `leads` (default "0", "1", ...).
    """
    target, pred = _same_shape(target, pred)
    if target.ndim == 2:
        target, pred = target[None], pred[None]
    if target.ndim != 3:
        raise ValueError(f"expected [N, C, T] or [C, T] signals, got shape {target.shape}")
    n, c, _ = target.shape
    names = [str(i) for i in range(c)] if leads is None else [str(lead) for lead in leads]
    if len(names) != c:
        raise ValueError(f"{len(names)} lead names for {c} channels")

    x = target.astype(np.float64)  # [N, C, T]
    y = pred.astype(np.float64)  # [N, C, T]
    peak = np.ptp(x, axis=-1) if data_range is None else np.full((n, c), float(data_range))  # [N, C]
    mse = np.mean((x - y) ** 2, axis=-1)  # [N, C]
    with np.errstate(divide="ignore", invalid="ignore"):
        psnr_nc = np.where(peak > 0, 10.0 * np.log10(peak**2 / mse), np.nan)  # [N, C]
    ssim_nc = np.asarray(ssim_1d(x, y, data_range=peak, **ssim_options))  # [N, C]
    mae_nc = np.mean(np.abs(x - y), axis=-1)  # [N, C]

    def summary(psnr_v: np.ndarray, ssim_v: np.ndarray, mae_v: np.ndarray) -> dict:
        valid = ~np.isnan(psnr_v)
        return {
            "psnr": float(np.mean(psnr_v[valid])) if valid.any() else NAN,
            "ssim": float(np.mean(ssim_v[valid])) if valid.any() else NAN,
            "mae": float(np.mean(mae_v)),
        }

    out = summary(psnr_nc, ssim_nc, mae_nc)
    out["n_signals"] = int(n * c)
    out["n_flat"] = int(np.isnan(psnr_nc).sum())
    out["per_lead"] = {name: summary(psnr_nc[:, j], ssim_nc[:, j], mae_nc[:, j]) for j, name in enumerate(names)}
    return out


def _same_shape(target: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target, pred = np.asarray(target), np.asarray(pred)
    if target.shape != pred.shape:
        raise ValueError(f"target shape {target.shape} and prediction shape {pred.shape} differ")
    if target.size == 0:
        raise ValueError("empty signals")
    return target, pred
