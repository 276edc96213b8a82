"""Normalisation against numpy statistics; patching round trips and padding flags."""

from __future__ import annotations

import numpy as np
import pytest

from anyecg.signal.normalize import apply_normalization, normalization_stats, normalize
from anyecg.signal.patching import max_seconds_for_budget, patchify, unpatchify, window_bounds
from anyecg.signal.recipe import Recipe


@pytest.fixture
def signal() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1000)) * np.array([[0.2], [1.5], [0.0]]) + np.array([[0.1], [-2.0], [0.7]])
    return x.astype(np.float32)  # lead 2 is flat (a disconnected electrode)


def test_zscore_matches_numpy_and_flat_lead_is_zero(signal):
    out, offset, scale = normalize(signal, Recipe())
    x = signal.astype(np.float64)
    np.testing.assert_allclose(offset, x.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(scale[:2], x[:2].std(axis=1), rtol=1e-6)
    assert scale[2] == np.float32(Recipe().normalization_eps)
    np.testing.assert_allclose(out[:2], (x[:2] - x[:2].mean(1, keepdims=True)) / x[:2].std(1, keepdims=True), atol=1e-5)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out[2], 0.0, atol=1e-3)


def test_robust_uses_median_and_iqr(signal):
    _, offset, scale = normalize(signal, Recipe(normalization="robust"))
    q25, q50, q75 = np.percentile(signal.astype(np.float64), [25, 50, 75], axis=1)
    np.testing.assert_allclose(offset, q50, rtol=1e-6)
    np.testing.assert_allclose(scale[:2], ((q75 - q25) / 1.349)[:2], rtol=1e-6)


def test_none_keeps_millivolts(signal):
    out, offset, scale = normalize(signal, Recipe(normalization="none"))
    np.testing.assert_array_equal(out, signal)
    assert (offset == 0).all() and (scale == 1).all()


def test_apply_normalization_is_inverted_by_scale_and_offset(signal):
    offset, scale = normalization_stats(signal, "zscore")
    restored = apply_normalization(signal, offset, scale) * scale[:, None] + offset[:, None]
    np.testing.assert_allclose(restored, signal, atol=1e-5)


def test_unknown_method_and_empty_signal_are_errors():
    with pytest.raises(ValueError, match="minmax"):
        normalization_stats(np.ones((1, 5)), "minmax")
    with pytest.raises(ValueError, match="non-empty"):
        normalization_stats(np.ones((1, 0)), "zscore")


def test_patchify_pads_and_flags_the_last_partial_patch():
    x = np.arange(2 * 650, dtype=np.float32).reshape(2, 650)
    patches, is_padded = patchify(x, 300)
    assert patches.shape == (2, 3, 300) and patches.dtype == np.float32
    assert is_padded.tolist() == [[False, False, True]] * 2
    np.testing.assert_array_equal(patches[:, 1], x[:, 300:600])
    np.testing.assert_array_equal(patches[:, 2, :50], x[:, 600:])
    assert (patches[:, 2, 50:] == 0).all()
    np.testing.assert_array_equal(unpatchify(patches, 650), x)


def test_patchify_exact_multiple_has_no_padding():
    x = np.random.default_rng(0).standard_normal((12, 3000)).astype(np.float32)
    patches, is_padded = patchify(x)
    assert patches.shape == (12, 10, 300) and not is_padded.any()
    np.testing.assert_array_equal(unpatchify(patches), x)
    np.testing.assert_array_equal(patches[5, 7], x[5, 2100:2400])


def test_patchify_short_and_empty():
    patches, is_padded = patchify(np.ones((1, 1)), 300)
    assert patches.shape == (1, 1, 300) and is_padded.tolist() == [[True]]
    with pytest.raises(ValueError, match="empty"):
        patchify(np.ones((2, 0)))
    with pytest.raises(ValueError):
        unpatchify(np.ones((1, 2, 300)), 601)


def test_token_budget():
    assert max_seconds_for_budget(12) == 85  # 12 x 85 = 1020 <= 1024 tokens
    assert max_seconds_for_budget(2) == 512
    assert max_seconds_for_budget(1) == 1024
    assert max_seconds_for_budget(15, 1024) == 68
    with pytest.raises(ValueError):
        max_seconds_for_budget(0)
    with pytest.raises(ValueError, match="2000 leads"):
        max_seconds_for_budget(2000)


def test_window_bounds_tile_the_span_with_a_shorter_last_window():
    np.testing.assert_array_equal(window_bounds(100, 1000, 300), [[100, 400], [400, 700], [700, 1000]])
    np.testing.assert_array_equal(window_bounds(0, 701, 300), [[0, 300], [300, 600], [600, 701]])
    np.testing.assert_array_equal(window_bounds(5, 6, 300), [[5, 6]])
    with pytest.raises(ValueError, match=r"need size > 0 and stop > start, got size 300, \[10, 10\)"):
        window_bounds(10, 10, 300)
