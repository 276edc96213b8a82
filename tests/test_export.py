"""ONNX export of the AnyECG encoder: the file runs in onnxruntime at shapes other than the traced
one and gives what `AnyECG.embed` gives on real MIT-BIH and CinC 2021 recordings."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from anyecg.cli import main
from anyecg.export import (
    DEFAULT_TOLERANCE,
    INPUT_NAMES,
    OUTPUT_NAMES,
    CheckCase,
    ExportMismatch,
    check_cases,
    check_onnx,
    export_onnx,
    stack_windows,
)
from anyecg.io import read_record
from anyecg.pretrained import AnyECG, token_windows
from anyecg.signal.recipe import Recipe


@pytest.fixture(scope="module")
def model() -> AnyECG:
    return AnyECG.from_pretrained()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The shipped model exported once through the CLI: (report printed on stdout, onnx path)."""
    path = tmp_path_factory.mktemp("export") / "m.onnx"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["export", "--onnx", str(path)])
    assert code == 0
    return json.loads(stdout.getvalue().strip().splitlines()[-1]), path


@pytest.fixture(scope="module")
def session(exported):
    return onnxruntime.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])


def _run(session, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    feed = {name: batch[name].numpy() for name in INPUT_NAMES}
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed)))


def _chunk_batch(model: AnyECG, chunks: list[np.ndarray], fs: float, leads: list[str]) -> dict[str, torch.Tensor]:
    """Each raw chunk preprocessed on its own (as `embed` does), patched, and batched with padding."""
    windows = []
    for chunk in chunks:
        [window] = token_windows(chunk, fs, leads, model.recipe, window_s=1024 // len(leads))
        windows.append(window)
    return stack_windows(windows)


def test_cli_report_and_files(exported, model):
    report, path = exported
    assert report["onnx"] == str(path) and path.is_file()
    assert report["bytes"] == path.stat().st_size
    assert report["opset"] >= 18
    assert 0.0 <= report["max_abs_diff"] <= DEFAULT_TOLERANCE
    # Both checks ran at shapes other than the traced [2, 3, 5], and unlike each other.
    shapes = [tuple(shape) for shape in report["checked_shapes"]]
    assert len(set(shapes)) == 2 and (2, 3, 5) not in shapes
    recipe_file = path.with_suffix(".recipe.json")
    assert report["recipe"] == str(recipe_file)
    assert Recipe.from_json(recipe_file.read_text()) == model.recipe

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert Recipe.from_json(metadata["anyecg.recipe"]) == model.recipe
    assert metadata["anyecg.preset"] == model.preset
    assert metadata["anyecg.window_s"] == str(model.window_s) == "10"  # the shipped model's pretraining windows


def test_graph_axes_are_dynamic(exported, model):
    proto = onnx.load(str(exported[1]))

    def dims(values):
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    inputs, outputs = dims(proto.graph.input), dims(proto.graph.output)
    B, L, P = inputs["pad_mask"]
    assert all(isinstance(axis, str) for axis in (B, L, P)) and len({B, L, P}) == 3
    assert inputs["patches"] == [B, L, P, model.recipe.patch_size]
    assert inputs["lead_ids"] == [B, L]
    D = model.backbone.config.dim
    assert outputs == {"pooled": [B, D], "features": [B, L, P, D]}


@pytest.mark.parametrize(
    "leads, starts_s, seconds",
    [
        (["MLII", "V5"], [0], [10]),  # B=1, L=2, P=10
        (["MLII", "V5"], [0, 60, 300, 900], [12, 12, 5, 7.5]),  # B=4, P=12; shorter rows padded, one half-second tail
        (["MLII"], [120, 600, 1200], [30, 21, 30]),  # B=3, L=1, P=30
    ],
)
def test_onnx_matches_embed_on_mitdb(shared_data, model, session, leads, starts_s, seconds):
    record = read_record(shared_data / "mitdb" / "100.hea")
    rows = [record.raw_leads.index(name) for name in leads]
    chunks = [record.signal[rows, int(a * record.fs) : int((a + s) * record.fs)] for a, s in zip(starts_s, seconds)]
    batch = _chunk_batch(model, chunks, record.fs, leads)
    out = _run(session, batch)
    assert out["pooled"].shape == (len(chunks), model.backbone.config.dim)
    # the graph encodes each row as one window of any length; `embed` cuts recordings into windows of
    # the model's pretraining length, so the reference here takes each chunk as one window too
    whole = AnyECG(model.tokenizer, model.backbone, model.recipe, model.preset, window_s=None)
    for b, chunk in enumerate(chunks):
        expected = whole.embed(chunk, record.fs, leads)  # [D]
        tokens = whole.embed(chunk, record.fs, leads, per_token=True)  # [L, P_b, D]
        P = tokens.shape[1]
        np.testing.assert_allclose(out["pooled"][b], expected, rtol=0, atol=DEFAULT_TOLERANCE)
        np.testing.assert_allclose(out["features"][b, :, :P], tokens, rtol=0, atol=DEFAULT_TOLERANCE)
        assert not out["features"][b, :, P:].any()  # padding seconds are zero


def test_onnx_matches_embed_on_cinc_with_padded_leads(shared_data, model, session):
    """12-lead CinC records and a 2-lead MIT-BIH window in one batch: the 2-lead row is padded to
    12 leads (absent leads flagged in pad_mask), and every row still equals its own embedding."""
    records = [read_record(shared_data / "cinc2021" / f"{name}.hea") for name in ("E07500", "E07501")]
    mitdb = read_record(shared_data / "mitdb" / "100.hea")
    inputs = [(r.signal, r.fs, r.raw_leads) for r in records]
    inputs.append((mitdb.signal[:, : int(8 * mitdb.fs)], mitdb.fs, mitdb.raw_leads))
    windows = [token_windows(sig, fs, leads, model.recipe, window_s=85)[0] for sig, fs, leads in inputs]
    L = max(w["patches"].shape[1] for w in windows)
    P = max(w["patches"].shape[2] for w in windows)
    batch = {
        "patches": torch.zeros(len(windows), L, P, model.recipe.patch_size),  # [B, L, P, S]
        "lead_ids": torch.zeros(len(windows), L, dtype=torch.long),  # [B, L]
        "pad_mask": torch.ones(len(windows), L, P, dtype=torch.bool),  # [B, L, P]
    }
    for b, window in enumerate(windows):
        _, n_leads, n_patches, _ = window["patches"].shape
        batch["patches"][b, :n_leads, :n_patches] = window["patches"][0]
        batch["lead_ids"][b, :n_leads] = window["lead_ids"][0]
        batch["pad_mask"][b, :n_leads, :n_patches] = False
    out = _run(session, batch)
    for b, (sig, fs, leads) in enumerate(inputs):
        np.testing.assert_allclose(out["pooled"][b], model.embed(sig, fs, leads), rtol=0, atol=DEFAULT_TOLERANCE)


def test_check_onnx_raises_on_a_different_model(exported, model):
    """The check is not vacuous: a backbone whose final norm is shifted by 1e-3 fails it."""
    cases = check_cases(model.recipe)
    assert check_onnx(exported[1], model.backbone, cases) <= DEFAULT_TOLERANCE
    shifted = copy.deepcopy(model.backbone)
    with torch.no_grad():
        shifted.norm.bias.add_(1e-3)
    with pytest.raises(ExportMismatch, match=r"differs from PyTorch by .* on mitdb/100"):
        check_onnx(exported[1], shifted, cases)


def test_check_cases_are_real_and_padded(model):
    cases = check_cases(model.recipe)
    assert all(isinstance(case, CheckCase) for case in cases)
    mit, cinc = cases
    assert mit.shape == [3, 2, 12] and cinc.shape[:2] == [1, 12]
    # The 8 s window is padded for its last 4 seconds; the others are whole.
    assert mit.pad_mask[2, :, 8:].all() and not mit.pad_mask[2, :, :8].any() and not mit.pad_mask[:2].any()
    assert not mit.patches[2, :, 8:].any() and mit.patches[2, :, :8].std() > 0.1


def test_missing_model_dir_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*does not exist"):
        export_onnx(missing, tmp_path / "m.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an AnyECG checkpoint"):
        export_onnx(tmp_path / "empty", tmp_path / "m.onnx")
    assert main(["export", "--model", str(missing), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_suffix_required(tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx file"):
        export_onnx(None, tmp_path / "m.bin")
