"""Saliency: integrated gradients against the closed form of a linear model and the completeness
axiom on ECG-FM (a real CinC 2021 record) and the AnyECG backbone; attention maps; the plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anyecg.evaluation.saliency import attention_maps, completeness_gap, integrated_gradients, plot_saliency
from anyecg.io import read_record
from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.contract import to_model_input
from anyecg.models.ecgfm import build_ecgfm
from anyecg.signal.leads import STANDARD_12, lead_ids


@pytest.fixture(scope="module")
def cinc_record(shared_data):
    return read_record(shared_data / "cinc2021" / "HR06000")


@pytest.fixture(scope="module")
def reference_record(shared_data):
    """Another PTB-XL record: a baseline with an ECG's scale (see integrated_gradients on baselines)."""
    return read_record(shared_data / "cinc2021" / "HR06001")


def test_linear_model_gets_its_closed_form():
    # f_k(x) = <w_k, x> + b_k: the gradient is constant, so IG is exactly w_k * (x - baseline)
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 4, 50, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    model = lambda x: torch.einsum("nct,kct->nk", x, weight) + bias  # noqa: E731
    x, baseline = torch.randn(4, 50, dtype=torch.float64), torch.randn(4, 50, dtype=torch.float64)
    attribution = integrated_gradients(model, x, target=2, steps=3, baseline=baseline)
    torch.testing.assert_close(attribution, weight[2] * (x - baseline))
    with pytest.raises(ValueError, match="target 5"):
        integrated_gradients(model, x, target=5)
    with pytest.raises(ValueError, match="pass target="):
        integrated_gradients(model, x)
    with pytest.raises(ValueError, match="baseline shape"):
        integrated_gradients(model, x, target=0, baseline=torch.zeros(4, 49))


def test_completeness_on_ecgfm_with_a_real_record(cinc_record, reference_record):
    torch.manual_seed(0)
    model = build_ecgfm("ecgfm-tiny", num_classes=3).eval()
    contract = model.config.contract
    x, mask = to_model_input(cinc_record.signal, cinc_record.fs, cinc_record.leads, contract)
    baseline, _ = to_model_input(reference_record.signal, reference_record.fs, reference_record.leads, contract)
    x, mask, baseline = torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(baseline)
    f = lambda batch: model(batch, mask.expand(len(batch), -1))  # noqa: E731
    attribution = integrated_gradients(f, x, target=1, steps=32, baseline=baseline)
    assert attribution.shape == x.shape
    with torch.no_grad():
        difference = float(f(x[None])[0, 1] - f(baseline[None])[0, 1])
    assert abs(float(attribution.sum()) - difference) < 0.03 * abs(difference)
    assert completeness_gap(f, x, attribution, 1, baseline) == pytest.approx(
        (float(attribution.sum()) - difference) / abs(difference), rel=1e-4
    )
    for p in model.parameters():
        assert p.grad is None
    # from the flat line the input GroupNorm puts the whole change within ~1e-2 of it: the gap flags it
    from_zero = integrated_gradients(f, x, target=1, steps=32)
    assert abs(completeness_gap(f, x, from_zero, 1)) > 0.5


def test_completeness_on_the_anyecg_backbone(cinc_record, reference_record):
    # model-agnostic: AnyECG takes patches [L, P, 300], lead ids and padding through a closure
    torch.manual_seed(0)
    backbone = Backbone(BackboneConfig(dim=32, depth=2, n_heads=4, conv_channels=4, num_codes=16)).eval()
    # 3 leads x 5 one-second patches of 300 samples
    patches = torch.from_numpy(cinc_record.signal[:3, :1500].copy()).view(3, 5, 300)
    baseline = torch.from_numpy(reference_record.signal[:3, :1500].copy()).view(3, 5, 300)
    ids = torch.from_numpy(lead_ids(cinc_record.leads[:3]))[None]  # [1, 3]
    readout = torch.randn(32)

    def score(batch):  # [n, L, P, S] -> [n]
        n = len(batch)
        pad = torch.zeros(n, 3, 5, dtype=torch.bool)
        return backbone.embed(batch, ids.expand(n, -1), pad) @ readout

    attribution = integrated_gradients(score, patches, steps=32, baseline=baseline)
    with torch.no_grad():
        difference = float(score(patches[None])[0] - score(baseline[None])[0])
    assert abs(float(attribution.sum()) - difference) < 0.03 * abs(difference)


def test_attention_maps_from_the_model():
    model = build_ecgfm("ecgfm-tiny").eval()
    maps = attention_maps(model, torch.randn(1, 12, 2500))
    assert len(maps) == model.config.depth and maps[0].shape[-2:] == (model.config.n_frames,) * 2
    with pytest.raises(TypeError, match="Linear"):
        attention_maps(torch.nn.Linear(3, 3), torch.zeros(1, 3))


def test_plot_saliency_writes_a_png(cinc_record, tmp_path):
    signal = cinc_record.signal[:, :2500]
    attribution = np.gradient(signal, axis=1)
    path = tmp_path / "fig" / "ig.png"
    assert plot_saliency(signal, cinc_record.fs, list(STANDARD_12), attribution, path, title="HR06000") == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="attribution shape"):
        plot_saliency(signal, cinc_record.fs, list(STANDARD_12), attribution[:, :10], tmp_path / "x.png")
    with pytest.raises(ValueError, match="lead names"):
        plot_saliency(signal, cinc_record.fs, ["I"], attribution, tmp_path / "x.png")
