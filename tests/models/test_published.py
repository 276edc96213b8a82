"""The published ECGFounder and ECG-FM checkpoints, converted: outputs equal to the authors' own code.

The fixtures in `tests/models/published/` come from `scripts/official_reference.py`, which ran the
official Net1D (PKUDigitalHealth/ECGFounder) and fairseq-signals models of small configurations,
every tensor random, saved them in the official file formats and recorded their outputs (and the
official preprocessing functions' outputs) on real CinC 2021, MIT-BIH and PTB-XL recordings.
`full_size_keys.json` holds the official full-size key/shape tables and cfg dicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from anyecg.cli import main
from anyecg.families import FamilyClassifier, FamilyModel, is_family_checkpoint
from anyecg.io import read_record
from anyecg.models.ecgfm import ECGFMPretrainer, ECGFM, count_parameters as ecgfm_parameters
from anyecg.models.ecgfounder import ECGFounder, count_parameters as ecgfounder_parameters
from anyecg.models.published import (
    ECGFM_LABELS,
    ECGFOUNDER_LABELS,
    convert_ecgfm,
    convert_ecgfounder,
    ecgfm_config_from_cfg,
    ecgfm_state,
    ecgfounder_config_from_state,
    read_published,
    resolve_hub,
)
from anyecg.models.ecgfounder import load_reference_weights
from anyecg.signal.published import (
    ecgfm_resample,
    ecgfm_standardize,
    ecgfounder_filter,
    ecgfounder_normalize,
    ecgfounder_resample,
)

FIXTURES = Path(__file__).parent / "published"
EMBEDDED = Path(__file__).resolve().parents[2] / "src" / "anyecg" / "embedded"
ECGFOUNDER_RECORDS = ["E07500", "HR06000", "JS20000"]
ECGFM_RECORDS = ["E07501", "JS20001"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "official_outputs.npz") as arrays:
        return dict(arrays)


def cinc(record: str):
    return read_record(EMBEDDED / "cinc2021" / f"{record}.hea")


def model_inputs(model: FamilyModel, record: str) -> tuple[torch.Tensor, torch.Tensor]:
    recording = cinc(record)
    x, lead_mask = model.windows(recording.signal, recording.fs, recording.raw_leads or recording.leads)
    return torch.from_numpy(x), torch.from_numpy(lead_mask)[None].expand(len(x), -1)


# ---------------------------------------------------------------------------------------------
# Same outputs as the official code


@pytest.mark.parametrize("name", ["ecgfounder_12lead", "ecgfounder_1lead"])
def test_ecgfounder_logits_equal_official_net1d(name, official):
    model = FamilyModel.from_pretrained(FIXTURES / f"{name}.pth")
    assert model.labels == list(ECGFOUNDER_LABELS)
    for record in ECGFOUNDER_RECORDS:
        x, mask = model_inputs(model, record)  # our recipe from the raw record
        assert x.shape == (1, 12 if name.endswith("12lead") else 1, 5000)
        with torch.no_grad():
            logits = model.network(x, mask)[0].numpy()
        np.testing.assert_allclose(logits, official[f"{name}/{record}/logits"], rtol=0, atol=TOLERANCE)


def test_ecgfm_pretrained_features_equal_fairseq_signals(official):
    model = FamilyModel.from_pretrained(FIXTURES / "ecgfm_pretrained.pt")
    assert model.labels is None and model.pretrainer is not None
    for record in ECGFM_RECORDS:
        x, mask = model_inputs(model, record)  # [2, 12, 2500]: two 5 s segments
        with torch.no_grad():
            tokens = model.network.forward_tokens(x, mask)  # [S, N, D]
        np.testing.assert_allclose(tokens.numpy(), official[f"ecgfm_pretrained/{record}/features"], rtol=0, atol=TOLERANCE)
        embedding = model.embed(cinc(record).signal, 500, cinc(record).leads, per_window=True)
        np.testing.assert_allclose(embedding, official[f"ecgfm_pretrained/{record}/pooled"], rtol=0, atol=TOLERANCE)


def test_ecgfm_finetuned_logits_and_record_probabilities_equal_fairseq_signals(official):
    model = FamilyModel.from_pretrained(FIXTURES / "ecgfm_finetuned.pt")
    assert model.labels == list(ECGFM_LABELS)
    for record in ECGFM_RECORDS:
        x, mask = model_inputs(model, record)
        with torch.no_grad():
            logits = model.network(x, mask).numpy()  # [S, 17]
        np.testing.assert_allclose(logits, official[f"ecgfm_finetuned/{record}/logits"], rtol=0, atol=TOLERANCE)
        recording = cinc(record)
        probabilities = model.predict(recording.signal, recording.fs, recording.leads)  # mean or max per label
        np.testing.assert_allclose(probabilities, official[f"ecgfm_finetuned/{record}/aggregated"], rtol=0, atol=TOLERANCE)


def test_converted_checkpoint_reloads_without_pickle(tmp_path, official):
    for name in ["ecgfounder_1lead.pth", "ecgfm_pretrained.pt", "ecgfm_finetuned.pt"]:
        published = FamilyModel.from_pretrained(FIXTURES / name)
        folder = published.save_pretrained(tmp_path / name)
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "recipe.json"]
        assert json.loads((folder / "recipe.json").read_text())["published"] in ("ecgfm", "ecgfounder")
        reloaded = FamilyModel.from_pretrained(folder)
        assert reloaded.labels == published.labels
        for ours, theirs in zip(reloaded.network.state_dict().values(), published.network.state_dict().values()):
            assert torch.equal(ours, theirs)
        if published.pretrainer is not None:  # the quantiser and projections travel too
            for key, value in published.pretrainer.state_dict().items():
                assert torch.equal(reloaded.pretrainer.state_dict()[key], value), key


def test_finetuning_starts_from_the_published_weights():
    classifier = FamilyClassifier.from_pretrained(FIXTURES / "ecgfm_finetuned.pt", num_classes=3, linear_probe=True)
    published = read_published(FIXTURES / "ecgfm_finetuned.pt").network
    assert classifier.head.out_features == 3
    for key, value in published.state_dict().items():
        assert torch.equal(classifier.network.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------
# Preprocessing equals the official functions


def test_ecgfounder_preprocessing_equals_filter_bandpass_and_z_score(official, shared_data):
    for record in ECGFOUNDER_RECORDS:
        signal, _ = wfdb.rdsamp(str(EMBEDDED / "cinc2021" / record))
        ours = ecgfounder_normalize(ecgfounder_filter(signal.T))  # [12, 5000]
        # The 0.67 Hz band-pass in (b, a) form amplifies rounding: CPUs differ by up to 7e-6 here, while
        # a wrong setting (notch Q 25 for 30, a kernel two samples short) moves values by 6e-3 or more.
        np.testing.assert_allclose(ours[:, ::25], official[f"ecgfounder/{record}/preprocessed_every_25th"], rtol=0, atol=1e-4)
    ptbxl = np.load(shared_data / "ptbxl" / "records250" / "00009.npy").astype(np.float64)  # 10 s at 250 Hz
    np.testing.assert_allclose(ecgfounder_resample(ptbxl, 250)[:, ::25], official["ecgfounder/ptbxl_resampled_every_25th"],
                               rtol=0, atol=1e-12)


def test_ecgfm_preprocessing_equals_fairseq_signals_and_the_notebook(official):
    for record in ECGFM_RECORDS:
        signal, _ = wfdb.rdsamp(str(EMBEDDED / "cinc2021" / record))
        clean = ecgfm_standardize(ecgfm_resample(signal.T, 500))  # [12, 5000]
        segments = clean.reshape(12, 2, 2500).transpose(1, 0, 2)  # [2, 12, 2500]
        np.testing.assert_allclose(segments[..., ::25], official[f"ecgfm/{record}/segments_every_25th"], rtol=0, atol=1e-9)
        # ECG-FM's notebook pipeline (ecg-transform) divides by std + 1e-8: equal to ~1e-8 relative
        np.testing.assert_allclose(segments[..., ::25], official[f"ecgfm/{record}/notebook_segments_every_25th"],
                                   rtol=1e-6, atol=1e-7)
    mit, _ = wfdb.rdsamp(str(EMBEDDED / "mitdb" / "100"), sampto=12 * 360)  # 2 leads at 360 Hz
    np.testing.assert_allclose(ecgfm_standardize(ecgfm_resample(mit.T, 360))[:, ::25],
                               official["ecgfm/mitdb_standardized_every_25th"], rtol=0, atol=1e-9)


def test_long_records_are_cut_into_whole_windows_each_z_scored():
    model = FamilyModel.from_pretrained(FIXTURES / "ecgfounder_12lead.pth")
    recording = cinc("E07500")
    signal = np.concatenate([recording.signal, recording.signal, recording.signal[:, :2500]], axis=1)  # 25 s
    x, lead_mask = model.windows(signal, recording.fs, recording.leads)
    assert x.shape == (2, 12, 5000) and lead_mask.all()  # the last 5 s dropped, as a whole window is the input
    np.testing.assert_allclose(x.reshape(2, -1).mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(x.reshape(2, -1).std(axis=1), 1, atol=1e-5)
    x, lead_mask = model.windows(recording.signal[[1, 0]], recording.fs, ["II", "I"])  # leads placed by name
    assert lead_mask.tolist() == [True, True] + [False] * 10 and not x[:, 2:].any()


def test_constant_lead_is_zeroed_and_short_records_give_one_padded_window():
    model = FamilyModel.from_pretrained(FIXTURES / "ecgfm_finetuned.pt")
    signal = cinc("E07501").signal[:, :1800].copy()  # 3.6 s: shorter than one 5 s segment
    signal[3] = 0.25  # a constant lead
    x, lead_mask = model.windows(signal, 500, cinc("E07501").leads)
    assert x.shape == (1, 12, 2500) and lead_mask.all()
    assert not x[0, 3].any() and not x[0, :, 1800:].any()
    np.testing.assert_allclose(x[0, 0, :1800].std(), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Every official tensor lands in exactly one parameter


def _perturbations(state: dict[str, torch.Tensor], skip=lambda name: False):
    for name, value in state.items():
        if value.is_floating_point() and not skip(name):
            yield name, {**state, name: value + 1.0}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in before if not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("name", ["ecgfounder_12lead.pth", "ecgfm_pretrained.pt", "ecgfm_finetuned.pt"])
def test_perturbing_one_official_tensor_changes_exactly_its_parameter(name):
    checkpoint = torch.load(FIXTURES / name, weights_only=True)
    if "state_dict" in checkpoint:
        state = checkpoint["state_dict"]

        def convert(s):
            return convert_ecgfounder(s, name).network.state_dict()

        skip = lambda key: ".bn" in key or "first_bn" in key  # noqa: E731 (unused layers: must stay at defaults)
    else:
        state = checkpoint["model"]

        def convert(s):
            published = convert_ecgfm({**checkpoint, "model": s}, name)
            return (published.pretrainer or published.network).state_dict()

        skip = lambda key: False  # noqa: E731
    base = convert(state)
    checked = 0
    for key, perturbed in _perturbations(state, skip):
        after = convert(perturbed)
        changed = _changed(base, after)
        assert len(changed) == 1, (key, changed)
        assert torch.equal(after[changed[0]].flatten(), perturbed[key].flatten()), key  # the perturbed values, in place
        checked += 1
    assert checked > 30


# ---------------------------------------------------------------------------------------------
# Clear errors


def _ecgfounder_state() -> dict[str, torch.Tensor]:
    return dict(torch.load(FIXTURES / "ecgfounder_12lead.pth", weights_only=True)["state_dict"])


def _ecgfm_checkpoint(name: str = "ecgfm_finetuned.pt") -> dict:
    return torch.load(FIXTURES / name, weights_only=True)


def test_unknown_missing_and_misshaped_keys_are_listed():
    state = _ecgfounder_state()
    unknown = {**state, "module.stage_list.0.block_list.0.conv4.conv.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"f\.pth does not match .*unexpected \['stage_list\.0\.block_list\.0\.conv4"):
        convert_ecgfounder(unknown, "f.pth")
    missing = {k: v for k, v in state.items() if not k.endswith("block_list.1.se_fc2.bias")}
    with pytest.raises(ValueError, match=r"missing \['stages\.1\.1\.se\.fc2\.bias'\]"):
        convert_ecgfounder(missing, "f.pth")
    misshaped = {**state, "module.stage_list.1.block_list.1.se_fc2.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"misshaped \['stages\.1\.1\.se\.fc2\.bias: \(3,\) vs model \(16,\)'\]"):
        convert_ecgfounder(misshaped, "f.pth")

    checkpoint = _ecgfm_checkpoint()
    model = dict(checkpoint["model"])
    model["encoder.encoder.layers.0.fc3.weight"] = torch.zeros(1)
    del model["encoder.encoder.layers.1.fc1.bias"]
    model["proj.weight"] = torch.zeros(5, 16)
    with pytest.raises(ValueError, match=r"g\.pt does not match .*unexpected \['encoder\.encoder\.layers\.0\.fc3\.weight'\], "
                                         r"missing \['transformer\.layers\.1\.fc1\.bias'\], misshaped \['head\.weight: \(5, 16\)"):
        convert_ecgfm({**checkpoint, "model": model}, "g.pt")


def test_trained_unused_batch_norm_and_wrong_head_size_are_refused():
    state = _ecgfounder_state()
    state["module.stage_list.1.block_list.0.bn2.running_mean"] = torch.full((16,), 0.1)
    with pytest.raises(ValueError, match=r"BatchNorm entries .* not at their initial values.*bn2\.running_mean"):
        convert_ecgfounder(state, "f.pth")
    state = _ecgfounder_state()
    state["module.dense.weight"], state["module.dense.bias"] = torch.zeros(4, 24), torch.zeros(4)
    with pytest.raises(ValueError, match=r"f\.pth: the published 12-lead ECGFounder has 150 outputs, this head has 4"):
        convert_ecgfounder(state, "f.pth")


def test_unsupported_cfg_fields_are_named():
    checkpoint = _ecgfm_checkpoint("ecgfm_pretrained.pt")
    for field, value, message in [
        ("extractor_mode", "layer_norm", r"cfg\['model'\]\['extractor_mode'\] = 'layer_norm' is not supported"),
        ("quantize_input", True, r"cfg\['model'\]\['quantize_input'\] = True is not supported"),
        ("layerdrop_schedule", 1, r"unsupported cfg\['model'\] fields \['layerdrop_schedule'\]"),
        ("conv_feature_layers", "__import__('os')", r"conv_feature_layers.* is not a list of \(dim, kernel, stride\)"),
    ]:
        cfg = {**checkpoint["cfg"], "model": {**checkpoint["cfg"]["model"], field: value}}
        with pytest.raises(ValueError, match=r"p\.pt: .*" + message):
            convert_ecgfm({**checkpoint, "cfg": cfg}, "p.pt")


class Payload:
    """Anything that is not a tensor or a plain container."""


def test_pickled_objects_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _ecgfounder_state(), "extra": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: refused: the file holds pickled Python objects"):
        read_published(path)
    path = tmp_path / "metadata.pt"  # numpy values in training metadata are plain data: read
    torch.save({**_ecgfm_checkpoint(), "extra_state": {"val_loss": np.float64(0.5), "seen": np.arange(3)}}, path)
    assert read_published(path).labels == ECGFM_LABELS
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"other\.pt: neither an ECGFounder checkpoint .* top-level keys: \['weights'\]"):
        read_published(path)


# ---------------------------------------------------------------------------------------------
# The full-size tables of the official code


@pytest.fixture(scope="module")
def tables() -> dict:
    return json.loads((FIXTURES / "full_size_keys.json").read_text())


def test_full_size_ecgfounder_table_maps_onto_the_published_network(tables):
    table = tables["ecgfounder_12lead"]
    assert len(table) == 509
    with torch.device("meta"):
        state = {k: torch.empty(shape) for k, shape in table.items()}
    config = ecgfounder_config_from_state(state, "full")
    state.update({k: torch.ones(v) if k.endswith(("weight", "running_var")) else torch.zeros(v)
                  for k, v in table.items() if ".bn" in k or k.startswith("first_bn.")})  # unused, at their defaults
    with torch.device("meta"):
        network = ECGFounder(config)
    skipped = load_reference_weights(network, state, source="full")
    assert len(skipped) == 509 - len(network.state_dict())
    assert sum(p.numel() for p in network.parameters()) == ecgfounder_parameters("ecgfounder-base")


@pytest.mark.parametrize("kind, entries", [("ecgfm_pretrained", 215), ("ecgfm_finetuned", 209)])
def test_full_size_ecgfm_tables_map_onto_our_network(tables, kind, entries):
    table = tables[kind]
    assert len(table) == entries
    name, config = ecgfm_config_from_cfg(tables[kind + "_cfg"], "full")
    with torch.device("meta"):
        state = {k: torch.empty(shape) for k, shape in table.items()}
        network = ECGFMPretrainer(config) if kind == "ecgfm_pretrained" else ECGFM(config)
        converted, unknown = ecgfm_state(state, kind == "ecgfm_pretrained", network.config)
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items() if not k.endswith("num_updates")}
    assert unknown == []
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    if kind == "ecgfm_pretrained":
        assert sum(p.numel() for p in network.parameters()) == ecgfm_parameters("ecgfm-base")["pretraining"]


# ---------------------------------------------------------------------------------------------
# Hub names and the command line


def _lay_out_cache(root: Path, repo: str, filename: str, source: Path) -> None:
    """The Hugging Face cache layout: models--OWNER--REPO/{refs/main, snapshots/COMMIT/FILE}."""
    commit = "0" * 40
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / filename).write_bytes(source.read_bytes())


def test_hub_names_resolve_in_the_local_cache_only(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants

    _lay_out_cache(tmp_path, "PKUDigitalHealth/ECGFounder", "1_lead_ECGFounder.pth", FIXTURES / "ecgfounder_1lead.pth")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    name = "hf://PKUDigitalHealth/ECGFounder/1_lead_ECGFounder.pth"
    assert resolve_hub(name).read_bytes() == (FIXTURES / "ecgfounder_1lead.pth").read_bytes()
    assert is_family_checkpoint(name)
    assert FamilyModel.from_pretrained(name).network.config.leads == ("I",)
    with pytest.raises(FileNotFoundError, match=r"not in the local Hugging Face cache; download it first: "
                                                r"hf download wanglab/ecg-fm mimic_iv_ecg_finetuned\.pt"):
        resolve_hub("hf://wanglab/ecg-fm/mimic_iv_ecg_finetuned.pt")


def test_predict_prints_published_labels_by_name_top_first(capsys, official):
    record = EMBEDDED / "cinc2021" / "E07500.hea"
    assert main(["predict", str(record), "--model", str(FIXTURES / "ecgfounder_12lead.pth"), "--format", "json"]) == 0
    findings = json.loads(capsys.readouterr().out)[0]["findings"]
    expected = 1 / (1 + np.exp(-official["ecgfounder_12lead/E07500/logits"].astype(np.float64)))
    assert [f["label"] for f in findings] == [ECGFOUNDER_LABELS[k] for k in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([f["probability"] for f in findings], np.sort(expected)[::-1], atol=2e-6)
    assert main(["predict", str(record), "--model", str(FIXTURES / "ecgfm_finetuned.pt"), "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "E07500" and len(lines) == 4 and all(line.split("  ")[-1] in ECGFM_LABELS for line in lines[1:])


# ---------------------------------------------------------------------------------------------
# The real files (opt-in: ANYECG_PUBLISHED_DIR=folder with the downloaded checkpoints)

REAL = Path(os.environ.get("ANYECG_PUBLISHED_DIR", "/nonexistent"))


@pytest.mark.skipif(not REAL.is_dir(), reason="set ANYECG_PUBLISHED_DIR to a folder with the downloaded checkpoints")
@pytest.mark.parametrize("filename, entries", [
    ("12_lead_ECGFounder.pth", 509), ("1_lead_ECGFounder.pth", None),
    ("mimic_iv_ecg_physionet_pretrained.pt", 215), ("mimic_iv_ecg_finetuned.pt", 209),
])
def test_real_published_checkpoints(filename, entries):
    path = REAL / filename
    if not path.is_file():
        pytest.skip(f"{path} not downloaded")
    published = read_published(path)  # BatchNorm defaults, cfg fields and every key checked on the way
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    tensors = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint["model"]
    if entries is not None:
        assert len(tensors) == entries
    config = published.network.config
    if published.family == "ecgfounder":
        assert config.filter_list == (64, 160, 160, 400, 400, 1024, 1024) and config.m_blocks_list == (2, 2, 2, 3, 3, 4, 4)
        assert len(config.leads) == (12 if filename.startswith("12") else 1)
        if filename.startswith("12"):
            assert config.num_classes == 150 and published.labels == ECGFOUNDER_LABELS
    else:
        assert (config.dim, config.depth, config.n_heads) == (768, 12, 12)
        assert config.num_classes == (17 if "finetuned" in filename else 0)
