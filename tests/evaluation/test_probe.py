"""Linear probe: patient-level label subsets by hand, C chosen on validation, test scored against
sklearn run directly; embeddings of a small real store are one row per record."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.probe import C_GRID, linear_probe, store_embeddings, subsample_patients
from anyecg.pretrained import AnyECG


def test_subsample_patients_keeps_whole_patients_and_every_class():
    patients = np.array(["a", "a", "b", "c", "c", "d"])
    targets = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [0, 1]])
    for seed in range(10):
        keep = subsample_patients(patients, targets, 0.25, seed)  # one patient of four, plus one per missing class
        assert 5 in keep and targets[keep, 0].any()  # both classes
        chosen = set(patients[keep])
        assert len(chosen) <= 2
        for patient in chosen:  # all of each chosen patient's records
            assert set(np.flatnonzero(patients == patient)) <= set(keep)
    assert list(subsample_patients(patients, targets, 1.0, 0)) == list(range(6))
    with pytest.raises(ValueError, match="fraction"):
        subsample_patients(patients, targets, 0.0, 0)


def _task(n: int, informative: bool, seed: int):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=(n, 2))
    features = rng.normal(size=(n, 6))
    if informative:
        features[:, :2] += 2.0 * targets
    splits = np.array(["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    return features, targets, splits, np.arange(n).astype(str)


def test_linear_probe_matches_sklearn_and_separates_signal_from_noise():
    features, targets, splits, patients = _task(400, True, 0)
    result = linear_probe(features, targets, splits, patients)
    train, val, test = (splits == "train"), (splits == "val"), (splits == "test")
    scaler = StandardScaler().fit(features[train])

    def macro(rows, C):
        return np.mean([roc_auc_score(targets[rows, c], LogisticRegression(C=C, max_iter=2000, random_state=0)
                                      .fit(scaler.transform(features[train]), targets[train, c])
                                      .predict_proba(scaler.transform(features[rows]))[:, 1]) for c in range(2)])

    best_C = max(C_GRID, key=lambda C: macro(val, C))
    assert result["C"] == best_C
    assert result["test_macro_auroc"] == pytest.approx(macro(test, best_C))
    assert result["test_macro_auroc"] > 0.85 and result["train_records"] == 200
    noise = linear_probe(*_task(400, False, 1))
    assert abs(noise["test_macro_auroc"] - 0.5) < 0.1


def test_store_embeddings_one_row_per_record(shared_data, tmp_path, copy_records):
    copy_records(shared_data / "cinc2021", tmp_path / "corpus", ["E07500", "E07504", "JS20003"])
    prepare(PrepareConfig(sources=[tmp_path / "corpus"], out=tmp_path / "store", progress=False))
    store = Store(tmp_path / "store")
    model = AnyECG.from_pretrained()
    features = store_embeddings(model, store)
    assert features.shape == (3, model.backbone.config.dim) and np.isfinite(features).all()
    # the same as the backbone's pooled embedding of the record's one 10 s window
    from anyecg.data.dataset import StoreWindows, collate_windows

    windows = StoreWindows(store, None, random_crop=False, max_window_s=10)
    batch = collate_windows([windows[0]])
    expected = model.backbone.embed(batch["patches"], batch["lead_ids"], batch["pad_mask"])[0].detach().numpy()
    np.testing.assert_allclose(features[int(batch["record"][0])], expected, rtol=1e-4, atol=1e-5)
