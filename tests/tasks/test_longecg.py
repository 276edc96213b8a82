"""Ultra-long ECG recognition on real CPSC 2021 records (AF and non-AF) and MIT-BIH 201 (AFIB stretches)."""

import json
import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import torch

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.data.store import MANIFEST, Store
from anyecg.families import pretrain_family
from anyecg.signal.leads import lead_ids
from anyecg.signal.patching import patchify
from anyecg.tasks.longecg import (
    AggregatorConfig,
    AttentionAggregator,
    LongECGConfig,
    WindowEncoder,
    embed_examples,
    embed_stream,
    evaluate_longecg,
    finetune_longecg,
    load_window_encoder,
    long_examples,
    train_aggregator,
)
from anyecg.training.loop import TrainConfig
from anyecg.tasks.rhythm import long_segments

CPSC = {"data_101_6": "AF", "data_8_4": "AF", "data_92_12": "AF", "data_35_6": "non-AF", "data_21_7": "non-AF"}
MITDB = ["201"]
# Splits fixed by hand so both splits hold both classes (prepare's patient split of 6 records may not).
TEST_RECORDS = {"data_92_12", "data_21_7"}


@pytest.fixture(scope="module")
def store(shared_data, tmp_path_factory, copy_records) -> Store:
    src = tmp_path_factory.mktemp("long_src")
    for folder, records in (("cpsc2021", list(CPSC)), ("mitdb", MITDB)):
        copy_records(shared_data / folder, src / folder, records)
    out = tmp_path_factory.mktemp("long_store")
    result = prepare(PrepareConfig(sources=[src], out=out, progress=False))
    assert result.skipped == 0, result.skipped_reasons
    manifest = pd.read_parquet(out / MANIFEST)
    manifest["split"] = ["test" if r in TEST_RECORDS else "train" for r in manifest["record_id"]]
    manifest.to_parquet(out / MANIFEST)
    return Store(out)


@pytest.fixture(scope="module")
def encoder() -> WindowEncoder:
    return load_window_encoder(None, window_s=10)


@pytest.fixture(scope="module")
def cache() -> dict:
    return {}


def row_of(store, record_id):
    return int(np.flatnonzero(store.manifest["record_id"].astype(str) == record_id)[0])


def test_examples_and_window_counts(store, encoder, cache):
    examples = long_examples(store, segment_s=300.0)
    for record_id, label in CPSC.items():
        row = row_of(store, record_id)
        assert [(e.start, e.stop, e.label) for e in examples if e.record == row] == [
            (0, int(store.manifest.iloc[row]["n_samples"]), label)]
    mit = row_of(store, "201")
    segments = [e for e in examples if e.record == mit]
    assert segments == long_segments(store, mit, segment_s=300.0)
    assert len(segments) == int(store.manifest.iloc[mit]["n_samples"]) // (300 * 300)
    assert {e.label for e in segments} == {"AF", "non-AF"}  # 201 has AFIB episodes and other rhythms

    embeddings = embed_examples(encoder, store, examples, cache=cache)
    fs = store.recipe.target_fs
    for example, embedding in zip(examples, embeddings):
        assert embedding.shape == (math.ceil((example.stop - example.start) / fs / 10), 128)
        assert np.isfinite(embedding).all()


@pytest.mark.parametrize("record_id, start, stop", [("data_8_4", 0, None), ("201", 90_000, 180_000 + 1234)])
def test_streamed_equals_whole_record(store, encoder, record_id, start, stop):
    row = row_of(store, record_id)
    stop = int(store.manifest.iloc[row]["n_samples"]) if stop is None else stop
    streamed = embed_stream(encoder, store, row, start, stop, batch_windows=4)

    # reference: the whole record read at once, cut by hand, each window embedded alone
    whole = store.signal(row)  # [L, T]
    ids = torch.from_numpy(lead_ids(store.manifest.iloc[row]["leads"].split(";")))[None]  # [1, L]
    expected = []
    with torch.no_grad():
        for a in range(start, stop, 3000):
            patches = torch.from_numpy(patchify(whole[:, a : min(a + 3000, stop)], 300)[0])[None]  # [1, L, P, S]
            pad_mask = torch.zeros(patches.shape[:3], dtype=torch.bool)
            expected.append(encoder.network.embed(patches, ids, pad_mask)[0].numpy())
    assert streamed.shape == (math.ceil((stop - start) / 3000), 128)
    np.testing.assert_allclose(streamed, np.stack(expected), rtol=1e-4, atol=1e-5)


def test_aggregator_loss_drops_on_a_fixed_set(store, encoder, cache):
    torch.manual_seed(0)
    examples = long_examples(store)
    embeddings = embed_examples(encoder, store, examples, cache=cache)
    targets = np.array([["AF", "non-AF"].index(e.label) for e in examples])
    model = AttentionAggregator(AggregatorConfig(dim=128, num_classes=2, hidden=32, dropout=0.0))
    losses = train_aggregator(model, embeddings, targets, steps=60, batch_size=len(examples), lr=3e-3)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses

    # padding does not change an example's logits: attention ignores padded windows
    model.eval()
    short, long = embeddings[row_of(store, "data_8_4")], embeddings[0]
    x = torch.zeros(2, len(long), 128)
    x[0, : len(short)], x[1] = torch.from_numpy(short), torch.from_numpy(long)
    pad_mask = torch.arange(len(long))[None] >= torch.tensor([[len(short)], [len(long)]])
    with torch.no_grad():
        alone = model(torch.from_numpy(short)[None], torch.zeros(1, len(short), dtype=torch.bool))
        torch.testing.assert_close(model(x, pad_mask)[0], alone[0])


def test_finetune_and_evaluate_reproduce(store, tmp_path):
    config = LongECGConfig(seeds=2, steps=15, batch_size=8, hidden=16)
    summary = finetune_longecg(store.root, tmp_path / "run", config)
    assert summary["test_counts"] == {"AF": 1, "non-AF": 1}
    assert summary["train_counts"]["AF"] >= 3 and summary["train_counts"]["non-AF"] >= 1
    assert set(summary["metrics"]) >= {"accuracy", "auroc", "auprc", "f1_weighted"}

    final = tmp_path / "run" / "seed-1" / "final"
    saved = json.loads((final / "config.json").read_text())
    assert (saved["family"], saved["task"], saved["model"]["encoder"]) == ("finetuned", "longecg", None)
    metrics = evaluate_longecg(final, store.root, "test", tmp_path / "again")
    during = json.loads((tmp_path / "run" / "seed-1" / "test" / "metrics.json").read_text())
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == during
    assert metrics["accuracy"] == during["accuracy"]
    predictions = pd.read_csv(tmp_path / "again" / "predictions.csv")
    assert sorted(predictions["record_id"]) == sorted(TEST_RECORDS)
    np.testing.assert_allclose(predictions[["p_AF", "p_non-AF"]].sum(axis=1), 1, atol=1e-6)
    assert (predictions["windows"] == np.ceil(predictions["stop_s"] / 10).astype(int)).all()


def test_embedding_memory_does_not_grow_with_length(store, encoder):
    row = row_of(store, "201")
    peaks = []
    for minutes in (5, 10):
        tracemalloc.start()
        embed_stream(encoder, store, row, 0, minutes * 60 * 300, batch_windows=8)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= 1.3 * peaks[0], peaks


def test_cli_finetune_and_evaluate_longecg(store, tmp_path, capsys):
    from anyecg.cli import main

    out = tmp_path / "cli"
    assert main(["finetune", "--task", "longecg", "--data", str(store.root), "--out", str(out), "--seeds", "1",
                 "--steps", "5", "--batch-size", "4"]) == 0
    assert set(json.loads(capsys.readouterr().out.splitlines()[0])) == {"accuracy", "auroc", "f1_weighted"}
    assert main(["evaluate", "--model", str(out / "seed-0" / "final"), "--data", str(store.root), "--out",
                 str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text()) == json.loads(
        (out / "seed-0" / "test" / "metrics.json").read_text())


def test_a_pretrained_family_as_the_frozen_encoder(store, tmp_path):
    """ECG-FM reads 5 s windows: one embedding per 5 s, and evaluation reproduces the fine-tuned scores."""
    run = tmp_path / "ecgfm"
    pretrain_family("ecgfm", store.root, "ecgfm-tiny", run, TrainConfig(max_steps=1, batch_size=2, warmup_steps=1, save_every=1))
    encoder = load_window_encoder(str(run))
    assert (encoder.kind, encoder.window_s) == ("ecgfm", 5)
    row = row_of(store, "data_8_4")
    embedding = embed_stream(encoder, store, row, 0, 40 * 300 + 7, batch_windows=4)
    assert embedding.shape == (9, encoder.dim) and np.isfinite(embedding).all()
    summary = finetune_longecg(store.root, tmp_path / "ft", LongECGConfig(model=str(run), seeds=1, steps=5, batch_size=4, hidden=8))
    assert summary["window_s"] == 5
    final = tmp_path / "ft" / "seed-0" / "final"
    evaluate_longecg(final, store.root, "test", tmp_path / "again")
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "ft" / "seed-0" / "test" / "metrics.json").read_text())


def test_random_init_control_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    trained = load_window_encoder(None).network
    expected_next = torch.rand(3)  # the stream after loading (building the modules draws from it)
    torch.manual_seed(123)
    first = load_window_encoder(None, random_init=True).network
    after = torch.rand(3)
    second = load_window_encoder(None, random_init=True).network
    assert torch.equal(after, expected_next)  # the control's own draws come from a forked stream
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name  # the same control weights every time
    assert any(not torch.equal(a, c) for a, c in zip(first.state_dict().values(), trained.state_dict().values()))
