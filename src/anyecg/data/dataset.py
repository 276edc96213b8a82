"""Model-ready windows from a prepared store: 1-second patch tokens with padding masks.

Each item is one window of a record: all its leads, at most `max_seconds(L)` seconds so that the
(lead, second) tokens fit the token budget (1024 in the paper). Training takes a random window per
record per epoch; evaluation tiles each record with consecutive windows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from anyecg.data.store import Store
from anyecg.signal.leads import lead_ids
from anyecg.signal.patching import max_seconds_for_budget, patchify

SEX_CODE = {"M": 0, "F": 1}


@dataclass
class WindowRef:
    record: int  # row of the store manifest
    start: int  # first sample of the window
    stop: int


class StoreWindows(Dataset):
    """Windows of the records of one split (or all) of a store, or of the manifest rows `rows`.

    `random_crop=True` (training): one window per record, a fresh random start each time it is read.
    `random_crop=False` (evaluation): every record tiled into consecutive windows, the last one shorter.
    `lead_subset_prob` (training): the chance that a multi-lead window keeps only a random proper
    subset of its leads, k of L with P(k) proportional to 1/k, so that a corpus of 12-lead records
    also teaches the few-lead and single-lead inputs that rhythm recordings bring.
    """

    def __init__(
        self,
        store: Store,
        split: str | None = None,
        *,
        token_budget: int = 1024,
        max_window_s: int | None = None,
        random_crop: bool = True,
        seed: int = 0,
        rows: np.ndarray | None = None,
        lead_subset_prob: float = 0.0,
    ):
        if not 0 <= lead_subset_prob <= 1:
            raise ValueError(f"lead_subset_prob must lie in [0, 1], got {lead_subset_prob}")
        if lead_subset_prob and not random_crop:
            raise ValueError("lead subsets are a training augmentation: they need random_crop=True")
        self.store = store
        self.lead_subset_prob = lead_subset_prob
        self.token_budget = token_budget
        self.patch_size = store.recipe.patch_size
        rows = np.arange(len(store.manifest)) if rows is None else np.asarray(rows, dtype=np.int64)
        if split is not None:
            rows = rows[store.manifest["split"].to_numpy()[rows] == split]
        self.rows = rows
        self.random_crop = random_crop
        self.max_window_s = max_window_s
        self.seed = seed
        self.epoch = 0
        self.windows = [w for r in rows for w in self._tiles(int(r), max_window_s)] if not random_crop else []

    def _window_samples(self, record: int, max_window_s: int | None) -> int:
        seconds = max_seconds_for_budget(self.store.n_leads(record), self.token_budget)
        if max_window_s is not None:
            seconds = min(seconds, max_window_s)
        return seconds * self.patch_size

    def _tiles(self, record: int, max_window_s: int | None) -> list[WindowRef]:
        length = self.store.n_samples(record)
        size = self._window_samples(record, max_window_s)
        return [WindowRef(record, start, min(start + size, length)) for start in range(0, length, size)]

    def group_keys(self) -> np.ndarray:
        """int [len(self)]: the lead count of each item, so a sampler can batch like with like."""
        leads = self.store.manifest["n_leads"].to_numpy()
        records = self.rows if self.random_crop else np.array([w.record for w in self.windows], dtype=np.int64)
        return leads[records]

    def set_epoch(self, epoch: int) -> None:
        """Crops are a function of (seed, epoch, index): reproducible, resumable, and worker-safe."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows) if self.random_crop else len(self.windows)

    def window(self, index: int) -> WindowRef:
        if not self.random_crop:
            return self.windows[index]
        record = int(self.rows[index])
        length = self.store.n_samples(record)
        size = self._window_samples(record, self.max_window_s)
        # start on a patch boundary so tokens line up with whole seconds of the record
        n_starts = max(0, (length - size) // self.patch_size) + 1
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start = int(rng.integers(n_starts)) * self.patch_size
        return WindowRef(record, start, min(start + size, length))

    def lead_subset(self, index: int, n_leads: int) -> np.ndarray | None:
        """Sorted indices of the leads item `index` keeps this epoch, or None for all of them."""
        if self.lead_subset_prob == 0 or n_leads < 2:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index, 1])  # a stream apart from the crop's
        if rng.random() >= self.lead_subset_prob:
            return None
        sizes = np.arange(1, n_leads)
        k = int(rng.choice(sizes, p=(1 / sizes) / (1 / sizes).sum()))
        return np.sort(rng.choice(n_leads, k, replace=False))

    def __getitem__(self, index: int) -> dict:
        ref = self.window(index)
        signal = self.store.signal(ref.record, start=ref.start, stop=ref.stop)  # [L, T]
        ids = lead_ids(self.store.leads(ref.record))  # [L]
        keep = self.lead_subset(index, len(ids))
        if keep is not None:
            signal, ids = signal[keep], ids[keep]  # [k, T], [k]
        patches, is_padded = patchify(signal, self.patch_size)  # [L, P, S], [L, P]
        age = self.store.age(ref.record)
        return {
            "patches": torch.from_numpy(patches),
            "padded_tail": torch.from_numpy(is_padded),
            "lead_ids": torch.from_numpy(ids),
            "age": math.nan if age is None else age,
            "sex": SEX_CODE.get(self.store.sex(ref.record), -1),
            "record": ref.record,
            "start": ref.start,
        }


def collate_windows(items: list[dict], token_budget: int = 1024) -> dict[str, torch.Tensor]:
    """Pad a list of windows to the batch's largest lead count and patch count.

    Windows with few leads may be long (a 2-lead window holds 512 s of the budget); batched with
    12-lead windows they are cut to the seconds that fit the budget at the batch's lead count.

    Returns `patches [B, L, P, S]`, `lead_ids [B, L]`, `pad_mask [B, L, P]` (True where the token is
    padding: an absent lead or a second past the window's end), `partial [B, L, P]` (True for a
    last patch shorter than one second, zero-filled after the record's end), `age [B]`, `has_age [B]`,
    `sex [B]`, `has_sex [B]`, `record [B]`, `start [B]`.
    """
    batch = len(items)
    n_leads = max(item["patches"].shape[0] for item in items)
    n_patches = min(max(item["patches"].shape[1] for item in items), token_budget // n_leads)
    size = items[0]["patches"].shape[2]
    patches = torch.zeros(batch, n_leads, n_patches, size)
    ids = torch.zeros(batch, n_leads, dtype=torch.long)
    pad_mask = torch.ones(batch, n_leads, n_patches, dtype=torch.bool)
    partial = torch.zeros(batch, n_leads, n_patches, dtype=torch.bool)
    for b, item in enumerate(items):
        L, P = item["patches"].shape[0], min(item["patches"].shape[1], n_patches)
        patches[b, :L, :P] = item["patches"][:, :P]
        ids[b, :L] = item["lead_ids"]
        pad_mask[b, :L, :P] = False
        partial[b, :L, :P] = item["padded_tail"][:, :P]
    age = torch.tensor([item["age"] for item in items], dtype=torch.float32)
    sex = torch.tensor([item["sex"] for item in items], dtype=torch.long)
    return {
        "patches": patches,
        "lead_ids": ids,
        "pad_mask": pad_mask,
        "partial": partial,
        "age": torch.nan_to_num(age, nan=0.0),
        "has_age": ~torch.isnan(age),
        "sex": sex.clamp(min=0),
        "has_sex": sex >= 0,
        "record": torch.tensor([item["record"] for item in items]),
        "start": torch.tensor([item["start"] for item in items]),
    }
