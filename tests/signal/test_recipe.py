"""The recipe (JSON, compatibility) and the clean pipeline against a per-lead scipy/PyWavelets reference."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import pywt
import scipy.io
import scipy.signal
import wfdb

from anyecg.signal.normalize import normalize
from anyecg.signal.recipe import Recipe, clean, clean_batch, clean_stream, preprocess


def reference_clean(lead: np.ndarray, fs: int, recipe: Recipe) -> np.ndarray:
    """One lead the straightforward way: sosfiltfilt, resample_poly, pywt per 10 s block (float64)."""
    high = min(recipe.bandpass_hz[1], 0.45 * fs, 0.45 * recipe.target_fs)
    sos = [
        scipy.signal.butter(recipe.filter_order[0], recipe.bandpass_hz[0], "highpass", fs=fs, output="sos"),
        scipy.signal.butter(recipe.filter_order[1], high, "lowpass", fs=fs, output="sos"),
    ]
    if recipe.notch_hz is not None and recipe.notch_hz < fs / 2:
        sos.append(scipy.signal.tf2sos(*scipy.signal.iirnotch(recipe.notch_hz, recipe.notch_q, fs=fs)))
    y = scipy.signal.sosfiltfilt(np.concatenate(sos), lead)
    ratio = Fraction(recipe.target_fs, fs)
    n_out = int(Fraction(lead.size) * ratio + Fraction(1, 2))
    y = scipy.signal.resample_poly(y, ratio.numerator, ratio.denominator)[:n_out]
    if recipe.wavelet is None:
        return y
    block, margin = recipe.wavelet_block, recipe.wavelet_margin
    out = np.empty_like(y)
    for start in range(0, n_out, block):
        lo, hi = (0, n_out) if n_out <= block else (max(0, start - margin), min(n_out, start + block + margin))
        window = y[lo:hi]
        level = pywt.dwt_max_level(window.size, pywt.Wavelet(recipe.wavelet).dec_len)
        coeffs = pywt.wavedec(window, recipe.wavelet, level=level)
        threshold = np.median(np.abs(coeffs[-1])) / 0.6745 * np.sqrt(2 * np.log(window.size))
        kept = [coeffs[0]] + [pywt.threshold(d, threshold, mode=recipe.threshold_mode) for d in coeffs[1:]]
        out[start : start + block] = pywt.waverec(kept, recipe.wavelet)[start - lo : start - lo + block]
    return out


@pytest.fixture(scope="module")
def cinc_records(shared_data) -> np.ndarray:
    """float64 [6, 12, 5000]: six CinC 2021 records at 500 Hz in mV (gain 1000 / mV)."""
    paths = sorted((shared_data / "cinc2021").glob("*.mat"))[::9][:6]
    return np.stack([scipy.io.loadmat(p)["val"] / 1000.0 for p in paths])


# Tolerance for clean vs the reference: both compute in float64 with the same library routines, so
# they agree to float64 rounding; the output is float32, whose rounding (6e-8 relative) dominates.
ATOL_MV = 1e-6


def test_clean_batch_equals_per_lead_reference_on_real_12_lead_records(cinc_records):
    recipe = Recipe()
    out = clean_batch(cinc_records, 500, recipe)
    assert out.shape == (6, 12, 3000) and out.dtype == np.float32
    expected = np.stack([[reference_clean(lead, 500, recipe) for lead in rec] for rec in cinc_records])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=ATOL_MV)


@pytest.mark.parametrize(
    "recipe", [Recipe(notch_hz=60.0, threshold_mode="soft"), Recipe(wavelet=None, notch_hz=None, filter_order=(4, 4))]
)
def test_clean_batch_other_recipes_and_a_200_hz_source(shared_data, recipe):
    record = wfdb.rdrecord(str(shared_data / "cpsc2021" / "data_101_6"), sampto=200 * 25)  # 25 s at 200 Hz
    signals = record.p_signal.T[None]  # [1, 2, 5000]
    out = clean_batch(signals, 200, recipe)
    assert out.shape == (1, 2, 7500)
    expected = np.stack([reference_clean(lead, 200, recipe) for lead in signals[0]])
    np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=ATOL_MV)


def test_result_does_not_depend_on_threads_or_batching(cinc_records):
    together = clean_batch(cinc_records, 500, workers=3)
    np.testing.assert_array_equal(together, clean_batch(cinc_records, 500, workers=1))
    np.testing.assert_array_equal(together[4], clean(cinc_records[4], 500))


@pytest.mark.parametrize("fs, seconds", [(200, 0.5), (500, 0.5), (360, 0.01), (1000, 0.002)])
def test_very_short_inputs_are_well_defined(fs, seconds):
    n = max(1, int(round(fs * seconds)))
    x = np.random.default_rng(n).standard_normal((2, n)) + 0.5
    out = clean(x, fs)
    n_out = int(Fraction(n * 300, fs) + Fraction(1, 2))
    assert out.shape == (2, n_out) and np.isfinite(out).all()
    assert np.isfinite(preprocess(x, fs)).all()
    np.testing.assert_allclose(np.concatenate(list(clean_stream([x], fs)), axis=1), out, atol=ATOL_MV)


def test_input_shorter_than_one_output_sample_gives_an_empty_signal():
    x = np.ones((2, 1))  # 1 ms at 1000 Hz: round(0.3) = 0 samples at 300 Hz
    assert clean(x, 1000).shape == (2, 0)
    assert list(clean_stream([x], 1000)) == []


def test_empty_and_misshaped_inputs_are_errors():
    with pytest.raises(ValueError, match="empty"):
        clean(np.zeros((2, 0)), 500)
    with pytest.raises(ValueError, match="leads, samples"):
        clean(np.zeros(100), 500)
    with pytest.raises(ValueError, match="records, leads, samples"):
        clean_batch(np.zeros((2, 100)), 500)
    assert list(clean_stream([], 500)) == []


def test_clean_stream_equals_clean_on_a_whole_mitbih_record(shared_data):
    """30 min at 360 Hz fed in uneven chunks (a 24 h Holter streams the same way)."""
    signal = wfdb.rdrecord(str(shared_data / "mitdb" / "208")).p_signal.T  # [2, 650000]
    whole = clean(signal, 360)
    sizes = np.random.default_rng(0).integers(1, 90_000, size=40)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    bounds = bounds[bounds < signal.shape[1]].tolist() + [signal.shape[1]]
    pieces = list(clean_stream((signal[:, a:b] for a, b in zip(bounds[:-1], bounds[1:])), 360))
    streamed = np.concatenate(pieces, axis=1)
    assert streamed.shape == whole.shape == (2, 541_667)
    # Stated tolerance: 1e-5 mV (0.01 uV, far below the 5 uV ADC step); measured ~1e-6 (float32 rounding).
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "fs, recipe",
    [(257, Recipe(wavelet=None)), (1000, Recipe(notch_hz=60.0)), (200, Recipe(threshold_mode="soft"))],
)
def test_clean_stream_equals_clean_at_other_rates(shared_data, fs, recipe):
    """Segment edges must fall on the polyphase grid for any up/down (257 Hz: down = 257)."""
    signal = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=360 * 600).p_signal.T  # read as if at `fs`
    whole = clean(signal, fs, recipe)
    step = 12_345
    streamed = np.concatenate(
        list(clean_stream((signal[:, i : i + step] for i in range(0, signal.shape[1], step)), fs, recipe)), axis=1
    )
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


def test_preprocess_is_clean_then_normalize(cinc_records):
    recipe = Recipe(normalization="robust")
    cleaned = clean(cinc_records[0], 500, recipe)
    np.testing.assert_array_equal(preprocess(cinc_records[0], 500, recipe), normalize(cleaned, recipe)[0])


def test_recipe_json_round_trip_is_exact():
    recipes = [
        Recipe(),
        Recipe(notch_hz=None, wavelet=None, normalization="none", bandpass_hz=(0.5, 40.0), filter_order=(1, 8)),
        Recipe(notch_hz=60.0, notch_q=25.5, wavelet="sym8", wavelet_level=5, threshold_mode="soft", patch_seconds=2.0),
    ]
    for recipe in recipes:
        text = recipe.to_json()
        assert json.loads(text) == json.loads(json.dumps(recipe.to_dict()))
        back = Recipe.from_json(text)
        assert back == recipe and back.to_json() == text
        assert isinstance(back.bandpass_hz, tuple) and isinstance(back.filter_order, tuple)
        assert hash(back) == hash(recipe)
    assert Recipe().patch_size == 300 and Recipe(patch_seconds=2.0).patch_size == 600


def test_from_dict_rejects_unknown_keys_and_bad_values():
    data = Recipe().to_dict() | {"lowcut": 0.5, "fs": 250}
    with pytest.raises(ValueError, match=r"unknown preprocessing recipe keys \['fs', 'lowcut'\]"):
        Recipe.from_dict(data)
    with pytest.raises(ValueError, match="normalization"):
        Recipe(normalization="minmax")
    with pytest.raises(ValueError, match="bandpass_hz"):
        Recipe(bandpass_hz=(40.0, 0.5))
    with pytest.raises(ValueError, match="whole number"):
        Recipe(patch_seconds=0.3333)
    with pytest.raises(ValueError, match="filter_order must be a pair"):
        Recipe(filter_order=4)


def test_check_compatible_lists_every_differing_field():
    Recipe().check_compatible(Recipe.from_json(Recipe().to_json()))
    with pytest.raises(ValueError) as err:
        Recipe().check_compatible(Recipe(notch_hz=60.0, normalization="robust"))
    message = str(err.value)
    assert "notch_hz: 50.0 != 60.0" in message and "normalization: 'zscore' != 'robust'" in message
    assert "target_fs" not in message
