import numpy as np
import pytest
from scipy.signal import resample_poly

from anyecg.models.contract import SignalContract, segments, to_model_input


def test_leads_are_placed_by_name_and_absent_slots_masked():
    contract = SignalContract(fs=300, window_s=1, leads=("I", "II", "V1"))
    signal = np.stack([np.full(300, 1.0), np.full(300, 2.0), np.full(300, 3.0)])  # V1, unknown, I
    x, mask = to_model_input(signal, 300, ["V1", "unknown", "I"], contract)
    assert mask.tolist() == [True, False, True]
    assert x[0, 0] == 3.0 and x[1].max() == 0.0 and x[2, 0] == 1.0


def test_rate_conversion_equals_scipy_and_window_is_padded():
    contract = SignalContract(fs=500, window_s=10)
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((12, 2400))  # 8 s at 300 Hz
    x, mask = to_model_input(signal, 300, list(contract.leads), contract)
    reference = resample_poly(signal, 5, 3, axis=-1)
    assert x.shape == (12, 5000) and mask.all()
    np.testing.assert_allclose(x[:, :4000], reference, atol=1e-5)
    assert np.all(x[:, 4000:] == 0)


def test_segments_tile_long_recordings():
    contract = SignalContract(fs=300, window_s=10, leads=("II",))
    signal = np.arange(300 * 34, dtype=float)[None]  # 34 s
    windows, mask = segments(signal, 300, ["II"], contract)
    assert windows.shape == (3, 1, 3000)  # the 4 s tail is under half a window: dropped
    np.testing.assert_array_equal(windows[1, 0], signal[0, 3000:6000])


def test_mismatch_errors_print_values():
    contract = SignalContract(fs=500, window_s=5)
    with pytest.raises(ValueError, match=r"\[B, 12, 2500\]"):
        contract.check((2, 12, 3000))
    with pytest.raises(ValueError, match="none of the leads"):
        to_model_input(np.zeros((1, 100)), 300, ["X"], contract)
