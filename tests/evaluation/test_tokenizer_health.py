"""Tokenizer health figures: trivial code guesses, the 0.1 s shift, pairwise cosine and the
reconstruction baselines against hand-computed values; the whole report on a small real store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.tokenizer_health import (
    copy_code_guesses,
    mean_pairwise_cosine,
    patch_baselines,
    shifted_patches,
    tokenizer_health,
)
from anyecg.pretrained import AnyECG


def test_copy_code_guesses_by_hand():
    codes = torch.tensor([[[1, 2, 3, 4],
                           [5, 6, 7, 8],
                           [9, 10, 11, 12]]])  # [1, 3 leads, 4 s]
    pad = torch.tensor([[[False, False, False, False],
                         [False, False, False, True],
                         [False, False, False, False]]])
    masked = torch.tensor([[[True, False, True, True],
                            [True, True, False, False],
                            [False, False, False, True]]])
    other_lead, neighbour = copy_code_guesses(codes, pad, masked, fallback=0)
    # same second, first visible other lead; 0 where no other lead is visible (second 0 of lead 2:
    # leads 0 and 1 are masked there)
    assert other_lead.tolist() == [[[9, 10, 7, 0],
                                    [9, 2, 11, 0],
                                    [0, 2, 7, 0]]]
    # previous visible second of the same lead, else the next one, else 0
    assert neighbour.tolist() == [[[2, 0, 2, 0],
                                   [0, 7, 0, 7],
                                   [10, 9, 10, 11]]]


def test_shifted_patches_cut_the_signal_later():
    signal = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 12)  # [1, 2 leads, 12 samples]
    patches = signal.view(1, 2, 3, 4)  # 3 patches of 4 samples
    pad = torch.tensor([[[False, False, False], [False, False, True]]])
    moved, moved_pad = shifted_patches(patches, pad, shift=1)
    assert moved.shape == (1, 2, 2, 4)
    assert moved[0, 0, 0].tolist() == [1, 2, 3, 4] and moved[0, 1, 1].tolist() == [17, 18, 19, 20]
    assert moved_pad.tolist() == [[[False, False], [False, True]]]
    with pytest.raises(ValueError, match="shift"):
        shifted_patches(patches, pad, shift=4)


def test_mean_pairwise_cosine_matches_sklearn():
    vectors = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) + 0.5
    matrix = cosine_similarity(vectors.numpy())
    expected = (matrix.sum() - np.trace(matrix)) / (50 * 49)
    assert mean_pairwise_cosine(vectors) == pytest.approx(expected, abs=1e-9)
    assert mean_pairwise_cosine(torch.ones(5, 3) * torch.arange(1, 6)[:, None]) == pytest.approx(1.0)


def test_patch_baselines_by_hand():
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(4, 6))
    train = np.repeat(prototypes, 10, axis=0)  # 4 distinct patches
    held_out = prototypes[[0, 1, 1, 3]] + 0.0
    figures = patch_baselines(train, held_out, n_codes=4, n_components=6)
    assert figures["zero_mse"] == pytest.approx((held_out**2).mean())
    assert figures["mean_patch_mse"] == pytest.approx(((held_out - prototypes.mean(0)) ** 2).mean())
    assert figures["kmeans_mse"] == pytest.approx(0.0, abs=1e-12)  # 4 codes hold the 4 patches exactly
    assert figures["pca_mse"] == pytest.approx(0.0, abs=1e-12)  # full rank
    fewer = patch_baselines(train, held_out, n_codes=2, n_components=1)
    assert fewer["kmeans_mse"] > 0.0 and fewer["pca_mse"] > 0.0


def test_shift_references_by_hand():
    # impulses of height 1..4 at sample 0, "shifted" to sample 4: raw k-means sends every moved
    # impulse to the smallest prototype (|a e4 - b e0|^2 = a^2 + b^2), spectral k-means (flat |FFT| = a)
    # keeps each one's code
    prototypes = np.zeros((4, 8))
    prototypes[:, 0] = [1.0, 2.0, 3.0, 4.0]
    moved = np.roll(prototypes, 4, axis=1)
    figures = patch_baselines(np.repeat(prototypes, 10, axis=0), prototypes, n_codes=4, n_components=2,
                              shift_pairs=(prototypes, moved))
    assert figures["kmeans_codes_unchanged_by_0.1s_shift"] == pytest.approx(0.25)
    assert figures["spectral_kmeans_codes_unchanged_by_0.1s_shift"] == pytest.approx(1.0)
    assert figures["shifted_patch_mse"] == pytest.approx(np.mean([2 * a**2 / 8 for a in (1, 2, 3, 4)]))
    assert "shifted_patch_mse" not in patch_baselines(prototypes, prototypes, n_codes=4, n_components=2)


@pytest.fixture(scope="module")
def small_store(shared_data, tmp_path_factory, copy_records) -> Store:
    corpus = tmp_path_factory.mktemp("health-corpus")
    stems = sorted(p.stem for p in (shared_data / "cinc2021").glob("E*.hea"))[:12]
    copy_records(shared_data / "cinc2021", corpus, stems)
    out = tmp_path_factory.mktemp("health-store")
    prepare(PrepareConfig(sources=[corpus], out=out, progress=False))
    return Store(out)


def test_tokenizer_health_of_the_shipped_model(small_store):
    health = tokenizer_health(AnyECG.from_pretrained(), small_store, max_train_patches=2_000)
    held_out = small_store.manifest["split"].isin(["val", "test"])
    assert health["held_out_tokens"] == int((small_store.manifest.loc[held_out, "duration_s"].round().astype(int)
                                             * small_store.manifest.loc[held_out, "n_leads"]).sum())
    for key in ("code_usage", "encoder_mean_cosine", "codes_unchanged_by_0.1s_shift", "masked_code_accuracy",
                "copy_other_lead_accuracy", "copy_neighbour_accuracy", "most_frequent_code_accuracy"):
        assert -1.0 <= health[key] <= 1.0, (key, health[key])
    assert 0 < health["masked_tokens_scored"] < health["held_out_tokens"]
    # the baselines are fitted on other records than they are scored on: none is perfect
    assert 0 < health["kmeans_mse"] < health["zero_mse"] and 0 < health["pca_mse"] < health["zero_mse"]
    # a 0.1 s shift changes real patches a lot; k-means on their spectral magnitudes keeps more codes
    assert health["shifted_patch_mse"] > health["kmeans_mse"]
    assert health["kmeans_codes_unchanged_by_0.1s_shift"] < health["spectral_kmeans_codes_unchanged_by_0.1s_shift"]
