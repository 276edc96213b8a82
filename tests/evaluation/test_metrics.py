"""Metrics against scikit-learn / scikit-image called directly and against values worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from anyecg.evaluation.metrics import (
    beat_metrics,
    classification_metrics,
    leadgen_metrics,
    mae,
    mean_std_over_seeds,
    psnr,
    ssim_1d,
    to_jsonable,
)


def _softmax_scores(rng: np.random.Generator, y: np.ndarray, k: int) -> np.ndarray:
    """Informative but imperfect class probabilities [N, K] for labels y [N]."""
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += 1.5
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- classification


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(0)
    classes = ["N", "AF", "PAC", "PVC"]
    y = rng.integers(0, 4, size=300)
    proba = _softmax_scores(rng, y, 4)
    names = [classes[i] for i in y]
    m = classification_metrics(names, proba, classes)
    pred = proba.argmax(1)

    assert m["n"] == 300
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    onehot = np.eye(4)[y]
    assert m["auprc"] == pytest.approx(average_precision_score(onehot, proba, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["precision"] == pytest.approx(precision_score(y, pred, average="weighted"))
    for j, name in enumerate(classes):
        pc = m["per_class"][name]
        assert pc["support"] == int((y == j).sum())
        assert pc["recall"] == pytest.approx(recall_score(y == j, pred == j))
        assert pc["precision"] == pytest.approx(precision_score(y == j, pred == j))
        assert pc["f1"] == pytest.approx(f1_score(y == j, pred == j))
        assert pc["auroc"] == pytest.approx(roc_auc_score(y == j, proba[:, j]))
    assert m["classes_without_positives"] == []
    # integer labels give the same result as names
    assert classification_metrics(y, proba, classes)["auroc"] == m["auroc"]


def test_class_absent_from_y_true_is_nan_and_listed():
    rng = np.random.default_rng(1)
    classes = ["N", "S", "V", "F"]
    y = rng.integers(0, 3, size=120)  # "F" never occurs
    proba = _softmax_scores(rng, y, 4)
    m = classification_metrics(y, proba, classes)

    assert m["classes_without_positives"] == ["F"]
    assert math.isnan(m["per_class"]["F"]["auroc"]) and math.isnan(m["per_class"]["F"]["auprc"])
    assert m["per_class"]["F"]["support"] == 0
    # macro scores average the three classes that occur
    expected_auroc = np.mean([roc_auc_score(y == j, proba[:, j]) for j in range(3)])
    expected_ap = np.mean([average_precision_score(y == j, proba[:, j]) for j in range(3)])
    assert m["auroc"] == pytest.approx(expected_auroc)
    assert m["auprc"] == pytest.approx(expected_ap)
    # F1 still counts F as a label (sklearn with the full label list, undefined scores as 0)
    pred = proba.argmax(1)
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0))
    json_text = json.dumps(to_jsonable(m), allow_nan=False)
    assert json.loads(json_text)["per_class"]["F"]["auroc"] is None


def test_binary_normal_positive_and_both_orientations():
    rng = np.random.default_rng(2)
    classes = ["abnormal", "normal"]
    y = rng.integers(0, 2, size=200)
    proba = _softmax_scores(rng, y, 2)
    normal = y == 1
    m = classification_metrics([classes[i] for i in y], proba, classes, positive="normal")

    assert m["positive"] == "normal"
    assert m["auroc"] == pytest.approx(roc_auc_score(normal, proba[:, 1]))
    assert m["auprc"] == pytest.approx(average_precision_score(normal, proba[:, 1]))
    assert m["auroc_normal_positive"] == pytest.approx(roc_auc_score(normal, proba[:, 1]))
    assert m["auroc_abnormal_positive"] == pytest.approx(roc_auc_score(~normal, proba[:, 0]))
    assert m["auprc_abnormal_positive"] == pytest.approx(average_precision_score(~normal, proba[:, 0]))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, proba.argmax(1), average="weighted"))

    # a 1-D score is the score of classes[1]; positive="abnormal" flips the headline figures
    flipped = classification_metrics(y, proba[:, 1], classes, positive="abnormal")
    assert flipped["auroc"] == pytest.approx(m["auroc_abnormal_positive"])
    assert flipped["auprc"] == pytest.approx(m["auprc_abnormal_positive"])


def test_binary_with_one_class_only_does_not_crash():
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]])
    m = classification_metrics(["normal"] * 3, proba, ["abnormal", "normal"], positive="normal")
    assert math.isnan(m["auroc"]) and math.isnan(m["auroc_abnormal_positive"])
    assert m["classes_without_positives"] == ["abnormal"]
    assert m["accuracy"] == pytest.approx(1 / 3)


def test_multilabel_matches_sklearn_and_hand_values():
    rng = np.random.default_rng(3)
    classes = ["164889003", "426783006", "270492004", "59118001", "713427006"]
    truth = (rng.random((150, 5)) < [0.3, 0.5, 0.2, 0.0, 1.0]).astype(int)  # class 4 never absent, 3 never present
    proba = np.clip(truth * 0.35 + rng.random((150, 5)) * 0.65, 0, 1)
    m = classification_metrics(truth, proba, classes, multilabel=True)
    pred = (proba >= 0.5).astype(int)

    assert m["accuracy"] == pytest.approx(accuracy_score(truth, pred))  # subset accuracy
    assert m["hamming_accuracy"] == pytest.approx((truth == pred).mean())
    ok = [0, 1, 2]  # classes with both labels present
    assert m["auroc"] == pytest.approx(roc_auc_score(truth[:, ok], proba[:, ok], average="macro"))
    assert m["auprc"] == pytest.approx(average_precision_score(truth[:, ok], proba[:, ok], average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(truth, pred, average="weighted", zero_division=0))
    assert m["classes_without_positives"] == ["59118001"]
    assert m["classes_without_negatives"] == ["713427006"]
    assert math.isnan(m["per_class"]["713427006"]["auroc"])

    # lists of codes are read the same way as the indicator matrix
    as_lists = [[c for c, t in zip(classes, row) if t] for row in truth]
    assert classification_metrics(as_lists, proba, classes, multilabel=True)["auroc"] == m["auroc"]


def test_multilabel_subset_accuracy_by_hand():
    truth = np.array([[1, 0], [1, 1], [0, 0]])
    proba = np.array([[0.8, 0.1], [0.9, 0.4], [0.2, 0.6]])  # row 0 right, rows 1 and 2 each miss one slot
    m = classification_metrics(truth, proba, ["a", "b"], multilabel=True)
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["hamming_accuracy"] == pytest.approx(4 / 6)


def test_classification_rejects_bad_inputs():
    with pytest.raises(ValueError, match="not among classes"):
        classification_metrics(["N", "X"], np.full((2, 2), 0.5), ["N", "V"])
    with pytest.raises(ValueError, match="does not match"):
        classification_metrics(["N", "V"], np.full((2, 3), 0.5), ["N", "V"])
    with pytest.raises(ValueError, match="positive class 'AF'"):
        classification_metrics(["N", "V"], np.full((2, 2), 0.5), ["N", "V"], positive="AF")


# ----------------------------------------------------------------------------- AAMI beats


def test_beat_metrics_by_hand():
    y_true = list("NNNNSSVVF")
    y_pred = list("NNNSSNVNN")
    m = beat_metrics(y_true, y_pred)
    # confusion rows true N,S,V,F: N->[3,1,0,0] S->[1,1,0,0] V->[1,0,1,0] F->[1,0,0,0]
    assert m["confusion"] == [[3, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(5 / 9)
    n, s, v, f = (m["per_class"][c] for c in "NSVF")
    assert n["sensitivity"] == pytest.approx(3 / 4) and n["ppv"] == pytest.approx(3 / 6)
    assert s["sensitivity"] == pytest.approx(1 / 2) and s["ppv"] == pytest.approx(1 / 2)
    assert v["sensitivity"] == pytest.approx(1 / 2) and v["ppv"] == pytest.approx(1.0)
    assert v["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert s["fpr"] == pytest.approx(1 / 7)  # one of the seven non-S beats called S
    assert f["sensitivity"] == 0.0 and math.isnan(f["ppv"])  # nothing predicted F
    assert m["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, labels=list("NSVF"), average="macro", zero_division=0))
    with pytest.raises(ValueError, match="not among classes"):
        beat_metrics(list("NQ"), list("NN"))


# ----------------------------------------------------------------------------- seeds and JSON


def test_mean_std_over_seeds_by_hand():
    runs = [
        {"accuracy": 0.5, "n": 10, "per_class": {"N": {"f1": 0.2}}, "classes": ["N"], "auroc": float("nan")},
        {"accuracy": 0.7, "n": 10, "per_class": {"N": {"f1": 0.4}}, "classes": ["N"], "auroc": 0.8},
        {"accuracy": 0.9, "n": 10, "per_class": {"N": {"f1": 0.9}}, "classes": ["N"], "auroc": 0.6},
    ]
    agg = mean_std_over_seeds(runs)
    assert agg["accuracy"]["mean"] == pytest.approx(0.7)
    assert agg["accuracy"]["std"] == pytest.approx(0.2)  # sqrt(((-.2)^2 + 0 + .2^2) / (3 - 1))
    assert agg["accuracy"]["n"] == 3
    assert agg["per_class"]["N"]["f1"]["mean"] == pytest.approx(0.5)
    assert agg["per_class"]["N"]["f1"]["std"] == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    assert agg["auroc"] == {"mean": pytest.approx(0.7), "std": pytest.approx(np.std([0.8, 0.6], ddof=1)), "n": 2}
    assert agg["n"]["std"] == 0.0
    assert agg["classes"] == ["N"]
    population = mean_std_over_seeds(runs, ddof=0)
    assert population["accuracy"]["std"] == pytest.approx(np.sqrt(0.08 / 3))
    from_json = mean_std_over_seeds([json.loads(json.dumps(to_jsonable(run))) for run in runs])
    assert from_json["auroc"] == agg["auroc"]  # NaN written as null is still left out
    single = mean_std_over_seeds(runs[:1])
    assert math.isnan(single["accuracy"]["std"]) and math.isnan(single["auroc"]["mean"])


def test_to_jsonable_plain_types():
    value = {
        "a": np.float32(0.5),
        "b": np.int64(3),
        "c": float("nan"),
        "d": np.array([1.0, np.inf]),
        "e": (np.bool_(True), "x"),
        7: None,
    }
    out = to_jsonable(value)
    assert out == {"a": 0.5, "b": 3, "c": None, "d": [1.0, None], "e": [True, "x"], "7": None}
    assert type(out["a"]) is float and type(out["b"]) is int and type(out["e"][0]) is bool
    json.dumps(out, allow_nan=False)


# ----------------------------------------------------------------------------- lead generation


def test_psnr_and_mae_by_hand():
    target = np.array([0.0, 1.0, 2.0, 3.0])
    pred = np.array([0.0, 1.5, 2.0, 2.0])
    # MSE = (0 + 0.25 + 0 + 1) / 4 = 0.3125; range 3
    assert psnr(target, pred) == pytest.approx(10 * np.log10(9 / 0.3125))
    assert psnr(target, pred, data_range=2.0) == pytest.approx(10 * np.log10(4 / 0.3125))
    assert mae(target, pred) == pytest.approx(1.5 / 4)
    assert psnr(target, target) == math.inf
    assert math.isnan(psnr(np.zeros(4), pred))
    skimage_metrics = pytest.importorskip("skimage.metrics")
    assert psnr(target, pred, data_range=3.0) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(target, pred, data_range=3.0)
    )


def test_ssim_identical_is_one():
    x = np.sin(np.linspace(0, 20, 1000))
    assert ssim_1d(x, x) == pytest.approx(1.0)
    assert ssim_1d(x, x, gaussian=False, window=7) == pytest.approx(1.0)
    assert ssim_1d(x, -x) < 0


def test_ssim_uniform_window_by_hand():
    # window 3, uniform, population covariance, no border reflection reaches the single kept sample
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([0.0, 2.0, 1.0])
    L = 2.0
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, my = 1.0, 1.0
    vx = np.mean(x**2) - mx**2  # 2/3
    vy = np.mean(y**2) - my**2  # 2/3
    cxy = np.mean(x * y) - mx * my  # 1/3
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim_1d(x, y, window=3, gaussian=False, data_range=L) == pytest.approx(expected)


@pytest.mark.parametrize(
    "options, skimage_options",
    [
        ({}, {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}),
        ({"gaussian": False, "window": 7, "use_sample_covariance": True}, {}),
        ({"gaussian": False, "window": 15, "use_sample_covariance": False}, {"win_size": 15, "use_sample_covariance": False}),
    ],
)
def test_ssim_matches_skimage(options, skimage_options):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    target = np.cumsum(rng.normal(size=(3, 800)), axis=1) * 0.05  # [C, T]
    pred = target + rng.normal(scale=0.1, size=target.shape)
    L = 4.0
    ours = ssim_1d(target, pred, data_range=L, **options)  # [C]
    assert ours.shape == (3,)
    for c in range(3):
        # scikit-image has no 1-D window over a [1, T] image (win_size must fit both sides), so each
        # signal is compared as its own 1-D image
        ref = skimage_metrics.structural_similarity(target[c], pred[c], data_range=L, **skimage_options)
        assert ours[c] == pytest.approx(ref, rel=1e-9)
    # a [T, 1] image with the second axis as channels is the same 1-D computation
    ref_2d = skimage_metrics.structural_similarity(
        target[0][:, None], pred[0][:, None], data_range=L, channel_axis=1, **skimage_options
    )
    assert ours[0] == pytest.approx(ref_2d, rel=1e-9)


def test_leadgen_metrics_on_real_12_lead_record(shared_data):
    wfdb = pytest.importorskip("wfdb")
    record = wfdb.rdrecord(str(shared_data / "cinc2021" / "E07500"))
    signal = record.p_signal.T[:, :2500].astype(np.float64)  # [12, 2500] mV, 5 s at 500 Hz
    rng = np.random.default_rng(5)
    target = np.stack([signal, signal * 0.5])  # [2, 12, T]
    pred = target + rng.normal(scale=0.05, size=target.shape)
    pred[1, 3] = target[1, 3]  # one perfect lead
    target[0, 5] = 0.0  # one flat (missing) lead
    pred[0, 5] = 0.01
    leads = list(record.sig_name)
    m = leadgen_metrics(target, pred, leads)

    valid = [(i, c) for i in range(2) for c in range(12) if (i, c) != (0, 5)]
    psnrs = [psnr(target[i, c], pred[i, c]) for i, c in valid]
    ssims = [ssim_1d(target[i, c], pred[i, c]) for i, c in valid]
    assert m["n_signals"] == 24 and m["n_flat"] == 1
    assert m["psnr"] == math.inf  # the perfect lead dominates the mean, as documented
    assert m["ssim"] == pytest.approx(np.mean(ssims))
    assert m["mae"] == pytest.approx(np.abs(target - pred).mean())
    lead_ii = m["per_lead"][leads[1]]
    assert lead_ii["psnr"] == pytest.approx(np.mean([psnr(target[i, 1], pred[i, 1]) for i in range(2)]))
    assert lead_ii["mae"] == pytest.approx(mae(target[:, 1], pred[:, 1]))
    flat_lead = m["per_lead"][leads[5]]
    assert flat_lead["psnr"] == pytest.approx(psnr(target[1, 5], pred[1, 5]))  # only the non-flat example
    finite = [p for p in psnrs if math.isfinite(p)]
    assert 15 < np.mean(finite) < 60
    # a fixed range makes PSNR comparable across leads
    fixed = leadgen_metrics(target[:1], pred[:1], leads, data_range=10.0)
    assert fixed["n_flat"] == 0
    assert fixed["per_lead"][leads[0]]["psnr"] == pytest.approx(psnr(target[0, 0], pred[0, 0], data_range=10.0))
    json.dumps(to_jsonable(m), allow_nan=False)


def test_leadgen_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 12, 100\).*\(2, 11, 100\)"):
        leadgen_metrics(np.zeros((2, 12, 100)), np.zeros((2, 11, 100)))
