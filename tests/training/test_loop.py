"""The shared training loop: schedule, determinism, kill-and-resume, two-process DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anyecg.training.loop import TrainConfig, lr_at

TRAIN_SCRIPT = Path(__file__).with_name("train_tiny.py")
# One thread per process: the runs are tiny, and two processes on a 2-core machine must not oversubscribe.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_warmup_then_cosine_schedule():
    config = TrainConfig(max_steps=110, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(1e-4)
    assert lr_at(9, config) == pytest.approx(1e-3)
    assert lr_at(60, config) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(110, config) == pytest.approx(1e-4)


def _run(store: Path, out: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), str(store), str(out), str(steps), *extra],
        capture_output=True, text=True, env=ENV, timeout=600,
    )


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(small_store, tmp_path):
    reference = _run(small_store, tmp_path / "straight", 8)
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(TRAIN_SCRIPT), str(small_store), str(out), "8"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    log = out / "metrics.jsonl"
    while time.time() < deadline and process.poll() is None:
        if (out / "checkpoint-last" / "trainer_state.pt").is_file() and log.is_file() and len(log.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "final").exists(), "the run must be killed before it finishes for this test to mean anything"
    resumed = _run(small_store, out, 8)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = _weights(tmp_path / "straight" / "final"), _weights(out / "final")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps[-1] == 8


def test_two_process_gloo_matches_one_process(small_store, tmp_path):
    single = _run(small_store, tmp_path / "single", 3, "--batch-size", "4")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(TRAIN_SCRIPT), str(small_store), str(tmp_path / "ddp"), "3", "--batch-size", "4", "--dump-ranks"],
        capture_output=True, text=True, timeout=600, env=ENV,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # both ranks hold identical parameters after the steps
    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1))
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    # the loss of each step matches one process with the same global batch
    losses = lambda d: [json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    assert len(losses("ddp")) == 3
    for one, two in zip(losses("single"), losses("ddp")):
        assert two == pytest.approx(one, rel=1e-4, abs=1e-5)


def test_two_process_fsdp_matches_one_process(small_store, tmp_path):
    single = _run(small_store, tmp_path / "single", 3, "--batch-size", "4")
    assert single.returncode == 0, single.stderr[-2000:]
    fsdp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
         str(TRAIN_SCRIPT), str(small_store), str(tmp_path / "fsdp"), "3", "--batch-size", "4", "--fsdp", "--dump-ranks"],
        capture_output=True, text=True, timeout=600, env=ENV,
    )
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    # each rank holds only its shard: together they are the model, apart they are not
    rank0, rank1 = (torch.load(tmp_path / "fsdp" / f"rank{r}.pt") for r in (0, 1))
    whole = _weights(tmp_path / "fsdp" / "final")
    sharded = [k for k in whole if rank0[k].numel() < whole[k].numel()]
    assert sharded, "no parameter was sharded"
    for key in sharded:
        torch.testing.assert_close(torch.cat([rank0[key], rank1[key]])[: len(whole[key])], whole[key])
    # the gathered model equals one process trained on the same global batches
    single_weights = _weights(tmp_path / "single" / "final")
    for key in whole:
        torch.testing.assert_close(whole[key], single_weights[key], rtol=1e-4, atol=1e-5, msg=key)


def test_sampler_groups_like_with_like_and_deals_every_item_once():
    from anyecg.training.loop import DistributedContext, EpochSampler

    keys = np.array([12, 2] * 50)
    plain = EpochSampler(100, 0, DistributedContext()).order(3)
    grouped = EpochSampler(100, 0, DistributedContext(), keys, block=32).order(3)
    assert sorted(grouped) == list(range(100)) and sorted(plain) == list(range(100))
    mixed = lambda order: sum(len(set(keys[order[i : i + 8]])) > 1 for i in range(0, 96, 8))  # noqa: E731
    assert mixed(grouped) <= 4 < mixed(plain)  # batches of 8: at most one mixed batch per block of 32
    ranks = [EpochSampler(100, 0, DistributedContext(r, 2, r), keys, block=32).order(3) for r in (0, 1)]
    assert sorted(np.concatenate(ranks)) == list(range(100))
    np.testing.assert_array_equal(grouped, EpochSampler(100, 0, DistributedContext(), keys, block=32).order(3))


def test_data_smaller_than_one_batch_is_an_error_not_a_hang(tmp_path):
    from dataclasses import dataclass

    from anyecg.training.loop import train

    @dataclass
    class Output:
        loss: torch.Tensor

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, batch):
            return Output(loss=(self.w - batch["x"]).pow(2).mean())

    data = [{"x": torch.ones(1)} for _ in range(5)]
    collate = lambda items: {"x": torch.stack([item["x"] for item in items])}  # noqa: E731
    with pytest.raises(ValueError, match="5 items, fewer than one batch of 8"):
        train(Tiny(), data, collate, TrainConfig(max_steps=1, batch_size=8, warmup_steps=1), tmp_path / "run",
              model_config={})
    metrics = train(Tiny(), data, collate, TrainConfig(max_steps=2, batch_size=5, warmup_steps=1, save_every=2), tmp_path / "ok",
                    model_config={})
    assert np.isfinite(metrics["loss"])


def test_parameter_groups_exempt_embeddings_and_codes_from_weight_decay():
    from anyecg.models.tokenizer import Tokenizer, TokenizerConfig
    from anyecg.training.loop import parameter_groups

    model = Tokenizer(TokenizerConfig(dim=16, depth=1, decoder_depth=1, code_dim=4, num_codes=8))
    decay, no_decay = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"codebook.codes", "patch_embed.time_embed", "patch_embed.lead_embed.weight", "decoder_time"} <= exempt
    assert "encoder.0.attn.qkv.weight" in decayed or any(n.startswith("encoder.0.attn") for n in decayed)
    assert all(p.ndim >= 2 for p in decay["params"]) and not decayed & exempt
    assert decayed | exempt == set(names.values())


def test_stage_two_exempts_the_backbone_embeddings_found_inside_it():
    from anyecg.models.backbone import Backbone, BackboneConfig
    from anyecg.models.tokenizer import Tokenizer, TokenizerConfig
    from anyecg.training.loop import parameter_groups
    from anyecg.training.pretrain import MaskedCodeModel

    tokenizer = Tokenizer(TokenizerConfig(dim=16, depth=1, decoder_depth=1, code_dim=4, num_codes=8))
    model = MaskedCodeModel(tokenizer, Backbone(BackboneConfig(dim=16, depth=1, n_heads=2, num_codes=8)))
    decay, no_decay = parameter_groups(model, 0.05)
    exempt = {id(p) for p in no_decay["params"]}
    embed = model.backbone.patch_embed
    assert id(embed.time_embed) in exempt and id(embed.lead_embed.weight) in exempt
    assert not any(id(p) in exempt for p in decay["params"])
    assert all(p.requires_grad for p in decay["params"] + no_decay["params"])  # the frozen tokenizer is left out
