"""Filters and the whole clean() chain on synthetic sines, against analytic responses."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from anyecg.signal.filters import bandpass, bandpass_sos, notch, notch_sos, upper_edge, zero_phase
from anyecg.signal.recipe import Recipe, clean, filter_sos


def sine(freq_hz: float, fs: float, seconds: float, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * fs))) / fs
    return np.sin(2 * np.pi * freq_hz * t + phase)[None]  # [1, T]


def middle_rms(x: np.ndarray, fs: float, edge_s: float) -> float:
    """RMS away from the edges, where a zero-phase filter has reached its steady state."""
    k = int(edge_s * fs)
    return float(np.sqrt(np.mean(x[..., k:-k] ** 2)))


def db(ratio: float) -> float:
    return 20 * np.log10(ratio)


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_notch_attenuates_mains_by_40_db_and_spares_ecg_band(mains):
    fs = 500.0
    hum = sine(mains, fs, 10.0)
    assert db(middle_rms(notch(hum, fs, mains), fs, 2.0) / middle_rms(hum, fs, 2.0)) <= -40.0
    # 10 Hz (QRS band) passes: |H(10 Hz)|^2 of a Q=30 notch differs from 1 by < 1e-3.
    qrs = sine(10.0, fs, 10.0)
    assert abs(middle_rms(notch(qrs, fs, mains), fs, 2.0) / middle_rms(qrs, fs, 2.0) - 1) < 1e-3


def test_notch_at_or_above_nyquist_is_skipped():
    x = np.random.default_rng(0).standard_normal((2, 300))
    assert notch_sos(100.0, 50.0).shape == (0, 6)
    np.testing.assert_array_equal(notch(x, 100.0, 50.0), x)
    assert notch_sos(120.0, 50.0).shape == (1, 6)


@pytest.mark.parametrize("freq", [0.05, 0.5, 5.0, 40.0, 70.0, 90.0, 120.0])
def test_bandpass_gain_matches_analytic_squared_response(freq):
    """Time-domain gain of the forward-backward filter == |H(f)|^2 from scipy's sosfreqz."""
    fs = 500.0
    sos = bandpass_sos(fs, 0.1, 75.0, (2, 6))
    seconds = max(60.0, 40 / freq)
    x = sine(freq, fs, seconds)
    measured = middle_rms(bandpass(x, fs), fs, seconds / 4) / middle_rms(x, fs, seconds / 4)
    _, h = scipy.signal.sosfreqz(sos, worN=[freq], fs=fs)
    expected = np.abs(h[0]) ** 2
    assert abs(measured - expected) < 1e-3, (measured, expected)


def test_upper_edge_clamped_below_both_nyquists():
    assert upper_edge(75.0, 500.0, 300.0) == 75.0
    assert upper_edge(75.0, 200.0, 300.0) == 75.0  # 0.45 * 200 = 90
    assert upper_edge(75.0, 100.0, 300.0) == pytest.approx(45.0)
    assert upper_edge(75.0, 500.0, 128.0) == pytest.approx(57.6)
    # a 100 Hz source is filtered at 45 Hz without error
    out = clean(sine(10.0, 100.0, 5.0), 100.0)
    assert out.shape == (1, 1500) and np.isfinite(out).all()


def test_one_hz_sine_keeps_its_amplitude_through_clean():
    fs, amplitude = 500.0, 1.5
    out = clean(amplitude * sine(1.0, fs, 30.0), fs)[0]  # [T'] at 300 Hz
    t = np.arange(out.size) / 300.0
    k = slice(5 * 300, -5 * 300)
    # least-squares amplitude of the 1 Hz component in the steady middle
    basis = np.stack([np.sin(2 * np.pi * t[k]), np.cos(2 * np.pi * t[k])], axis=1)
    coef, *_ = np.linalg.lstsq(basis, out[k], rcond=None)
    assert abs(np.hypot(*coef) / amplitude - 1) < 0.01


def test_slow_drift_is_removed_by_clean():
    fs = 500.0
    drift = 2.0 * sine(0.02, fs, 300.0)  # 2 mV baseline wander, 50 s period
    out = clean(drift, fs)
    # order-2 high-pass run twice: |H(0.02 Hz)|^2 = -56 dB; allow the wavelet step some leeway
    assert db(middle_rms(out, 300.0, 60.0) / middle_rms(drift, fs, 60.0)) <= -40.0


def test_content_at_100_hz_is_removed_by_clean():
    fs = 500.0
    x = sine(100.0, fs, 60.0)
    out = clean(x, fs)
    # low-pass order 6 at 75 Hz, forward and backward: |H(100 Hz)|^2 = -30.3 dB. Measured after the
    # 0.1 Hz high-pass has settled from the sine's abrupt start (time constant 2.3 s).
    assert db(middle_rms(out, 300.0, 20.0) / middle_rms(x, fs, 20.0)) <= -30.0


def test_filter_cascade_matches_scipy_designs():
    fs = 360.0
    recipe = Recipe(notch_hz=60.0)
    expected = np.concatenate([
        scipy.signal.butter(2, 0.1, "highpass", fs=fs, output="sos"),
        scipy.signal.butter(6, 75.0, "lowpass", fs=fs, output="sos"),
        scipy.signal.tf2sos(*scipy.signal.iirnotch(60.0, 30.0, fs=fs)),
    ])
    np.testing.assert_allclose(filter_sos(fs, recipe), expected, rtol=0, atol=0)
    assert filter_sos(fs, Recipe(notch_hz=None)).shape == (4, 6)


@pytest.mark.parametrize("rows", [3, 8, 45])  # scipy's row loop below 8 rows, the tiled kernel from 8 on
@pytest.mark.parametrize("n", [1, 2, 5, 34, 100, 5000])
def test_zero_phase_equals_sosfiltfilt_and_handles_inputs_shorter_than_the_pad_length(rows, n):
    sos = filter_sos(500.0, Recipe())
    x = np.random.default_rng(n).standard_normal((rows, n)) + 3.0
    y = zero_phase(x, sos)
    assert y.shape == x.shape and np.isfinite(y).all()
    padlen = min(3 * (2 * len(sos) + 1), n - 1)  # scipy's default, clamped for short inputs
    np.testing.assert_allclose(y, scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen), rtol=1e-12, atol=1e-12)


def test_zero_phase_along_another_axis():
    sos = filter_sos(360.0, Recipe())
    x = np.random.default_rng(0).standard_normal((4, 700, 5))
    np.testing.assert_allclose(zero_phase(x, sos, axis=1), scipy.signal.sosfiltfilt(sos, x, axis=1), atol=1e-12)


def test_empty_signal_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        zero_phase(np.zeros((2, 0)), filter_sos(500.0, Recipe()))
