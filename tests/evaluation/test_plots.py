"""Report figures are written as readable PNGs of the expected size, including awkward label sets."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

from anyecg.evaluation.plots import plot_confusion, plot_reconstructions, plot_roc_pr  # noqa: E402


def _read_png(path):
    assert path.exists() and path.stat().st_size > 0
    image = mpimg.imread(path)  # [H, W, 4] floats in 0..1
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def test_roc_pr_with_absent_class(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["N", "S", "V", "F"]
    y = rng.integers(0, 3, size=80)  # "F" never occurs
    proba = rng.dirichlet(np.ones(4), size=80)
    out = plot_roc_pr(y, proba, classes, tmp_path / "figs" / "roc.png", title="beats")
    assert out == tmp_path / "figs" / "roc.png"
    image = _read_png(out)
    assert image.shape[:2] == (int(4.8 * 120), 11 * 120)  # figsize x dpi
    assert image[..., :3].std() > 0.01  # something was drawn


def test_roc_pr_binary_and_multilabel(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=50)
    _read_png(plot_roc_pr(y, rng.random(50), ["abnormal", "normal"], tmp_path / "binary.png"))
    truth = (rng.random((40, 3)) < 0.4).astype(int)
    truth[:, 2] = 1  # a class with no negatives
    _read_png(plot_roc_pr(truth, rng.random((40, 3)), ["a", "b", "c"], tmp_path / "ml.png", multilabel=True))


def test_confusion_normalized_and_counts(tmp_path):
    classes = ["N", "S", "V", "F"]
    y_true = list("NNNSSVV")  # "F" has no rows
    y_pred = list("NNSSNVF")
    normalized = _read_png(plot_confusion(y_true, y_pred, classes, tmp_path / "cm.png"))
    counts = _read_png(plot_confusion(y_true, y_pred, classes, tmp_path / "cm_counts.png", normalize=False))
    assert normalized.shape == counts.shape
    assert not np.array_equal(normalized, counts)  # the cell texts differ


def test_reconstructions_grid(tmp_path):
    fs = 100.0
    t = np.arange(300) / fs
    target = np.stack([np.stack([np.sin(2 * np.pi * f * t) for f in (1.0, 2.0)])] * 4)  # [4, 2, 300]
    pred = target + 0.05
    out = plot_reconstructions(target, pred, ["V1", "V2"], fs, tmp_path / "rec.png", n=3)
    image = _read_png(out)
    assert image.shape[:2] == (int(round((1.3 * 2 + 0.8) * 120)), int(round(4.5 * 3 * 120)))
    single = _read_png(plot_reconstructions(target[0], pred[0], ["V1", "V2"], fs, tmp_path / "one.png"))
    assert single.shape[1] == int(round(4.5 * 120))  # one example, one column
    with pytest.raises(ValueError, match="leads"):
        plot_reconstructions(target, pred, ["V1"], fs, tmp_path / "bad.png")
