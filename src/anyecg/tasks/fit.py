"""Fine-tuning by epochs with the validation split choosing the model.

One epoch draws a random crop of each training record (class-balanced for multi-class tasks:
records are drawn with replacement, each class equally likely, so a rare class is seen as often as
a common one) -- or the first `epoch_items` of that order, for data sets of many short items such as
beats -- augments it (`anyecg.training.augment`) and takes AdamW steps; then every validation
record is scored whole. The epoch with the best validation score is written to `out/final`;
training stops after `patience` epochs without improvement, at `max_epochs`, when the next epoch
would overrun `budget_minutes`, or at `max_steps`. `out/fit.json` says which epoch was kept and why
training stopped.

The learning rate follows a cosine over `max_epochs`. With `budget_minutes`, the cosine is shortened
to the epochs the budget holds, counted at the pace of the first epoch that trains the whole model,
so a budget-bound run still anneals instead of stopping at its peak rate.

Pretrained encoders get layer-wise learning-rate decay (each transformer block `layer_decay` times
the rate of the one above it, the head the full rate) and a head warm-up: the first
`head_warmup_epochs` epochs train the head alone, so a random head does not wreck the pretrained
features with large early gradients.

With `ema_epochs` > 0 (default 2) the model that is validated and kept is a moving average of the
weights (and normalisation statistics), not the last step's. Its time constant grows with the steps
taken, about a ninth of them (`WeightAverage`), up to `ema_epochs` epochs of steps, which it reaches
after about 9 x `ema_epochs` epochs; runs that stop earlier never reach the cap, so their average
does not depend on `ema_epochs`. Why:
on a small validation split one step's weights score very differently from epoch to epoch, and the
average both scores steadier and makes the kept epoch less a matter of luck.

Resume: `out/checkpoint-last` is written after every epoch; rerunning continues at the next epoch
with the same data order, crops and augmentations as an uninterrupted run (all seeded per epoch).
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from anyecg.evaluation.metrics import to_jsonable
from anyecg.training.augment import Augmentations, augment_batch
from anyecg.training.checkpoint import load_state_dict_strict, load_trainer_state, save_checkpoint
from anyecg.training.loop import FINAL, LAST, LOG, lr_factor, weight_decayed

FIT_FILE = "fit.json"


@dataclass
class FitConfig:
    max_epochs: int = 30
    patience: int = 6  # epochs without a better validation score before stopping
    budget_minutes: float | None = None  # stop before an epoch that would end past this wall time
    max_steps: int | None = None  # cap on optimizer steps (smoke runs); None: epochs decide
    epoch_items: int | None = None  # items drawn per epoch; None: as many as the dataset holds
    batch_size: int = 32
    lr: float = 1e-3  # the head's peak rate; the encoder's layers get less when pretrained
    min_lr_ratio: float = 0.05  # cosine decay over max_epochs (or the epochs the budget holds) to lr * min_lr_ratio
    weight_decay: float = 0.01
    layer_decay: float = 0.75
    head_warmup_epochs: int = 1  # pretrained encoders only
    balanced: bool = True  # class-balanced sampling (multi-class) / positive weighting (multi-label)
    augment: bool = True
    ema_epochs: float = 2.0  # cap on the weight average's time constant, in epochs; 0: validate the raw weights
    seed: int = 0


class WeightAverage:
    """Exponential moving average of a model's floating-point state (weights, normalisation
    statistics; integer buffers follow the model). Each update moves the average `1 - decay` of the
    way to the model, with `decay = 1 - 1 / horizon_steps`, shortened to `(1 + t) / (10 + t)` (a
    time constant of (10 + t) / 9 updates) over the first ~9 x `horizon_steps` updates, so the
    average does not stay anchored to the initial weights."""

    def __init__(self, model: nn.Module, horizon_steps: float):
        self.decay = 1.0 - 1.0 / max(horizon_steps, 1.0)
        self.state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[name].lerp_(value, 1.0 - decay)
            else:
                self.state[name].copy_(value)

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """The model holds the average inside the block and its own weights again after it."""
        own = {name: value.clone() for name, value in model.state_dict().items()}
        model.load_state_dict(self.state)
        try:
            yield model
        finally:
            model.load_state_dict(own)


@dataclass
class FitResult:
    best_epoch: int  # 1-based epoch written to out/final
    best_score: float
    epochs_run: int
    stop_reason: str
    history: list[dict]

    def explain(self, metric: str) -> str:
        return (f"kept epoch {self.best_epoch} of {self.epochs_run} (best validation {metric} "
                f"{self.best_score:.4f}); stopped: {self.stop_reason}")


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float,
                     pretrained: bool) -> list[dict]:
    """AdamW groups with a per-group `lr_scale`: 1 for the head and for models trained from scratch;
    for a pretrained encoder `layer_decay ** (depth - i)` for its i-th block and `layer_decay **
    (depth + 1)` for everything outside the blocks (embeddings, norms), or `layer_decay` for all of
    an encoder without a block list. Weight decay on the `weight_decayed` parameters only."""
    head = {id(p) for p in model.head.parameters()}
    depth, block_of = 0, {}
    if pretrained:
        block_lists = [m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1
                       and not name.startswith("head")]
        if block_lists:
            depth = len(block_lists[0])
            block_of = {id(p): i for i, block in enumerate(block_lists[0]) for p in block.parameters()}
    decayed = weight_decayed(model)
    groups: dict[tuple[float, bool], list[Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not pretrained or id(p) in head:
            scale = 1.0
        elif id(p) in block_of:
            scale = layer_decay ** (depth - block_of[id(p)])
        else:
            scale = layer_decay ** (depth + 1) if depth else layer_decay
        groups.setdefault((scale, name in decayed), []).append(p)
    return [{"params": params, "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0}
            for (scale, decay), params in sorted(groups.items(), key=lambda item: item[0])]


def epoch_order(targets: np.ndarray, multilabel: bool, balanced: bool, seed: int, epoch: int) -> np.ndarray:
    """Item indices of one epoch (as many as items): class-balanced draws with replacement for a
    multi-class task, else a permutation. Deterministic from (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    n = len(targets)
    if not balanced or multilabel:
        return rng.permutation(n)
    counts = np.bincount(targets)
    weights = 1.0 / counts[targets]  # [n]: every class gets the same total weight
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())


def _loss(logits: Tensor, targets: Tensor, pos_weight: Tensor | None, class_weights: Tensor | None) -> Tensor:
    logits = logits.float()
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets, weight=class_weights)
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def _set_encoder_trainable(model: nn.Module, trainable: dict[str, bool], encoder_on: bool) -> None:
    head = {id(p) for p in model.head.parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[name] and (encoder_on or id(p) in head))


def fit(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable[[list[dict]], dict],
    targets: np.ndarray,
    validate: Callable[[nn.Module], float],
    config: FitConfig,
    out: str | Path,
    *,
    metric: str,
    pretrained: bool,
    fs: float,
    model_config: dict,
    recipe_json: str | None = None,
    after_epoch: Callable[[int], None] | None = None,
    class_weights: Tensor | None = None,
) -> FitResult:
    """Train `model` (whose `forward(batch)` has `.logits`) on `dataset` (item i has target
    `targets[i]`: class index, or a 0/1 row for multi-label) and keep the epoch whose `validate(model)`
    score (higher is better) is best. `after_epoch(epoch)` runs once an epoch is saved.
    `class_weights [K]` weights the cross-entropy of a multi-class task (usually with `balanced` off)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    multilabel = targets.ndim == 2
    n = len(dataset)
    batch_size = min(config.batch_size, n)
    steps_per_epoch = min(n, config.epoch_items or n) // batch_size
    schedule_epochs = config.max_epochs  # the cosine's length; a budget shortens it after the first full epoch
    pos_weight = None
    if multilabel and config.balanced:
        positives = targets.sum(axis=0)  # [K]
        pos_weight = torch.tensor(np.clip((n - positives) / np.maximum(positives, 1), 1.0, 10.0), dtype=torch.float32)

    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    warmup_epochs = config.head_warmup_epochs if pretrained else 0
    optimizer = torch.optim.AdamW(parameter_groups(model, config.lr, config.weight_decay, config.layer_decay, pretrained),
                                  lr=config.lr, betas=(0.9, 0.999))
    augmentations = Augmentations()
    average = WeightAverage(model, config.ema_epochs * steps_per_epoch) if config.ema_epochs > 0 else None
    state = load_trainer_state(out / LAST)
    epoch, step, elapsed, bad_epochs, schedule_fixed = 0, 0, 0.0, 0, config.budget_minutes is None
    best_score, best_epoch, history, stop_reason = -math.inf, 0, [], ""
    if state is not None:
        load_state_dict_strict(model, out / LAST)
        epoch, step, elapsed, bad_epochs = state["epoch"], state["step"], state["elapsed"], state["bad_epochs"]
        best_score, best_epoch, history = state["best_score"], state["best_epoch"], list(state["history"])
        stop_reason = state["stop_reason"]
        if not stop_reason:  # a finished run trains no more: its optimizer is not needed
            try:
                optimizer.load_state_dict(state["optimizer"])
            except ValueError as err:
                raise ValueError(f"{out / LAST}: cannot resume this run's optimizer ({err}): it was started with "
                                 "other parameter groups (other options, or another anyecg version); finish it with "
                                 "those, or start again in a new --out") from None
        if average is not None and "weight_average" in state:
            average.state, average.updates = state["weight_average"]["state"], state["weight_average"]["updates"]
        schedule_epochs = state.get("schedule_epochs", schedule_epochs)
        schedule_fixed = state.get("schedule_fixed", schedule_fixed)
        print(f"resuming {out} after epoch {epoch}", file=sys.stderr)

    while not stop_reason:
        started = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: the same on a resumed run
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        _set_encoder_trainable(model, trainable, encoder_on=epoch >= warmup_epochs)
        model.train()
        order = epoch_order(targets if not multilabel else np.zeros(n, dtype=np.int64), multilabel, config.balanced,
                            config.seed, epoch)
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.max_epochs}", file=sys.stderr, leave=False)
        for position in bar:
            if config.max_steps is not None and step >= config.max_steps:
                break
            batch = collate([dataset[int(i)] for i in order[position * batch_size:(position + 1) * batch_size]])
            if config.augment:
                batch = augment_batch(batch, fs, augmentations, generator)
            factor = lr_factor(step, steps_per_epoch, schedule_epochs * steps_per_epoch, config.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * group["lr_scale"] * factor
            loss = _loss(model(batch).logits, batch["targets"], pos_weight, class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if average is not None:
                average.update(model)
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        bar.close()

        with average.swapped_in(model) if average is not None else nullcontext():
            score = float(validate(model))
        candidate = average.state if average is not None else model.state_dict()  # what validation scored
        epoch += 1
        seconds = time.perf_counter() - started
        elapsed += seconds
        if not schedule_fixed and epoch > warmup_epochs:  # this epoch trained the whole model: its pace counts
            schedule_epochs = min(config.max_epochs, max(epoch, epoch + int((60 * config.budget_minutes - elapsed) // seconds)))
            schedule_fixed = True
            print(f"the {config.budget_minutes:g}-minute budget holds {schedule_epochs} epochs at {seconds:.0f} s an "
                  f"epoch: the learning rate anneals over {schedule_epochs}", file=sys.stderr)
        improved = math.isfinite(score) and score > best_score
        if improved:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            save_checkpoint(out / FINAL, candidate, {**model_config, "selected_epoch": epoch,
                            f"val_{metric}": score}, recipe_json)
        else:
            bad_epochs += 1
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                  f"val_{metric}": score, "best": improved, "seconds": seconds, "step": step}
        history.append(record)
        with open(out / LOG, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"epoch {epoch}/{config.max_epochs}: train loss {record['train_loss']:.4f}, val {metric} {score:.4f}"
              f"{' (best so far, saved)' if improved else f' (best {best_score:.4f} at epoch {best_epoch})'}, "
              f"{seconds:.0f} s", file=sys.stderr)

        if bad_epochs >= config.patience:
            stop_reason = f"no better validation {metric} for {config.patience} epochs (early stopping)"
        elif epoch >= config.max_epochs:
            stop_reason = f"reached max_epochs {config.max_epochs}"
        elif epoch >= schedule_epochs:
            stop_reason = f"reached the {schedule_epochs} epochs the {config.budget_minutes:g}-minute budget holds"
        elif config.max_steps is not None and step >= config.max_steps:
            stop_reason = f"reached max_steps {config.max_steps}"
        elif config.budget_minutes is not None and elapsed + seconds > 60 * config.budget_minutes:
            stop_reason = f"another epoch would overrun the {config.budget_minutes:g}-minute budget"
        if best_epoch == 0 and stop_reason:  # never a finite score: keep the last epoch, and say so
            best_epoch = epoch
            save_checkpoint(out / FINAL, candidate, {**model_config, "selected_epoch": epoch}, recipe_json)
            stop_reason += "; no finite validation score, so the last epoch was kept"
        trainer_state = {"optimizer": optimizer.state_dict(), "epoch": epoch, "step": step, "elapsed": elapsed,
                         "bad_epochs": bad_epochs, "best_score": best_score, "best_epoch": best_epoch,
                         "history": history, "stop_reason": stop_reason, "schedule_epochs": schedule_epochs,
                         "schedule_fixed": schedule_fixed}
        if average is not None:
            trainer_state["weight_average"] = {"state": average.state, "updates": average.updates}
        save_checkpoint(out / LAST, model.state_dict(), model_config, recipe_json, trainer_state)
        if after_epoch is not None:
            after_epoch(epoch)

    result = FitResult(best_epoch, best_score if math.isfinite(best_score) else math.nan, epoch, stop_reason, history)
    (out / FIT_FILE).write_text(json.dumps(to_jsonable({"metric": metric, "explanation": result.explain(metric),
                                                        "config": asdict(config), **asdict(result)}), indent=2))
    print(result.explain(metric), file=sys.stderr)
    return result
