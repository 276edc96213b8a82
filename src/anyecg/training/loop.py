"""One training loop for every stage: tokenizer, masked-code pretraining, fine-tuning.

AdamW, linear warm-up then cosine decay, gradient clipping, gradient accumulation, bf16 autocast
where the device supports it, a JSONL log of every metric, atomic checkpoints, and resume: rerun
the same command after a kill and training continues from the last checkpoint with the same data
order and random state.

Launches (the same code path for all of them)::

    # one process (CPU by default)
    anyecg pretrain-tokenizer --data store/ --preset anyecg-small --out runs/tok

    # one machine, 4 processes (DDP; gloo on CPU, NCCL on GPU)
    torchrun --nproc_per_node=4 -m anyecg.cli pretrain-tokenizer --data store/ --preset anyecg-b --out runs/tok

    # a model too large for one device: shard parameters, gradients and optimizer state (FSDP)
    torchrun --nproc_per_node=8 -m anyecg.cli pretrain --data store/ --tokenizer runs/tok --preset anyecg-xl --fsdp --out runs/xl

    # two machines, 8 GPUs each: run on every node with its --node_rank
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 -m anyecg.cli pretrain --data store/ --tokenizer runs/tok --preset anyecg-l --out runs/l
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from anyecg.training.checkpoint import check_keys, load_state_dict_strict, load_trainer_state, save_checkpoint

LAST = "checkpoint-last"
FINAL = "final"
LOG = "metrics.jsonl"


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 32  # global batch: split across processes, times accumulation steps
    accumulation: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    precision: str = "auto"  # "auto" (bf16 on GPUs that support it, else fp32), "bf16", "fp32"
    seed: int = 0
    log_every: int = 10
    save_every: int = 200
    num_workers: int = 0
    device: str = "auto"  # "auto": the local CUDA device under torchrun / when present, else CPU
    fsdp: bool = False  # shard the model across processes (FSDP) instead of replicating it (DDP)


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistributedContext:
    """Join the process group torchrun describes in the environment; a plain run is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `lr * min_lr_ratio` at `max_steps`."""
    return config.lr * lr_factor(step, config.warmup_steps, config.max_steps, config.min_lr_ratio)


def _device(config: TrainConfig, context: DistributedContext) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", context.local_rank)
    return torch.device("cpu")


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == "fp32":
        return None
    if config.precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor on `device` (other entries as they are)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}


def _scalars(output) -> dict[str, float]:
    """Every scalar of a model output (a dataclass or dict) as a float, for the log."""
    items = {f.name: getattr(output, f.name) for f in fields(output)} if is_dataclass(output) else dict(output)
    scalars = {}
    for name, value in items.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            scalars[name] = float(value.detach())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[name] = float(value)
    return scalars


class EpochSampler:
    """A seeded permutation of the dataset per epoch, dealt round-robin to the ranks.

    With `group_keys` (one per item, e.g. the lead count), items are sorted by key inside blocks of
    `block` consecutive items of the permutation, so most batches hold items of one shape and little
    compute goes to padding. Deterministic from (seed, epoch): a resumed run sees the same batches.
    """

    def __init__(self, n_items: int, seed: int, context: DistributedContext,
                 group_keys: np.ndarray | None = None, block: int = 0):
        self.n_items = n_items
        self.seed = seed
        self.context = context
        self.group_keys = group_keys
        self.block = block

    def order(self, epoch: int) -> np.ndarray:
        permutation = np.random.default_rng([self.seed, epoch]).permutation(self.n_items)
        if self.group_keys is not None and self.block > 1:
            blocks = [permutation[i : i + self.block] for i in range(0, self.n_items, self.block)]
            permutation = np.concatenate([b[np.argsort(self.group_keys[b], kind="stable")] for b in blocks])
        return permutation[self.context.rank :: self.context.world_size]


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP: every layer held in an `nn.ModuleList` (the transformer blocks) is its own shard unit,
    the rest of the model the root unit, so at most one block's parameters are gathered at a time."""
    for module in list(model.modules()):
        if isinstance(module, torch.nn.ModuleList):
            for layer in module:
                fully_shard(layer)
    fully_shard(model)
    return model


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _model_state(model: torch.nn.Module, config: TrainConfig) -> dict[str, torch.Tensor]:
    """The whole model's state on CPU; under FSDP every rank must call this (it gathers shards)."""
    return get_model_state_dict(model, options=_FULL) if config.fsdp else model.state_dict()


def weight_decayed(model: torch.nn.Module) -> set[str]:
    """Names (as `model.named_parameters()` gives them) of the parameters AdamW should decay: the
    matrices, except those any module of `model` lists in its `no_weight_decay()` (position and lead
    embeddings, codebooks: decay would shrink them). Biases and norm scales are never decayed."""
    exempt = {f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
              if hasattr(module, "no_weight_decay") for name in module.no_weight_decay()}
    return {name for name, p in model.named_parameters() if p.ndim >= 2 and name not in exempt}


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on the `weight_decayed` parameters, none on the rest."""
    decayed = weight_decayed(model)
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decay = [p for name, p in trained if name in decayed]
    no_decay = [p for name, p in trained if name not in decayed]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig) -> dict:
    return get_optimizer_state_dict(model, optimizer, options=_FULL) if config.fsdp else optimizer.state_dict()


def _resume(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path, state: dict, config: TrainConfig) -> None:
    if not config.fsdp:
        load_state_dict_strict(model, directory)
        optimizer.load_state_dict(state["optimizer"])
        return
    saved = check_keys(model, directory)
    set_model_state_dict(model, saved, options=StateDictOptions(full_state_dict=True))
    set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))


def train(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable,
    config: TrainConfig,
    out: str | Path,
    *,
    model_config: dict,
    recipe_json: str | None = None,
    after_step: Callable[[torch.nn.Module, int], None] | None = None,
) -> dict[str, float]:
    """Train `model` (whose `forward(batch)` returns an output with a scalar `.loss`) for `max_steps`.

    `out/checkpoint-last` is written every `save_every` steps and resumed from when present;
    `out/final` holds the finished model. Returns the last logged metrics.
    """
    out = Path(out)
    context = init_distributed()
    device = _device(config, context)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)

    model.to(device)
    if config.fsdp:
        if context.world_size == 1:
            raise ValueError("fsdp=True needs several processes: launch with torchrun --nproc_per_node=N")
        shard_model(model)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)
    step, epoch, position = 0, 0, 0
    state = load_trainer_state(out / LAST)
    if state is not None:
        _resume(model, optimizer, out / LAST, state, config)
        step, epoch, position = state["step"], state["epoch"], state["position"]
        torch.set_rng_state(state["torch_rng"])
    ddp_model = DistributedDataParallel(model) if context.world_size > 1 and not config.fsdp else model

    per_rank = config.batch_size // (context.world_size * config.accumulation)
    if per_rank * context.world_size * config.accumulation != config.batch_size or per_rank == 0:
        raise ValueError(
            f"batch_size {config.batch_size} must be a positive multiple of world_size {context.world_size} "
            f"x accumulation {config.accumulation}"
        )
    if len(dataset) // context.world_size < per_rank:  # no epoch would ever yield a full batch
        raise ValueError(f"the training data has {len(dataset)} items, fewer than one batch of {config.batch_size} "
                         f"per {context.world_size} process(es); lower the batch size")
    keys = dataset.group_keys() if hasattr(dataset, "group_keys") else None
    sampler = EpochSampler(len(dataset), config.seed, context, keys, block=16 * config.batch_size)
    autocast_dtype = _autocast_dtype(config, device)
    log_path = out / LOG
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2))

    def micro_batches():
        nonlocal epoch, position
        while True:
            order = sampler.order(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            while position + per_rank <= len(order):
                indices = order[position : position + per_rank]
                position += per_rank
                yield collate([dataset[int(i)] for i in indices])
            epoch, position = epoch + 1, 0

    batches = micro_batches()
    bar = tqdm(total=config.max_steps, initial=step, desc="train", disable=not context.is_main, file=sys.stderr)
    metrics: dict[str, float] = {}
    window_start, window_items = time.perf_counter(), 0
    model.train()
    while step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        step_scalars: dict[str, float] = {}
        for micro in range(config.accumulation):
            batch = to_device(next(batches), device)
            sync = micro == config.accumulation - 1 or context.world_size == 1
            if config.fsdp:
                model.set_requires_gradient_sync(sync)
            with ddp_model.no_sync() if not sync and not config.fsdp else nullcontext():
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    output = ddp_model(batch)
                (output.loss / config.accumulation).backward()
            for name, value in _scalars(output).items():
                step_scalars[name] = step_scalars.get(name, 0.0) + value / config.accumulation
            window_items += int(batch["patches"].shape[0]) if "patches" in batch else per_rank
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: a DTensor
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if after_step is not None:
            after_step(model, step)
        bar.update(1)

        if step % config.log_every == 0 or step == config.max_steps:
            elapsed = time.perf_counter() - window_start
            metrics = _mean_across_ranks(step_scalars, context, device)
            metrics.update(step=step, lr=lr_at(step - 1, config), grad_norm=float(grad_norm),
                           samples_per_s=window_items * context.world_size / max(elapsed, 1e-9), epoch=epoch)
            window_start, window_items = time.perf_counter(), 0
            if context.is_main:
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(metrics) + "\n")
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}")
        if step % config.save_every == 0 or step == config.max_steps:
            model_state, optimizer_state = _model_state(model, config), _optimizer_state(model, optimizer, config)
            if context.is_main:
                trainer_state = {
                    "optimizer": optimizer_state, "step": step, "epoch": epoch, "position": position,
                    "torch_rng": torch.get_rng_state(),
                }
                save_checkpoint(out / LAST, model_state, model_config, recipe_json, trainer_state)
            if context.world_size > 1:
                dist.barrier()
    bar.close()
    model_state = _model_state(model, config)
    if context.is_main:
        save_checkpoint(out / FINAL, model_state, model_config, recipe_json)
    if context.world_size > 1:
        dist.barrier()
    return metrics


def _mean_across_ranks(values: dict[str, float], context: DistributedContext, device: torch.device) -> dict[str, float]:
    if context.world_size == 1 or not values:
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {n: float(v) / context.world_size for n, v in zip(names, tensor.tolist())}

