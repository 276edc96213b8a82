"""Record-level RR-interval features: hand-computed values, wfdb's reference annotations on real
recordings, the standardizer, the cache, and the features reaching the classifier's head."""

import math

import numpy as np
import pytest
import torch
import wfdb

from anyecg.tasks import record_rr
from anyecg.tasks.record_rr import (
    RECORD_FEATURES,
    RECORD_RR_FEATURES,
    RECORD_SHAPE_FEATURES,
    RRStandardizer,
    peak_rr_features,
    peak_shape_features,
    record_rr_features,
)


def test_features_of_known_peaks_match_hand_computed_values():
    # fs 100 Hz, RR = 0.85, 0.85, 1.25, 0.85 s
    f = dict(zip(RECORD_RR_FEATURES, peak_rr_features(np.array([0, 85, 170, 295, 380]), 100.0)))
    mean = (0.85 * 3 + 1.25) / 4  # 0.95
    assert f["rr_mean"] == pytest.approx(mean)
    assert f["rr_std"] == pytest.approx(math.sqrt((3 * 0.1**2 + 0.3**2) / 4))
    assert f["rr_cv"] == pytest.approx(f["rr_std"] / mean)
    assert f["rmssd"] == pytest.approx(math.sqrt((0 + 0.4**2 + 0.4**2) / 3))  # differences 0, +0.4, -0.4
    assert f["pnn50"] == pytest.approx(2 / 3)
    assert f["median_abs_diff_over_mean"] == pytest.approx(0.4 / mean)
    assert f["max_abs_diff_over_mean"] == pytest.approx(0.4 / mean)
    assert f["rr_p10"] == pytest.approx(0.85) and f["rr_min"] == pytest.approx(0.85)
    assert f["rr_p90"] == pytest.approx(0.85 + 0.7 * 0.4)  # linear interpolation at rank 2.7 of 3
    assert f["rr_max"] == pytest.approx(1.25)
    assert f["heart_rate"] == pytest.approx(60 / mean)
    assert f["histogram_bins"] == 2  # 0.8-0.9 s and 1.2-1.3 s
    assert f["histogram_entropy"] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    ratios = [1.0, 1.25 / 0.85, 0.85 / 1.25]
    assert f["rr_ratio_mean"] == pytest.approx(sum(ratios) / 3)
    assert f["rr_ratio_std"] == pytest.approx(np.std(ratios))


def test_too_few_beats_give_nan():
    assert np.isnan(peak_rr_features(np.array([0, 100, 200]), 100.0)).all()
    assert np.isnan(record_rr_features(np.zeros(3000), 300.0)).all()  # a flat line: no beats


@pytest.mark.parametrize("record", ["100", "201"])
def test_detected_rhythm_matches_the_reference_annotations(shared_data, record):
    """On 60 s of real MIT-BIH, the detector's heart rate and RR variability agree with the
    cardiologists' beat annotations (wfdb's reader)."""
    path = str(shared_data / "mitdb" / record)
    fs, stop = 360, 360 * 60
    start = 360 * 300 if record == "201" else 0  # 201 is in atrial fibrillation from its 5th minute on
    signal = wfdb.rdrecord(path, sampfrom=start, sampto=start + stop, channels=[0]).p_signal[:, 0]
    annotation = wfdb.rdann(path, "atr", sampfrom=start, sampto=start + stop)
    beats = np.array([s for s, symbol in zip(annotation.sample, annotation.symbol) if symbol in "NLRBAaJSVrFejnE/fQ"]) - start
    detected = dict(zip(RECORD_RR_FEATURES, record_rr_features(signal, fs)))
    reference = dict(zip(RECORD_RR_FEATURES, peak_rr_features(beats, fs)))
    assert detected["heart_rate"] == pytest.approx(reference["heart_rate"], abs=3)
    assert detected["rr_cv"] == pytest.approx(reference["rr_cv"], abs=0.05)


def test_atrial_fibrillation_is_more_irregular_than_sinus_rhythm(shared_data):
    sinus = wfdb.rdrecord(str(shared_data / "mitdb" / "100"), sampto=360 * 60, channels=[0]).p_signal[:, 0]
    af = wfdb.rdrecord(str(shared_data / "mitdb" / "201"), sampfrom=360 * 300, sampto=360 * 360, channels=[0]).p_signal[:, 0]
    cv = RECORD_RR_FEATURES.index("rr_cv")
    assert record_rr_features(af, 360)[cv] > 2 * record_rr_features(sinus, 360)[cv]


def test_standardizer_fits_train_statistics_and_handles_missing_values():
    F = len(RECORD_FEATURES)
    train = np.full((3, F), 5.0)  # columns 2.. constant: their deviation 0 becomes 1
    train[:, :2] = [[1.0, 10.0], [3.0, np.nan], [np.nan, 30.0]]
    scaler = RRStandardizer.fit(train)
    np.testing.assert_allclose(scaler.mean[:3], [2.0, 20.0, 5.0])
    np.testing.assert_allclose(scaler.std[:3], [1.0, 10.0, 1.0])
    records = np.full((2, F), 5.0)
    records[:, :2] = [[2.0, np.nan], [100.0, 0.0]]
    z = scaler(records)
    assert z.dtype == np.float32 and z.shape == (2, F)
    np.testing.assert_allclose(z[:, :2], [[0.0, 0.0], [record_rr.CLIP, -2.0]])  # NaN -> the train mean; 98 sd clipped
    assert not z[:, 2:].any()


def test_standardizer_json_round_trip_and_feature_mismatch():
    scaler = RRStandardizer(np.arange(float(len(RECORD_FEATURES))), np.ones(len(RECORD_FEATURES)))
    again = RRStandardizer.from_json(scaler.to_json())
    np.testing.assert_array_equal(again.mean, scaler.mean)
    assert again.features == tuple(RECORD_FEATURES)
    stale = {**scaler.to_json(), "features": RECORD_FEATURES[:-1] + ["other"]}
    with pytest.raises(ValueError, match="other"):
        RRStandardizer.from_json(stale)


def test_a_model_of_the_16_rr_features_reads_its_columns_only():
    """A model fine-tuned before the shape features keeps its 16 inputs, taken by name."""
    old = RRStandardizer.from_json({"features": RECORD_RR_FEATURES, "mean": [1.0] * 16, "std": [2.0] * 16})
    records = np.arange(2 * len(RECORD_FEATURES), dtype=np.float64).reshape(2, -1)  # [2, 22]
    np.testing.assert_allclose(old(records), np.clip((records[:, :16] - 1.0) / 2.0, -record_rr.CLIP, record_rr.CLIP))


def test_shape_features_by_hand():
    """Ten beats 1 s apart at 100 Hz, each with a P wave; beats 3 and 7 are upside down (ectopic),
    and the interval before each comes 0.2 s early."""
    fs = 100.0
    qrs = np.array([0.0, 0.3, 1.0, 0.3, 0.0])  # R peak at index 2
    p_wave = np.hanning(11) * 0.2  # peaks 17 samples before the R peak: in the 250-100 ms segment
    peaks = np.array([100, 200, 300, 380, 500, 600, 700, 780, 900, 1000])
    signal = np.zeros(1100)
    for k, peak in enumerate(peaks):
        sign = -1.0 if k in (3, 7) else 1.0
        signal[peak - 2 : peak + 3] += sign * qrs
        signal[peak - 22 : peak - 11] += p_wave
    f = dict(zip(RECORD_SHAPE_FEATURES, peak_shape_features(signal, peaks, fs)))
    assert f["ectopic_share"] == pytest.approx(0.2)
    # intervals joining two upright beats: 1, 1, 1, 1, 1 s (1-2, 2-3, 5-6, 6-7, 9-10): perfectly regular
    assert f["dominant_rr_cv"] == pytest.approx(0.0, abs=1e-12)
    assert f["p_wave_correlation"] == pytest.approx(1.0)  # every beat has the same P wave
    assert f["p_wave_over_qrs"] > 0
    assert np.isnan(peak_shape_features(signal, peaks[:3], fs)).all()
    irregular = dict(zip(RECORD_RR_FEATURES, peak_rr_features(peaks, fs)))
    assert irregular["rr_cv"] > 0.1  # the RR features alone see an irregular rhythm


def test_shape_features_tell_atrial_fibrillation_from_sinus_rhythm_with_ectopy(shared_data):
    """MIT-BIH 201 in AF (irregular RR, no P waves) against 119 (sinus rhythm with frequent PVCs,
    about as irregular by RR alone), one minute each of the raw MLII lead."""
    mitdb = shared_data / "mitdb"
    af = wfdb.rdrecord(str(mitdb / "201"), sampfrom=360 * 300, sampto=360 * 360, channels=[0]).p_signal[:, 0]
    ectopy = wfdb.rdrecord(str(mitdb / "119"), sampto=360 * 60, channels=[0]).p_signal[:, 0]
    f_af = dict(zip(RECORD_FEATURES, record_rr_features(af, 360)))
    f_ectopy = dict(zip(RECORD_FEATURES, record_rr_features(ectopy, 360)))
    assert f_ectopy["rr_cv"] > 0.8 * f_af["rr_cv"]  # what the RR features alone see
    assert f_ectopy["ectopic_share"] > 0.1 > f_af["ectopic_share"]
    assert f_ectopy["dominant_rr_cv"] < 0.5 * f_af["dominant_rr_cv"]
    assert f_ectopy["p_wave_correlation"] > f_af["p_wave_correlation"] + 0.2


def test_rr_lead_is_lead_two_when_present():
    assert record_rr.rr_lead_index(["I", "II", "V1"]) == 1
    assert record_rr.rr_lead_index(["unknown"]) == 0


def test_store_features_are_cached_by_record_id(task_store, task_rows, tmp_path, monkeypatch):
    store = task_store
    rows = np.array([task_rows[r] for r in ("E07500", "E07504", "E07506", "JS20003")])  # 10 s records
    cache = tmp_path / "rr.npz"
    first = record_rr.store_rr_features(store, rows, cache=cache, progress=False)
    assert np.isfinite(np.stack(list(first.values()))).all()

    def no_detection(*args, **kwargs):
        raise AssertionError("R peaks detected again although the cache holds the record")

    monkeypatch.setattr(record_rr, "signal_rr_features", no_detection)
    again = record_rr.store_rr_features(store, rows, cache=cache, progress=False)
    for row in rows.tolist():
        np.testing.assert_array_equal(again[row], first[row])


def test_an_interrupted_run_keeps_the_records_cached_before_it_stopped(task_store, task_rows, tmp_path, monkeypatch):
    store = task_store
    rows = np.array([task_rows[r] for r in ("E07500", "E07504", "E07506", "JS20003")])
    cache = tmp_path / "rr.npz"
    monkeypatch.setattr(record_rr, "CACHE_EVERY", 2)
    detect = record_rr.signal_rr_features
    calls = []

    def killed_at_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return detect(*args, **kwargs)

    monkeypatch.setattr(record_rr, "signal_rr_features", killed_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        record_rr.store_rr_features(store, rows, cache=cache, progress=False)
    with np.load(cache) as saved:
        assert len(saved["record_id"]) == 2  # written after the second record; the third was lost with the kill
    calls.clear()
    monkeypatch.setattr(record_rr, "signal_rr_features", detect)
    resumed = record_rr.store_rr_features(store, rows, cache=cache, progress=False)
    assert sorted(resumed) == sorted(rows.tolist())
    with np.load(cache) as saved:
        assert len(saved["record_id"]) == 4


def test_a_recording_too_short_for_four_beats_gets_nan_features():
    assert np.isnan(record_rr_features(np.random.default_rng(0).normal(size=10), 300.0)).all()  # 33 ms


def test_rr_features_reach_the_head():
    from anyecg.models.baselines import build_baseline
    from anyecg.tasks.classification import WithRRFeatures

    torch.manual_seed(0)
    model = WithRRFeatures(build_baseline("xresnet1d-tiny", num_classes=3, leads=("I",)), len(RECORD_RR_FEATURES), 3).eval()
    contract = model.config.contract
    batch = {"x": torch.randn(2, len(contract.leads), contract.n_samples), "lead_mask": torch.ones(2, len(contract.leads), dtype=torch.bool),
             "rr": torch.zeros(2, len(RECORD_RR_FEATURES)), "targets": torch.tensor([0, 1])}
    with torch.no_grad():
        before = model(batch).logits
        changed = model({**batch, "rr": torch.ones(2, len(RECORD_RR_FEATURES))}).logits
    assert before.shape == (2, 3)
    assert not torch.allclose(before, changed)
