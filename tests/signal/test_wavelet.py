"""Wavelet denoising and DWT targets against PyWavelets applied row by row / patch by patch."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import wfdb

from anyecg.signal.resample import resample
from anyecg.signal.wavelet import _median_inplace, block_windows, denoise_rows, dwt_targets, wavelet_denoise


@pytest.fixture(scope="module")
def mitdb_300hz(shared_data) -> np.ndarray:
    """float64 [2, 36 s * 300]: the first 36 s of MIT-BIH record 119 at 300 Hz, in mV."""
    record = wfdb.rdrecord(str(shared_data / "mitdb" / "119"), sampto=36 * 360)
    return resample(record.p_signal.T, 360)


def reference_denoise(row: np.ndarray, wavelet: str, level: int | None, mode: str) -> np.ndarray:
    """One window, the textbook way: pywt.wavedec, MAD sigma, pywt.threshold, pywt.waverec."""
    level = pywt.dwt_max_level(row.size, pywt.Wavelet(wavelet).dec_len) if level is None else level
    coeffs = pywt.wavedec(row, wavelet, level=level)
    sigma = np.median(np.abs(coeffs[-1])) / 0.6745
    threshold = sigma * np.sqrt(2 * np.log(row.size))
    kept = [coeffs[0]] + [pywt.threshold(d, threshold, mode=mode) for d in coeffs[1:]]
    return pywt.waverec(kept, wavelet)[: row.size]


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("level", [None, 4])
def test_denoise_rows_matches_pywt_per_row(mitdb_300hz, mode, level):
    rows = mitdb_300hz[:, :3000]
    expected = np.stack([reference_denoise(r, "db6", level, mode) for r in rows])
    np.testing.assert_allclose(denoise_rows(rows, "db6", level, mode), expected, rtol=0, atol=1e-12)


def test_block_denoising_matches_window_by_window_reference(mitdb_300hz):
    block, margin = 3000, 600
    out = wavelet_denoise(mitdb_300hz, "db6", mode="hard", block=block, margin=margin)
    n = mitdb_300hz.shape[1]
    expected = np.empty_like(mitdb_300hz)
    for start in range(0, n, block):  # 10 800 samples -> blocks of 3000, 3000, 3000, 1800
        lo, hi = max(0, start - margin), min(n, start + block + margin)
        for lead in range(2):
            window = reference_denoise(mitdb_300hz[lead, lo:hi], "db6", None, "hard")
            expected[lead, start : start + block] = window[start - lo : start - lo + block]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_block_windows_cover_the_signal_once():
    windows = block_windows(10_001, 3000, 600)
    assert [(w.start, w.stop) for w in windows] == [(0, 3000), (3000, 6000), (6000, 9000), (9000, 10_001)]
    assert windows[0].win_start == 0 and windows[1].win_start == 2400 and windows[-1].win_stop == 10_001
    assert block_windows(3000, 3000, 600) == [(0, 3000, 0, 3000)]


def test_denoising_brings_a_noisy_ecg_closer_to_the_clean_one(mitdb_300hz):
    clean_ecg = mitdb_300hz[:, :3000]
    noisy = clean_ecg + np.random.default_rng(0).normal(scale=0.1, size=clean_ecg.shape)  # 100 uV white noise
    before = np.sqrt(np.mean((noisy - clean_ecg) ** 2))
    after = np.sqrt(np.mean((wavelet_denoise(noisy, "db6", mode="hard") - clean_ecg) ** 2))
    assert after < 0.8 * before, (before, after)


def test_hard_threshold_keeps_qrs_amplitude(mitdb_300hz):
    x = mitdb_300hz[:, :3000]
    p2p = np.ptp(x.reshape(2, 10, 300), axis=-1)  # [L, seconds]
    kept = np.ptp(wavelet_denoise(x, "db6", mode="hard").reshape(2, 10, 300), axis=-1) / p2p
    assert abs(np.median(kept) - 1) < 0.01 and kept.min() > 0.9


def test_pure_slow_sine_is_untouched():
    x = np.sin(2 * np.pi * np.arange(3000) / 300.0)[None]  # 1 Hz: no finest detail, threshold ~0
    np.testing.assert_allclose(wavelet_denoise(x, "db6"), x, atol=1e-9)


def test_dwt_targets_equal_pywt_per_patch_then_zscore(mitdb_300hz):
    patches = mitdb_300hz[:, :3000].reshape(2, 10, 300)  # [L, P, S]
    targets = dwt_targets(patches, "db6", level=4)
    assert len(targets) == 5
    for lead in range(2):
        for p in range(10):
            coeffs = pywt.wavedec(patches[lead, p], "db6", level=4)
            for got, c in zip(targets, coeffs):
                assert got.dtype == np.float32 and got.shape[:2] == (2, 10)
                np.testing.assert_allclose(got[lead, p], (c - c.mean()) / c.std(), rtol=1e-5, atol=1e-5)


def test_dwt_targets_default_level_and_padding_patch():
    patches = np.zeros((1, 2, 300))
    patches[0, 0] = np.random.default_rng(0).standard_normal(300)
    targets = dwt_targets(patches)
    assert len(targets) == pywt.dwt_max_level(300, 12) + 1 == 5
    for t in targets:
        assert np.isfinite(t).all()
        np.testing.assert_array_equal(t[0, 1], 0.0)  # all-zero padding patch
        np.testing.assert_allclose(t[0, 0].std(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 1506, 1507])
def test_median_kernel_equals_numpy_median_with_ties(n):
    rng = np.random.default_rng(n)
    for trial in range(20):
        values = rng.standard_normal(n)
        if trial % 2:
            values = np.round(values, 1)  # many ties
        assert _median_inplace(values.copy()) == np.median(values)


def test_dwt_magnitude_targets_without_the_finest_bands(mitdb_300hz):
    patches = mitdb_300hz[:, :3000].reshape(2, 10, 300)  # [L, P, S]
    targets = dwt_targets(patches, "db6", level=4, magnitude=True, drop_finest=2)
    assert len(targets) == 3  # cA4, cD4, cD3
    for lead in range(2):
        for p in range(10):
            coeffs = pywt.wavedec(patches[lead, p], "db6", level=4)[:3]
            for got, c in zip(targets, coeffs):
                magnitude = np.abs(c)
                np.testing.assert_allclose(got[lead, p], (magnitude - magnitude.mean()) / magnitude.std(),
                                           rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="drop_finest"):
        dwt_targets(patches, "db6", level=4, drop_finest=5)
