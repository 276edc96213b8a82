"""Corrupted / missing lead generation: reconstruct chosen target leads from the present input leads.

Two corruptions (`LeadGenFinetuneConfig.corruption`):
- "missing": the target leads are absent; the model sees the input leads only;
- "noise": the target leads are present but corrupted (`corrupt`: white Gaussian noise, baseline
  wander and optionally electrode-motion bursts, scaled to `noise_snr_db` per window and lead) and
  the model recovers the clean leads. Training windows get a fresh draw each epoch; evaluation uses
  one fixed draw per window (keyed by the noise seed, the record id and the window start), so
  scores reproduce. Metrics of the corrupted leads themselves (`corrupted_input`, the identity
  "no reconstruction" baseline) sit beside the model's. The corrupted lead is the clean normalised
  lead plus noise: it is not normalised again, so its amplitude scale is the clean lead's.

Data: full `window_s` windows of the store records that have every input and every target lead
(other records are counted as excluded, with the reason), split by the manifest's `split` column.
Signals are the store's normalised units (the recipe's per-record, per-lead amplitude
normalisation, z-score by default); metrics are reported in those units and, for MAE, also in mV
(the target lead's stored offset and scale undone). Note that the normalised target uses the
target lead's own per-record offset and scale: the mV figures are the ones free of that knowledge
only up to that affine map, which is why both are reported.

Models:
- `leadgen_linear`: every target lead as a least-squares linear combination of the input leads at
  the same instant, fitted in closed form on all train windows (`LinearLeadGenerator.fit`);
- `leadgen_gan` (WGAN-GP + L1) and `leadgen_cgan` (conditional GAN + L1): the U-Net generator and
  patch critic of `anyecg.models.baselines.leadgen_gan`, trained by its `GanTrainer` for `steps`
  generator updates on random-crop batches; only the generator is saved (the critic is not needed
  to reconstruct);
- AnyECG masked-lead generation: the backbone reads the tokens of all leads, input and target, with
  the target leads' tokens replaced by its mask token (the lead embedding still says which lead is
  asked for); a linear head maps each target token's feature [D] to its 1-second patch. MSE on the
  target patches; `linear_probe` freezes the backbone, otherwise everything is fine-tuned.

With "noise", the baselines read the input leads followed by the corrupted target leads
(`[B, C_in + C_out, T]`), and AnyECG reads the corrupted target tokens as they are (no mask token).

    input patches [B, C_in, P, S] + masked target rows [B, C_out, P, S]
        --backbone--> [B, (C_in + C_out) * P, D] --target rows--> [B, C_out, P, D]
        --head--> [B, C_out, P, S] --> [B, C_out, T]

A fine-tuned folder is `model.safetensors` + `config.json` (family "finetuned", task "leadgen",
model spec, input/target leads, window, corruption) + `recipe.json`, like the classification tasks.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, sosfiltfilt
from torch import Tensor, nn
from torch.utils.data import Dataset

from anyecg.data.store import Store, split_list
from anyecg.evaluation.metrics import leadgen_metrics, mean_std_over_seeds, to_jsonable
from anyecg.evaluation.plots import plot_reconstructions
from anyecg.models.backbone import Backbone, BackboneConfig
from anyecg.models.baselines import baseline_config
from anyecg.models.baselines.common import LeadGenConfig
from anyecg.models.baselines.leadgen_gan import GanStepOutput, GanTrainConfig, GanTrainer, LeadGenGAN, LeadGenGANConfig
from anyecg.models.baselines.leadgen_linear import LeadGenOutput, LinearLeadGenerator
from anyecg.pretrained import AnyECG
from anyecg.signal.leads import canonical_leads, lead_ids
from anyecg.tasks.classification import BackboneWithHead
from anyecg.tasks.folders import load_finetuned_config, write_summary
from anyecg.training.checkpoint import load_state_dict_strict, save_checkpoint
from anyecg.training.loop import FINAL, LOG, TrainConfig, train

LINEAR = "leadgen_linear"
GANS = ("leadgen_gan", "leadgen_cgan")  # presets of anyecg.models.baselines (WGAN-GP, conditional GAN)
BASELINES = (LINEAR, *GANS)
CORRUPTIONS = ("missing", "noise")


@dataclass
class NoiseConfig:
    """Noise added to the target leads in the "noise" corruption (see `corrupt`)."""

    snr_db: float = 0.0  # clean-lead power over noise power, per window and lead
    wander: float = 0.5  # share of the noise power in baseline wander (0.1-0.5 Hz sines)
    bursts: float = 0.0  # share in electrode-motion-like bursts; the rest is white Gaussian noise
    seed: int = 0  # seed of the noise draws (evaluation: one fixed draw per window)

    def __post_init__(self):
        if not (0.0 <= self.wander <= 1.0 and 0.0 <= self.bursts <= 1.0 and self.wander + self.bursts <= 1.0):
            raise ValueError(f"noise shares must lie in [0, 1] and sum to at most 1, got wander {self.wander}, "
                             f"bursts {self.bursts}")

    def describe(self) -> str:
        return (f"noise: {self.snr_db:g} dB SNR, {self.wander:.0%} baseline wander, {self.bursts:.0%} "
                f"electrode-motion bursts, rest white; seed {self.seed}")


def _unit_power(noise: np.ndarray) -> np.ndarray:
    """noise [C, T] scaled to mean square 1 per lead (an all-zero lead stays zero)."""
    power = np.mean(noise**2, axis=-1, keepdims=True)  # [C, 1]
    return noise / np.sqrt(np.where(power > 0, power, 1.0))


def ecg_noise(n_leads: int, n_samples: int, fs: float, rng: np.random.Generator, *, wander: float = 0.5,
              bursts: float = 0.0) -> np.ndarray:
    """float64 [C, T] of realistic ECG noise with mean square 1 per lead.

    A mix, by power share, of white Gaussian noise (muscle and amplifier noise), baseline wander
    (respiration and electrode drift: two sines per lead at 0.1-0.5 Hz, random phase and weight) and
    electrode-motion-like bursts (1 + Poisson(T / 10 s) bursts of 0.2-1 s per lead: 0.5-15 Hz
    band-limited noise under a Hann envelope, the band where motion artefacts overlap the QRS).
    """
    if n_samples < 2:
        raise ValueError(f"need at least 2 samples to draw noise, got {n_samples}")
    t = np.arange(n_samples) / fs  # [T] seconds
    white = rng.standard_normal((n_leads, n_samples))  # [C, T]
    freqs = rng.uniform(0.1, 0.5, (n_leads, 2, 1))  # [C, 2, 1] Hz
    phases = rng.uniform(0.0, 2 * np.pi, (n_leads, 2, 1))
    weights = rng.uniform(0.5, 1.0, (n_leads, 2, 1))
    drift = (weights * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=1)  # [C, T]
    mix = np.sqrt(1.0 - wander - bursts) * _unit_power(white) + np.sqrt(wander) * _unit_power(drift)
    if bursts > 0:
        sos = butter(2, [0.5, min(15.0, 0.45 * fs)], btype="band", fs=fs, output="sos")
        band = sosfiltfilt(sos, rng.standard_normal((n_leads, n_samples)), axis=-1)  # [C, T]
        envelope = np.zeros((n_leads, n_samples))
        for lead in range(n_leads):
            for _ in range(1 + rng.poisson(n_samples / fs / 10.0)):
                length = int(np.clip(rng.uniform(0.2, 1.0) * fs, 2, n_samples))
                start = int(rng.integers(0, n_samples - length + 1))
                envelope[lead, start : start + length] = np.maximum(envelope[lead, start : start + length],
                                                                    np.hanning(length))
        mix = mix + np.sqrt(bursts) * _unit_power(band * envelope)
    return _unit_power(mix)


def corrupt(clean: np.ndarray, fs: float, noise: NoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """float32 [C, T]: clean [C, T] plus `ecg_noise` scaled per lead so that
    var(clean) / mean(added noise^2) = 10^(snr_db / 10). The signal power is the variance (a lead's
    offset carries no waveform); a flat lead gets no noise."""
    x = np.asarray(clean, dtype=np.float64)
    power = x.var(axis=-1, keepdims=True)  # [C, 1]
    unit = ecg_noise(x.shape[0], x.shape[1], fs, rng, wander=noise.wander, bursts=noise.bursts)  # [C, T]
    return (x + unit * np.sqrt(power / 10.0 ** (noise.snr_db / 10.0))).astype(np.float32)


@dataclass
class LeadGenFinetuneConfig:
    input_leads: tuple[str, ...] = ("II",)  # canonical names of the leads the model reads
    target_leads: tuple[str, ...] = ("V1",)  # canonical names of the leads it reconstructs
    model: str | None = None  # AnyECG checkpoint folder; None: the one shipped in the package
    baseline: str | None = None  # one of BASELINES instead of AnyECG (least squares, WGAN-GP, conditional GAN)
    linear_probe: bool = False  # AnyECG: train the head only, backbone frozen
    random_init: bool = False  # AnyECG: the backbone's architecture with random weights (a control)
    seeds: int = 1
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    window_s: int = 10
    plot_examples: int = 3
    corruption: str = "missing"  # "missing": targets absent from the input; "noise": present, corrupted
    noise_snr_db: float = 0.0  # "noise": SNR of the corrupted target leads
    noise_wander: float = 0.5  # "noise": share of the noise power in baseline wander
    noise_bursts: float = 0.0  # "noise": share in electrode-motion-like bursts (the rest is white)
    noise_seed: int = 0  # "noise": seed of the fixed evaluation corruption

    def __post_init__(self):
        self.input_leads = tuple(canonical_leads(list(self.input_leads)))
        self.target_leads = tuple(canonical_leads(list(self.target_leads)))
        if not self.input_leads or not self.target_leads:
            raise ValueError(f"need input and target leads, got {self.input_leads} -> {self.target_leads}")
        overlap = set(self.input_leads) & set(self.target_leads)
        if overlap:
            raise ValueError(f"leads {sorted(overlap)} are both input and target")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"unknown lead generation baseline {self.baseline!r}; known: {list(BASELINES)}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.corruption!r}; known: {list(CORRUPTIONS)}")
        noise = self.noise  # NoiseConfig checks the power shares
        if noise is not None and not np.isfinite(noise.snr_db):
            raise ValueError(f"noise_snr_db must be finite, got {noise.snr_db}")

    @property
    def noise(self) -> NoiseConfig | None:
        if self.corruption != "noise":
            return None
        return NoiseConfig(self.noise_snr_db, self.noise_wander, self.noise_bursts, self.noise_seed)

    @property
    def model_leads(self) -> tuple[str, ...]:
        """What a baseline reads: the input leads, then (with "noise") the corrupted target leads."""
        return self.input_leads + (self.target_leads if self.corruption == "noise" else ())


def corruption_spec(noise: NoiseConfig | None) -> dict:
    """The corruption as stored in a checkpoint's config.json."""
    return {"kind": "missing"} if noise is None else {"kind": "noise", **asdict(noise)}


def noise_from_spec(spec: dict | None) -> NoiseConfig | None:
    """Inverse of `corruption_spec`; folders written before corruptions existed are "missing"."""
    if spec is None or spec["kind"] == "missing":
        return None
    return NoiseConfig(**{key: value for key, value in spec.items() if key != "kind"})


@dataclass
class Eligibility:
    """Manifest rows usable for the task, and how many were left out for which reason."""

    rows: np.ndarray  # int [n]
    excluded: dict[str, int] = field(default_factory=dict)  # reason -> record count


def eligible_records(store: Store, input_leads, target_leads, window_s: int, split: str | None = None) -> Eligibility:
    """Records (of `split`, or all) with every input and target lead and at least one full window."""
    needed = list(input_leads) + list(target_leads)
    size = window_s * store.recipe.target_fs
    rows, excluded = [], Counter()
    for row, (leads, n_samples, record_split) in enumerate(
        zip(store.manifest["leads"], store.manifest["n_samples"], store.manifest["split"])
    ):
        if split is not None and record_split != split:
            continue
        missing = [lead for lead in needed if lead not in split_list(leads)]
        if missing:
            excluded[f"missing leads {','.join(missing)}"] += 1
        elif int(n_samples) < size:
            excluded[f"shorter than {window_s} s"] += 1
        else:
            rows.append(row)
    return Eligibility(np.array(rows, dtype=np.int64), dict(sorted(excluded.items())))


class LeadGenWindows(Dataset):
    """Full windows of the given records, input leads then target leads, normalised.

    `random_crop=True` (training): one window per record, a fresh random start (on a second
    boundary) each epoch. `random_crop=False` (evaluation): each record tiled into consecutive full
    windows; the tail shorter than one window is left out.

    With `noise`, each item also holds its corrupted target leads: a fresh draw per epoch when
    training, one fixed draw per (noise seed, record id, window start) when evaluating.
    """

    def __init__(self, store: Store, rows: np.ndarray, input_leads, target_leads, *, window_s: int = 10,
                 random_crop: bool = True, seed: int = 0, noise: NoiseConfig | None = None):
        self.store, self.rows = store, np.asarray(rows, dtype=np.int64)
        self.input_leads, self.target_leads = tuple(input_leads), tuple(target_leads)
        self.noise = noise
        self.size = window_s * store.recipe.target_fs
        self.patch_size = store.recipe.patch_size
        self.random_crop, self.seed, self.epoch = random_crop, seed, 0
        self.lead_ids = torch.from_numpy(lead_ids(list(self.input_leads + self.target_leads)))  # [C_in + C_out]
        lengths = store.manifest["n_samples"].to_numpy()
        self.tiles = [] if random_crop else [
            (int(r), start) for r in self.rows for start in range(0, int(lengths[r]) - self.size + 1, self.size)
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows) if self.random_crop else len(self.tiles)

    def window(self, index: int) -> tuple[int, int]:
        """(manifest row, first sample) of item `index`."""
        if not self.random_crop:
            return self.tiles[index]
        record = int(self.rows[index])
        length = self.store.n_samples(record)
        n_starts = (length - self.size) // self.patch_size + 1
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return record, int(rng.integers(n_starts)) * self.patch_size

    def channels(self, record: int) -> np.ndarray:
        """int [C_in + C_out]: where the input then target leads sit in the record's stored leads."""
        leads = self.store.leads(record)
        return np.array([leads.index(lead) for lead in self.input_leads + self.target_leads])

    def noise_rng(self, index: int, record: int) -> np.random.Generator:
        """The generator of item `index`'s noise (independent of batching and item order)."""
        if self.random_crop:  # training: a new draw each epoch, apart from the crop's stream
            return np.random.default_rng([self.noise.seed, self.seed, self.epoch, index, 1])
        _, start = self.window(index)
        record_id = self.store.record_id(record)
        return np.random.default_rng([self.noise.seed, zlib.crc32(record_id.encode()), start])

    def __getitem__(self, index: int) -> dict:
        record, start = self.window(index)
        signal = self.store.signal(record, start=start, stop=start + self.size)[self.channels(record)]  # [C, T]
        item = {"signal": torch.from_numpy(signal), "lead_ids": self.lead_ids, "record": record, "start": start,
                "n_inputs": len(self.input_leads), "patch_size": self.patch_size}
        if self.noise is not None:
            targets = signal[len(self.input_leads):]  # [C_out, T]
            noisy = corrupt(targets, self.store.recipe.target_fs, self.noise, self.noise_rng(index, record))
            item["corrupted"] = torch.from_numpy(noisy)  # [C_out, T]
        return item


def collate_leadgen(items: list[dict]) -> dict[str, Tensor]:
    """`x`, `targets [B, C_out, T]`, and the token form of the same windows: `patches [B, L, P, S]`,
    `lead_ids [B, L]`, `pad_mask [B, L, P]` (all False), `token_mask [B, L, P]`, `record [B]`, `start [B]`.

    Missing targets: `x [B, C_in, T]`, target rows of `patches` zeroed and True in `token_mask`.
    Noise-corrupted targets (items with "corrupted"): `x [B, C_in + C_out, T]` (inputs, then the
    corrupted targets), target rows of `patches` corrupted, `token_mask` all False, and
    `corrupted [B, C_out, T]`.
    """
    signal = torch.stack([item["signal"] for item in items])  # [B, L, T]
    n_inputs, size = items[0]["n_inputs"], items[0]["patch_size"]
    B, L, T = signal.shape
    patches = signal.reshape(B, L, T // size, size).clone()  # [B, L, P, S]
    token_mask = torch.zeros(B, L, T // size, dtype=torch.bool)
    extra = {}
    if "corrupted" in items[0]:
        corrupted = torch.stack([item["corrupted"] for item in items])  # [B, C_out, T]
        patches[:, n_inputs:] = corrupted.reshape(B, L - n_inputs, T // size, size)
        x = torch.cat([signal[:, :n_inputs], corrupted], dim=1)  # [B, C_in + C_out, T]
        extra["corrupted"] = corrupted
    else:
        patches[:, n_inputs:] = 0.0
        token_mask[:, n_inputs:] = True
        x = signal[:, :n_inputs]  # [B, C_in, T]
    return {
        "x": x, "targets": signal[:, n_inputs:],
        "patches": patches, "lead_ids": torch.stack([item["lead_ids"] for item in items]),
        "pad_mask": torch.zeros(B, L, T // size, dtype=torch.bool), "token_mask": token_mask,
        "record": torch.tensor([item["record"] for item in items]), "start": torch.tensor([item["start"] for item in items]),
        **extra,
    }


class AnyECGLeadGenerator(BackboneWithHead):
    """Masked-lead generation with the AnyECG backbone: the target leads' tokens are the mask token
    (missing leads) or the corrupted leads' own tokens (noise), a linear head turns each contextual
    target token [D] into its patch [S].

    `linear_probe=True` freezes the backbone (and keeps it in eval mode): only the head trains.
    """

    def __init__(self, backbone: Backbone, n_targets: int, *, linear_probe: bool = False):
        super().__init__(backbone, backbone.config.patch_size, linear_probe=linear_probe)
        self.n_targets = n_targets

    def generate(self, batch: dict) -> Tensor:
        """Reconstructed target leads [B, C_out, T] of a `collate_leadgen` batch."""
        patches = batch["patches"]  # [B, L, P, S]
        B, L, P, S = patches.shape
        if L <= self.n_targets:
            raise ValueError(f"{L} leads in the batch, but {self.n_targets} targets need at least one input lead besides")
        features = self.backbone.forward_features(patches, batch["lead_ids"], batch["pad_mask"], batch["token_mask"])
        targets = features.view(B, L, P, -1)[:, L - self.n_targets:]  # [B, C_out, P, D], lead-major tokens
        return self.head(targets).reshape(B, self.n_targets, P * S)  # [B, C_out, T]

    def forward(self, batch: dict) -> LeadGenOutput:
        generated = self.generate(batch)  # [B, C_out, T]
        error = generated.float() - batch["targets"].float()
        return LeadGenOutput(loss=error.square().mean(), mae=error.abs().mean().detach(), generated=generated)


def _stack(dataset: LeadGenWindows) -> dict[str, Tensor]:
    return collate_leadgen([dataset[i] for i in range(len(dataset))])


def _linear_model(config: LeadGenFinetuneConfig, fs: float) -> LinearLeadGenerator:
    return LinearLeadGenerator(LeadGenConfig(fs=fs, window_s=config.window_s, leads=config.model_leads,
                                             target_leads=config.target_leads))


def fit_linear(store: Store, rows: np.ndarray, config: LeadGenFinetuneConfig) -> tuple[LinearLeadGenerator, int]:
    """(least-squares linear generator fitted on every full window of `rows`, number of windows);
    with "noise", on one fixed corruption of each window."""
    windows = LeadGenWindows(store, rows, config.input_leads, config.target_leads, window_s=config.window_s,
                             random_crop=False, noise=config.noise)
    if len(windows) == 0:
        raise ValueError(f"{store.root}: no full {config.window_s} s windows to fit the linear generator on")
    batch = _stack(windows)
    model = _linear_model(config, store.recipe.target_fs).fit(batch["x"].numpy(), batch["targets"].numpy())
    return model.eval(), len(windows)


def _batches(dataset: LeadGenWindows, batch_size: int, seed: int):
    """Endless (x, targets) batches: each epoch a fresh crop of every record, in a seeded shuffled
    order, the last incomplete batch dropped."""
    order = torch.Generator().manual_seed(seed)
    for epoch in itertools.count():
        dataset.set_epoch(epoch)
        indices = torch.randperm(len(dataset), generator=order).tolist()
        for start in range(0, len(indices) - batch_size + 1, batch_size):
            batch = collate_leadgen([dataset[i] for i in indices[start : start + batch_size]])
            yield batch["x"], batch["targets"]


def train_gan(gan_config: LeadGenGANConfig, dataset: LeadGenWindows, config: LeadGenFinetuneConfig, seed: int,
              run: Path) -> LeadGenGAN:
    """A LeadGenGAN, returned on the CPU, after `config.steps` GanTrainer steps (each: n_critic critic
    updates, one generator update) on random-crop batches of `dataset` at `config.lr`, trained on a
    GPU when one is present. Every step's losses go to `run/metrics.jsonl`."""
    torch.manual_seed(seed)  # weights and the gradient-penalty draws
    model = LeadGenGAN(gan_config).to("cuda" if torch.cuda.is_available() else "cpu")
    trainer = GanTrainer(model, GanTrainConfig(lr=config.lr))
    history: list[GanStepOutput] = trainer.fit(_batches(dataset, min(config.batch_size, len(dataset)), seed),
                                               config.steps)
    run.mkdir(parents=True, exist_ok=True)
    (run / LOG).write_text("".join(json.dumps({"step": step, **asdict(losses)}) + "\n"
                                   for step, losses in enumerate(history, start=1)))
    return model.cpu().eval()


def finetune_leadgen(data: str | Path, out: str | Path, config: LeadGenFinetuneConfig) -> dict:
    """Train on the train split (per seed for AnyECG and the GANs), evaluate each model on the test split;
    `out/seed-K/final` holds each model, `out/summary.json` the mean +/- std over seeds."""
    store, out = Store(data), Path(out)
    train_rows = eligible_records(store, config.input_leads, config.target_leads, config.window_s, "train")
    test_rows = eligible_records(store, config.input_leads, config.target_leads, config.window_s, "test")
    if len(train_rows.rows) == 0 or len(test_rows.rows) == 0:
        raise ValueError(
            f"{store.root}: leads {list(config.input_leads)} -> {list(config.target_leads)} need train and test records "
            f"with all of them; found {len(train_rows.rows)} train (excluded {train_rows.excluded}) and "
            f"{len(test_rows.rows)} test (excluded {test_rows.excluded})"
        )
    base_config = {"family": "finetuned", "task": "leadgen", "input_leads": list(config.input_leads),
                   "target_leads": list(config.target_leads), "window_s": config.window_s,
                   "corruption": corruption_spec(config.noise),
                   "finetune": to_jsonable(asdict(config)), "train_records": int(len(train_rows.rows))}
    per_seed = []
    # the closed-form fit has no randomness: one model whatever the seed count
    for seed in range(1 if config.baseline == LINEAR else config.seeds):
        run = out / f"seed-{seed}"
        if config.baseline == LINEAR:
            model, n_windows = fit_linear(store, train_rows.rows, config)
            spec = {"kind": "baseline", "preset": LINEAR, "config": asdict(model.config)}
            save_checkpoint(run / FINAL, model.state_dict(), {**base_config, "model": spec, "train_windows": n_windows},
                            store.recipe.to_json())
        elif config.baseline in GANS:
            gan_config = baseline_config(config.baseline, fs=float(store.recipe.target_fs),
                                         window_s=float(config.window_s), leads=config.model_leads,
                                         target_leads=config.target_leads)
            dataset = LeadGenWindows(store, train_rows.rows, config.input_leads, config.target_leads,
                                     window_s=config.window_s, seed=seed, noise=config.noise)
            model = train_gan(gan_config, dataset, config, seed, run)
            # the generator is the model: the critic only shaped its training
            spec = {"kind": "baseline", "preset": config.baseline, "config": asdict(gan_config), "weights": "generator"}
            save_checkpoint(run / FINAL, model.generator.state_dict(), {**base_config, "model": spec},
                            store.recipe.to_json())
        else:
            pretrained = AnyECG.from_pretrained(config.model)
            if pretrained.backbone is None:
                raise ValueError(f"{config.model}: a tokenizer-only checkpoint; lead generation needs a stage-2 checkpoint")
            backbone = Backbone(pretrained.backbone.config) if config.random_init else pretrained.backbone
            model = AnyECGLeadGenerator(backbone, len(config.target_leads), linear_probe=config.linear_probe)
            spec = {"kind": "anyecg", "backbone": asdict(backbone.config), "linear_probe": config.linear_probe,
                    "random_init": config.random_init}
            dataset = LeadGenWindows(store, train_rows.rows, config.input_leads, config.target_leads,
                                     window_s=config.window_s, seed=seed, noise=config.noise)
            train_config = TrainConfig(max_steps=config.steps, batch_size=min(config.batch_size, len(dataset)),
                                       lr=config.lr, warmup_steps=max(1, config.steps // 10), save_every=config.steps,
                                       log_every=10, seed=seed)
            train(model, dataset, collate_leadgen, train_config, run, model_config={**base_config, "model": spec},
                  recipe_json=store.recipe.to_json())
        per_seed.append(evaluate_leadgen(run / FINAL, data, "test", run / "test"))
    summary = {
        "task": "leadgen", "input_leads": list(config.input_leads), "target_leads": list(config.target_leads),
        "model": config.baseline or "anyecg", "linear_probe": config.linear_probe, "random_init": config.random_init,
        "corruption": corruption_spec(config.noise),
        "train_records": int(len(train_rows.rows)), "test_records": int(len(test_rows.rows)),
        "excluded_train": train_rows.excluded, "excluded_test": test_rows.excluded,
        "seeds": len(per_seed), "metrics": mean_std_over_seeds(per_seed),
    }
    write_summary(out, summary)
    return summary


def load_leadgen(directory: str | Path):
    """(model, config) of a fine-tuned lead generation folder, strictly loaded; `config["recipe"]` is its Recipe."""
    config = load_finetuned_config(directory, ("leadgen",))
    spec = config["model"]
    if spec["kind"] == "baseline" and spec["preset"] in GANS:
        model = LeadGenGAN(LeadGenGANConfig(**spec["config"]))
        load_state_dict_strict(model.generator, directory)  # the critic is not saved
    else:
        if spec["kind"] == "baseline":
            model = LinearLeadGenerator(LeadGenConfig(**spec["config"]))
        else:
            model = AnyECGLeadGenerator(Backbone(BackboneConfig(**spec["backbone"])), len(config["target_leads"]))
        load_state_dict_strict(model, directory)
    return model.eval(), config


@torch.no_grad()
def predict_leadgen(model: nn.Module, dataset: LeadGenWindows,
                    batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(targets, reconstructions, corrupted targets or None without noise), float32 [N, C_out, T]
    each, in the store's normalised units."""
    model.eval()
    targets, generated, corrupted = [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate_leadgen([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        out = model.generate(batch) if isinstance(model, AnyECGLeadGenerator) else model(batch["x"])  # [B, C_out, T]
        targets.append(batch["targets"].numpy())
        generated.append(out.float().numpy())
        if "corrupted" in batch:
            corrupted.append(batch["corrupted"].numpy())
    return np.concatenate(targets), np.concatenate(generated), np.concatenate(corrupted) if corrupted else None


def _to_mv(store: Store, dataset: LeadGenWindows, signals: np.ndarray) -> np.ndarray:
    """Undo each window's target-lead normalisation: [N, C_out, T] normalised -> mV."""
    out = np.empty_like(signals)
    n_inputs = len(dataset.input_leads)
    for i in range(len(signals)):
        record, _ = dataset.window(i)
        channels = dataset.channels(record)[n_inputs:]
        row = store.manifest.iloc[record]
        offset = np.asarray(row["norm_offset"], dtype=np.float32)[channels, None]  # [C_out, 1]
        scale = np.asarray(row["norm_scale"], dtype=np.float32)[channels, None]  # [C_out, 1]
        out[i] = signals[i] * scale + offset
    return out


def _scores(store: Store, dataset: LeadGenWindows, target: np.ndarray, pred: np.ndarray, leads) -> dict:
    """leadgen_metrics of pred against target [N, C_out, T] (normalised), plus the MAE in mV."""
    metrics = leadgen_metrics(target, pred, leads)
    error_mv = np.abs(_to_mv(store, dataset, target).astype(np.float64) - _to_mv(store, dataset, pred))  # [N, C_out, T]
    metrics["mae_mv"] = float(error_mv.mean())
    for j, lead in enumerate(leads):
        metrics["per_lead"][lead]["mae_mv"] = float(error_mv[:, j].mean())
    return metrics


def evaluate_leadgen(model_dir: str | Path, data: str | Path, split: str, out: str | Path) -> dict:
    """Score a fine-tuned lead generator on every full window of `split`: metrics.json (PSNR, SSIM,
    MAE in normalised units, MAE in mV, per lead; with noise also `corrupted_input`, the same scores
    of the corrupted leads left as they are), predictions.npz, reconstructions.png (mV)."""
    model, config = load_leadgen(model_dir)
    store, out = Store(data), Path(out)
    if store.recipe.target_fs != config["recipe"].target_fs:
        raise ValueError(f"{store.root}: store rate {store.recipe.target_fs} Hz differs from the model's "
                         f"{config['recipe'].target_fs} Hz")
    inputs, targets_, window_s = config["input_leads"], config["target_leads"], config["window_s"]
    eligible = eligible_records(store, inputs, targets_, window_s, split)
    if len(eligible.rows) == 0:
        raise ValueError(f"{store.root}: no records of split {split!r} with leads {inputs + targets_} "
                         f"(excluded {eligible.excluded})")
    noise = noise_from_spec(config.get("corruption"))
    dataset = LeadGenWindows(store, eligible.rows, inputs, targets_, window_s=window_s, random_crop=False, noise=noise)
    target, pred, corrupted = predict_leadgen(model, dataset)  # [N, C_out, T] normalised
    metrics = _scores(store, dataset, target, pred, targets_)
    extra = {}
    if corrupted is not None:  # the identity baseline: how far the corrupted leads are from the clean ones
        metrics["corrupted_input"] = _scores(store, dataset, target, corrupted, targets_)
        extra["corrupted"] = corrupted
    metrics.update(units=f"store-normalised ({store.recipe.normalization} per record and lead); mae_mv in mV",
                   split=split, input_leads=list(inputs), target_leads=list(targets_),
                   corruption="missing" if noise is None else noise.describe(),
                   n_records=int(len(eligible.rows)), n_windows=int(len(dataset)), excluded=eligible.excluded)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(to_jsonable(metrics), indent=2))
    windows = np.array([dataset.window(i) for i in range(len(dataset))], dtype=np.int64)  # [N, 2]
    np.savez_compressed(out / "predictions.npz", target=target, pred=pred, **extra,
                        record_id=store.manifest["record_id"].to_numpy()[windows[:, 0]].astype(str), start=windows[:, 1])
    target_mv, pred_mv = _to_mv(store, dataset, target), _to_mv(store, dataset, pred)
    plot_reconstructions(target_mv, pred_mv, targets_, store.recipe.target_fs, out / "reconstructions.png",
                         n=config["finetune"].get("plot_examples", 3),
                         title=f"{'+'.join(inputs)} -> {'+'.join(targets_)} ({split})")
    return metrics
