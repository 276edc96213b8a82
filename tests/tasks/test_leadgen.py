"""Lead generation on real records: MIT-BIH (V1 from MLII, missing or noise-corrupted; least squares,
GAN and AnyECG) and CinC 2021 12-lead (precordial and Einthoven's III from the limb leads)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import Store
from anyecg.evaluation.metrics import leadgen_metrics
from anyecg.models.baselines import baseline_config
from anyecg.models.baselines.leadgen_gan import LeadGenGAN
from anyecg.models.baselines.leadgen_linear import fit_least_squares
from anyecg.pretrained import AnyECG
from anyecg.signal.recipe import Recipe
from anyecg.tasks.leadgen import (
    AnyECGLeadGenerator,
    LeadGenFinetuneConfig,
    LeadGenWindows,
    NoiseConfig,
    collate_leadgen,
    corrupt,
    eligible_records,
    evaluate_leadgen,
    finetune_leadgen,
    fit_linear,
    load_leadgen,
    train_gan,
)

MITDB = ["100", "101", "105", "106"]  # 100 records MLII + V5: no V1, excluded
METRIC_KEYS = {"psnr", "ssim", "mae", "mae_mv", "n_signals", "n_flat", "per_lead", "units", "split",
               "input_leads", "target_leads", "corruption", "n_records", "n_windows", "excluded"}


def measured_snr_db(clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """[..., C]: variance of the clean lead over the mean square of what was added, in dB."""
    clean, corrupted = clean.astype(np.float64), corrupted.astype(np.float64)
    return 10 * np.log10(clean.var(axis=-1) / np.mean((corrupted - clean) ** 2, axis=-1))


def _prepare(shared_data, tmp_path_factory, copy_records, folder, records, recipe=None):
    src = copy_records(shared_data / folder, tmp_path_factory.mktemp(f"leadgen_{folder}_src"), records)
    out = tmp_path_factory.mktemp(f"leadgen_{folder}_store")
    config = PrepareConfig(sources=[src], out=out, progress=False)
    if recipe is not None:
        config.recipe = recipe
    prepare(config)
    return out


@pytest.fixture(scope="module")
def mitdb_store(shared_data, tmp_path_factory, copy_records):
    out = _prepare(shared_data, tmp_path_factory, copy_records, "mitdb", MITDB)
    # four records are too few for the default 80/10/10 patient split: fix train / test by hand
    manifest = pd.read_parquet(out / "manifest.parquet")
    manifest["split"] = ["test" if r == "106" else "train" for r in manifest["record_id"]]
    manifest.to_parquet(out / "manifest.parquet")
    return out


def test_eligible_records_and_tiles(mitdb_store):
    store = Store(mitdb_store)
    rows = {r: i for i, r in enumerate(store.manifest["record_id"])}
    train = eligible_records(store, ["II"], ["V1"], 10, "train")
    assert sorted(train.rows) == sorted([rows["101"], rows["105"]])
    assert train.excluded == {"missing leads V1": 1}
    windows = LeadGenWindows(store, train.rows, ["II"], ["V1"], window_s=10, random_crop=False)
    size = 10 * store.recipe.target_fs
    full = int(store.manifest["n_samples"].iloc[rows["101"]]) // size
    assert len(windows) == 2 * full  # the shorter tail of each record is left out
    record, start = windows.window(1)
    item = windows[1]
    leads = store.manifest["leads"].iloc[record].split(";")
    expected = store.signal(record, start=start, stop=start + size)[[leads.index("II"), leads.index("V1")]]
    np.testing.assert_array_equal(item["signal"].numpy(), expected)
    batch = collate_leadgen([windows[0], windows[1]])
    assert batch["patches"].shape == (2, 2, 10, store.recipe.patch_size)
    np.testing.assert_array_equal(batch["patches"][1, 0].reshape(-1).numpy(), expected[0])
    assert not batch["patches"][:, 1].any()  # the target never reaches the input
    assert batch["token_mask"][:, 1].all() and not batch["token_mask"][:, 0].any()


def test_linear_fit_equals_least_squares_on_the_same_windows(mitdb_store):
    store = Store(mitdb_store)
    config = LeadGenFinetuneConfig(input_leads=("MLII",), target_leads=("V1",), baseline="leadgen_linear")
    rows = eligible_records(store, config.input_leads, config.target_leads, 10, "train").rows
    model, n_windows = fit_linear(store, rows, config)
    # reference: the same full windows read straight from the store
    size = 10 * store.recipe.target_fs
    x, y = [], []
    for row in rows:
        signal = store.signal(int(row))  # [2, T]: II, V1
        for start in range(0, signal.shape[1] - size + 1, size):
            x.append(signal[:1, start : start + size])
            y.append(signal[1:, start : start + size])
    assert n_windows == len(x)
    weight, offset = fit_least_squares(np.stack(x), np.stack(y))
    np.testing.assert_allclose(model.mix.weight[:, :, 0].detach().numpy(), weight, rtol=1e-5)
    np.testing.assert_allclose(model.mix.bias.detach().numpy(), offset, atol=1e-6)


def test_finetune_linear_writes_metrics_and_evaluate_reproduces_them(mitdb_store, tmp_path):
    config = LeadGenFinetuneConfig(input_leads=("II",), target_leads=("V1",), baseline="leadgen_linear")
    summary = finetune_leadgen(mitdb_store, tmp_path / "linear", config)
    assert summary["train_records"] == 2 and summary["test_records"] == 1
    assert summary["excluded_train"] == {"missing leads V1": 1}
    run = tmp_path / "linear" / "seed-0"
    saved = json.loads((run / "test" / "metrics.json").read_text())
    assert set(saved) == METRIC_KEYS
    assert set(saved["per_lead"]["V1"]) == {"psnr", "ssim", "mae", "mae_mv"}
    config_json = json.loads((run / "final" / "config.json").read_text())
    assert (config_json["family"], config_json["task"], config_json["model"]["preset"]) == ("finetuned", "leadgen", "leadgen_linear")
    assert (run / "test" / "reconstructions.png").stat().st_size > 0
    again = evaluate_leadgen(run / "final", mitdb_store, "test", tmp_path / "again")
    assert again["psnr"] == pytest.approx(saved["psnr"]) and again["mae_mv"] == pytest.approx(saved["mae_mv"])
    # independent check of the scores: predictions.npz against its own MAE, and the mV MAE by hand
    stored = np.load(run / "test" / "predictions.npz")
    assert saved["mae"] == pytest.approx(float(np.mean(np.abs(stored["target"] - stored["pred"]))), rel=1e-6)
    store = Store(mitdb_store)
    row = store.manifest.index[store.manifest["record_id"] == "106"][0]
    scale = float(store.manifest["norm_scale"].iloc[row][1])
    assert saved["mae_mv"] == pytest.approx(saved["mae"] * scale, rel=1e-4)  # one record: one V1 scale


def test_anyecg_generator_loss_drops_on_a_fixed_batch(mitdb_store):
    store = Store(mitdb_store)
    rows = eligible_records(store, ["II"], ["V1"], 10, "train").rows
    windows = LeadGenWindows(store, rows, ["II"], ["V1"], window_s=10, random_crop=False)
    batch = collate_leadgen([windows[i] for i in (0, 50, 200)])
    torch.manual_seed(0)
    model = AnyECGLeadGenerator(AnyECG.from_pretrained().backbone, n_targets=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        output = model(batch)
        assert output.generated.shape == batch["targets"].shape
        losses.append(float(output.loss.detach()))
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    assert losses[-1] < 0.8 * losses[0], losses


def test_anyecg_probe_finetune_and_strict_reload(mitdb_store, tmp_path):
    config = LeadGenFinetuneConfig(input_leads=("II",), target_leads=("V1",), linear_probe=True, steps=3, batch_size=2)
    summary = finetune_leadgen(mitdb_store, tmp_path / "probe", config)
    run = tmp_path / "probe" / "seed-0"
    model, loaded = load_leadgen(run / "final")
    frozen = AnyECG.from_pretrained().backbone.state_dict()
    for key, value in model.backbone.state_dict().items():  # the probe trained the head only
        torch.testing.assert_close(value, frozen[key], rtol=0, atol=0, msg=key)
    assert loaded["model"]["kind"] == "anyecg" and loaded["target_leads"] == ["V1"]
    again = evaluate_leadgen(run / "final", mitdb_store, "test", tmp_path / "again")
    assert again["psnr"] == pytest.approx(summary["metrics"]["psnr"]["mean"], rel=1e-5)
    assert again["mae"] == pytest.approx(summary["metrics"]["mae"]["mean"], rel=1e-5)


def test_random_init_control_starts_from_fresh_weights(mitdb_store, tmp_path):
    config = LeadGenFinetuneConfig(input_leads=("II",), target_leads=("V1",), random_init=True, linear_probe=True,
                                   steps=1, batch_size=2)
    summary = finetune_leadgen(mitdb_store, tmp_path / "random", config)
    model, loaded = load_leadgen(tmp_path / "random" / "seed-0" / "final")
    pretrained = AnyECG.from_pretrained().backbone.state_dict()
    differing = [key for key, value in model.backbone.state_dict().items()
                 if value.is_floating_point() and not torch.equal(value, pretrained[key])]
    assert summary["random_init"] and loaded["model"]["random_init"] and len(differing) > 10


def test_cinc_limb_leads_linear(shared_data, tmp_path_factory, tmp_path, copy_records):
    # no wavelet (its thresholding is not linear) and mV units: III = II - I survives preprocessing
    recipe = Recipe(wavelet=None, normalization="none")
    records = sorted(p.stem for p in (shared_data / "cinc2021").glob("*.hea"))[:10]
    out = _prepare(shared_data, tmp_path_factory, copy_records, "cinc2021", records, recipe)
    assert set(Store(out).manifest["split"]) >= {"train", "test"}
    einthoven = finetune_leadgen(out, tmp_path / "iii", LeadGenFinetuneConfig(
        input_leads=("I", "II"), target_leads=("III",), baseline="leadgen_linear"))
    assert einthoven["metrics"]["psnr"]["mean"] > 40, einthoven["metrics"]
    model, _ = load_leadgen(tmp_path / "iii" / "seed-0" / "final")
    np.testing.assert_allclose(model.mix.weight[0, :, 0].detach().numpy(), [-1.0, 1.0], atol=0.02)
    precordial = finetune_leadgen(out, tmp_path / "v", LeadGenFinetuneConfig(
        input_leads=("I", "II", "III", "aVR", "aVL", "aVF"), target_leads=("V1", "V2", "V3", "V4", "V5", "V6"),
        baseline="leadgen_linear"))
    assert set(precordial["metrics"]["per_lead"]) == {"V1", "V2", "V3", "V4", "V5", "V6"}
    assert np.isfinite(precordial["metrics"]["psnr"]["mean"])


def test_cli_gan_on_noise_corrupted_leads_reloads_and_is_seeded(mitdb_store, tmp_path, capsys):
    from anyecg.cli import main

    out = tmp_path / "cli"
    assert main(["finetune", "--task", "leadgen", "--data", str(mitdb_store), "--out", str(out), "--baseline",
                 "leadgen_gan", "--input-leads", "MLII", "--target-leads", "V1", "--corruption", "noise",
                 "--noise-snr-db", "0", "--steps", "2", "--batch-size", "2", "--seeds", "1"]) == 0
    headline = json.loads(capsys.readouterr().out.splitlines()[0])
    run = out / "seed-0"
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2] and all(np.isfinite(entry["g_loss"]) for entry in log)
    model, loaded = load_leadgen(run / "final")
    assert (loaded["model"]["preset"], model.config.loss, model.config.leads) == ("leadgen_gan", "wgan_gp", ("II", "V1"))
    assert loaded["corruption"] == {"kind": "noise", "snr_db": 0.0, "wander": 0.5, "bursts": 0.0, "seed": 0}
    assert main(["evaluate", "--model", str(run / "final"), "--data", str(mitdb_store), "--out",
                 str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["psnr"] == pytest.approx(headline["psnr"]["mean"], rel=1e-6)
    stored = np.load(tmp_path / "ev" / "predictions.npz")
    np.testing.assert_allclose(measured_snr_db(stored["target"], stored["corrupted"]), 0.0, atol=0.5)
    assert metrics["corrupted_input"]["psnr"] == pytest.approx(
        leadgen_metrics(stored["target"], stored["corrupted"], ["V1"])["psnr"], rel=1e-9)
    # the reloaded generator produced the scored reconstruction of the first window from II, read
    # straight from the store, and the corrupted V1
    store = Store(mitdb_store)
    row = store.manifest.index[store.manifest["record_id"] == str(stored["record_id"][0])][0]
    start = int(stored["start"][0])
    ii = store.signal(int(row), start=start, stop=start + 10 * store.recipe.target_fs)[
        store.manifest["leads"].iloc[row].split(";").index("II")]  # [T]
    with torch.no_grad():
        first = model(torch.from_numpy(np.stack([ii, stored["corrupted"][0, 0]]))[None])  # [1, 1, T]
    np.testing.assert_allclose(first[0].numpy(), stored["pred"][0], rtol=1e-5, atol=1e-5)
    # the same seed trains the same generator
    config = LeadGenFinetuneConfig(input_leads=("II",), target_leads=("V1",), baseline="leadgen_gan", steps=2,
                                   batch_size=2, corruption="noise")
    train = LeadGenWindows(store, eligible_records(store, ["II"], ["V1"], 10, "train").rows, ["II"], ["V1"],
                           window_s=10, seed=0, noise=config.noise)
    rerun = train_gan(model.config, train, config, 0, tmp_path / "rerun")
    for key, value in model.generator.state_dict().items():
        torch.testing.assert_close(rerun.generator.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_cgan_trains_on_missing_leads(mitdb_store, tmp_path):
    store = Store(mitdb_store)
    config = LeadGenFinetuneConfig(input_leads=("II",), target_leads=("V1",), baseline="leadgen_cgan", steps=1,
                                   batch_size=2)
    gan_config = baseline_config("leadgen_cgan", fs=float(store.recipe.target_fs), window_s=10.0, leads=("II",),
                                 target_leads=("V1",))
    train = LeadGenWindows(store, eligible_records(store, ["II"], ["V1"], 10, "train").rows, ["II"], ["V1"],
                           window_s=10, seed=0)
    model = train_gan(gan_config, train, config, 0, tmp_path)
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["step"] == 1
    torch.manual_seed(0)
    initial = LeadGenGAN(gan_config).generator.state_dict()  # the same seeded initialisation, untrained
    assert any(not torch.equal(initial[key], value) for key, value in model.generator.state_dict().items())


def test_cli_finetune_and_evaluate_leadgen(mitdb_store, tmp_path, capsys):
    from anyecg.cli import main

    out = tmp_path / "cli"
    assert main(["finetune", "--task", "leadgen", "--data", str(mitdb_store), "--out", str(out), "--baseline",
                 "leadgen_linear", "--input-leads", "MLII", "--target-leads", "V1"]) == 0
    headline = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(headline) == {"psnr", "ssim", "mae"}
    assert main(["evaluate", "--model", str(out / "seed-0" / "final"), "--data", str(mitdb_store), "--out",
                 str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["psnr"] == pytest.approx(headline["psnr"]["mean"])


@pytest.mark.parametrize("snr_db, wander, bursts", [(0.0, 0.5, 0.0), (6.0, 0.3, 0.3), (-3.0, 0.0, 1.0)])
def test_noise_has_the_requested_snr_and_is_seeded(mitdb_store, snr_db, wander, bursts):
    store = Store(mitdb_store)
    rows = eligible_records(store, ["II"], ["V1"], 10, "test").rows
    noise = NoiseConfig(snr_db=snr_db, wander=wander, bursts=bursts, seed=3)
    windows = LeadGenWindows(store, rows, ["II"], ["V1"], window_s=10, random_crop=False, noise=noise)
    items = [windows[i] for i in range(0, len(windows), 20)]
    clean = np.stack([item["signal"][1:].numpy() for item in items])  # [N, 1, T]
    corrupted = np.stack([item["corrupted"].numpy() for item in items])  # [N, 1, T]
    np.testing.assert_allclose(measured_snr_db(clean, corrupted), snr_db, atol=0.5)
    # the evaluation corruption is fixed: a second dataset over the same windows draws the same noise
    again = LeadGenWindows(store, rows, ["II"], ["V1"], window_s=10, random_crop=False, noise=noise)
    np.testing.assert_array_equal(again[20]["corrupted"].numpy(), corrupted[1])
    other = LeadGenWindows(store, rows, ["II"], ["V1"], window_s=10, random_crop=False,
                           noise=NoiseConfig(snr_db=snr_db, wander=wander, bursts=bursts, seed=4))
    assert not np.allclose(other[20]["corrupted"].numpy(), corrupted[1])
    # training windows: a new draw each epoch, the same draw for the same (seed, epoch)
    train = LeadGenWindows(store, rows, ["II"], ["V1"], window_s=10, seed=1, noise=noise)
    first = train[0]["corrupted"].numpy() - train[0]["signal"][1:].numpy()
    np.testing.assert_array_equal(train[0]["corrupted"].numpy() - train[0]["signal"][1:].numpy(), first)
    train.set_epoch(1)
    assert not np.allclose(train[0]["corrupted"].numpy() - train[0]["signal"][1:].numpy(), first)


def test_noise_components_have_their_spectra(mitdb_store):
    store = Store(mitdb_store)
    fs = store.recipe.target_fs
    clean = store.signal(0, start=0, stop=10 * fs)  # [2, T]
    added = {}
    for name, wander, bursts in [("white", 0.0, 0.0), ("wander", 1.0, 0.0), ("bursts", 0.0, 1.0)]:
        noise = NoiseConfig(snr_db=0.0, wander=wander, bursts=bursts)
        added[name] = corrupt(clean, fs, noise, np.random.default_rng(0)).astype(np.float64) - clean
    freqs = np.fft.rfftfreq(clean.shape[1], 1 / fs)
    taper = np.hanning(clean.shape[1])  # keeps the sines' leakage out of the higher bins
    power = {name: np.abs(np.fft.rfft(a * taper, axis=-1)) ** 2 for name, a in added.items()}  # [2, F]
    low = freqs <= 1.0
    assert (power["wander"][:, low].sum(-1) / power["wander"].sum(-1) > 0.99).all()  # 0.1-0.5 Hz sines
    assert (power["white"][:, low].sum(-1) / power["white"].sum(-1) < 0.05).all()  # flat spectrum
    band = (freqs >= 0.3) & (freqs <= 20)
    assert (power["bursts"][:, band].sum(-1) / power["bursts"].sum(-1) > 0.9).all()
    # bursts are local: most of the window carries none of them
    quiet = np.abs(added["bursts"]) < 1e-3 * np.abs(added["bursts"]).max(axis=-1, keepdims=True)
    assert (quiet.mean(axis=-1) > 0.5).all()


def test_noise_collate_feeds_the_corrupted_targets(mitdb_store):
    store = Store(mitdb_store)
    rows = eligible_records(store, ["II"], ["V1"], 10, "test").rows
    windows = LeadGenWindows(store, rows, ["II"], ["V1"], window_s=10, random_crop=False, noise=NoiseConfig())
    batch = collate_leadgen([windows[0], windows[1]])
    size = store.recipe.patch_size
    assert not batch["token_mask"].any()  # nothing is masked: the corrupted lead is read as it is
    np.testing.assert_array_equal(batch["patches"][:, 1].reshape(2, -1).numpy(), batch["corrupted"][:, 0].numpy())
    np.testing.assert_array_equal(batch["x"].numpy(), np.stack([
        np.concatenate([windows[i]["signal"][:1].numpy(), windows[i]["corrupted"].numpy()]) for i in (0, 1)]))
    assert batch["patches"].shape == (2, 2, 10, size)
    model = AnyECGLeadGenerator(AnyECG.from_pretrained().backbone, n_targets=1)
    with torch.no_grad():
        assert model.generate(batch).shape == batch["targets"].shape


def test_linear_on_noisy_v1_beats_the_corrupted_input(mitdb_store, tmp_path):
    config = LeadGenFinetuneConfig(input_leads=("II",), target_leads=("V1",), baseline="leadgen_linear",
                                   corruption="noise", noise_snr_db=0.0, noise_bursts=0.2, noise_seed=7)
    summary = finetune_leadgen(mitdb_store, tmp_path / "noise", config)
    assert summary["corruption"] == {"kind": "noise", "snr_db": 0.0, "wander": 0.5, "bursts": 0.2, "seed": 7}
    run = tmp_path / "noise" / "seed-0"
    saved = json.loads((run / "test" / "metrics.json").read_text())
    assert set(saved) == METRIC_KEYS | {"corrupted_input"}
    model, _ = load_leadgen(run / "final")
    assert model.config.leads == ("II", "V1")  # II and the corrupted V1
    stored = np.load(run / "test" / "predictions.npz")
    # the evaluation noise is the requested one, and the identity baseline is scored on it
    np.testing.assert_allclose(measured_snr_db(stored["target"], stored["corrupted"]), 0.0, atol=0.5)
    identity = leadgen_metrics(stored["target"], stored["corrupted"], ["V1"])
    for key in ("psnr", "ssim", "mae"):
        assert saved["corrupted_input"][key] == pytest.approx(identity[key], rel=1e-9)
    assert saved["psnr"] > saved["corrupted_input"]["psnr"] + 1.0, (saved["psnr"], saved["corrupted_input"])
    assert saved["mae"] < saved["corrupted_input"]["mae"]
    again = evaluate_leadgen(run / "final", mitdb_store, "test", tmp_path / "again")  # the same fixed corruption
    assert again["psnr"] == pytest.approx(saved["psnr"], rel=1e-9)
    assert again["corrupted_input"]["psnr"] == pytest.approx(saved["corrupted_input"]["psnr"], rel=1e-9)
