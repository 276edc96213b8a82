"""Is a tokenizer (and its masked-code backbone) healthy? Figures that usage and perplexity can hide.

    health = tokenizer_health(AnyECG.from_pretrained(), Store("store/"))

Measured on the store's val + test records, tiled into 10 s windows, against baselines fitted on
the train split:
- codebook usage and perplexity of the held-out tokens, and the mean cosine between pre-quantisation
  encoder outputs (near 1: the encoder collapsed, whatever usage says, because restarts can refill
  the codebook with near-identical vectors);
- morphology reconstruction MSE (z-scored units) against predicting zeros, the mean train patch,
  PCA with `code_dim` components and k-means with the same number of codes, all fitted on train
  patches: a tokenizer should beat k-means, which has exactly its discrete budget;
- code stability: the share of patches whose code stays the same when the recording is shifted by
  0.1 s (a rhythm code should not be a beat-position code), against the same share for k-means with
  the same K on the raw patches and on their spectral magnitudes (|rFFT|, blind to where a beat sits);
  beside it the mean squared difference between a patch and its shifted copy: a code unchanged by the
  shift makes the decoder give both the same patch, so its MSE over the pair is at least a quarter of
  that difference, which is how far shift stability and sample reconstruction pull apart;
- masked-code accuracy of the backbone against three trivial guesses on the same masked tokens: the
  most frequent train code, the code of the same second in another unmasked lead, and the code of
  the neighbouring unmasked second of the same lead (each falls back to the most frequent code when
  there is nothing to copy).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from anyecg.data.dataset import StoreWindows
from anyecg.data.store import Store
from anyecg.evaluation.tokenizer_report import code_perplexity, window_batches
from anyecg.models.backbone import random_token_mask
from anyecg.pretrained import AnyECG
from anyecg.training.loop import to_device

SHIFT_S = 0.1


def copy_code_guesses(codes: Tensor, pad_mask: Tensor, token_mask: Tensor, fallback: int) -> tuple[Tensor, Tensor]:
    """Two trivial guesses of every token's code from the tokens left visible.

    codes [B, L, P] long; pad_mask, token_mask [B, L, P] bool (True = padding / masked).
    Returns (other_lead, neighbour), each [B, L, P] long:
    - other_lead: the code of the same second in the first visible other lead;
    - neighbour: the code of the previous visible second of the same lead, else the next one;
    `fallback` where there is nothing visible to copy.
    """
    visible = ~pad_mask & ~token_mask  # [B, L, P]
    B, L, P = codes.shape
    other_lead = torch.full_like(codes, fallback)
    for lead in range(L):
        # the first visible lead other than `lead` at each (b, p): argmax finds the first True
        candidates = visible.clone()
        candidates[:, lead] = False
        has = candidates.any(dim=1)  # [B, P]
        first = candidates.float().argmax(dim=1)  # [B, P]
        copied = codes.gather(1, first[:, None]).squeeze(1)  # [B, P]
        other_lead[:, lead] = torch.where(has, copied, fallback)

    neighbour = torch.full_like(codes, fallback)
    previous_ok = torch.zeros_like(visible)
    previous_ok[..., 1:] = visible[..., :-1]
    next_ok = torch.zeros_like(visible)
    next_ok[..., :-1] = visible[..., 1:]
    previous = torch.roll(codes, 1, dims=-1)
    following = torch.roll(codes, -1, dims=-1)
    neighbour = torch.where(next_ok, following, neighbour)
    neighbour = torch.where(previous_ok, previous, neighbour)  # the previous second wins when both exist
    return other_lead, neighbour


def shifted_patches(patches: Tensor, pad_mask: Tensor, shift: int) -> tuple[Tensor, Tensor]:
    """The same window started `shift` samples later: [B, L, P, S] -> [B, L, P-1, S], and the
    padding mask of the shifted patches (a shifted patch is real only if both patches it overlaps are)."""
    B, L, P, S = patches.shape
    if not 0 < shift < S:
        raise ValueError(f"shift must lie in (0, {S}) samples, got {shift}")
    flat = patches.reshape(B, L, P * S)[..., shift : shift + (P - 1) * S]  # [B, L, (P-1) S]
    pad = pad_mask[..., :-1] | pad_mask[..., 1:]  # [B, L, P-1]
    return flat.reshape(B, L, P - 1, S), pad


def mean_pairwise_cosine(vectors: Tensor) -> float:
    """Mean cosine similarity between distinct rows of vectors [n, d] (n >= 2)."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)
    n = unit.shape[0]
    total = unit.sum(dim=0)
    # sum over i != j of u_i . u_j = |sum u|^2 - sum |u_i|^2
    return float((total @ total - (unit * unit).sum()) / (n * (n - 1)))


def fit_kmeans(train: np.ndarray, n_codes: int, seed: int):
    """k-means with (at most) `n_codes` centroids on the rows of `train` [m, F], as the baselines fit it."""
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(n_clusters=min(n_codes, len(train)), random_state=seed, n_init=1, batch_size=4096,
                           max_iter=50).fit(train)


def spectral_magnitudes(patches: np.ndarray) -> np.ndarray:
    """|rFFT| of each patch [n, S] -> [n, S // 2 + 1]: the same for a patch and its circular shifts."""
    return np.abs(np.fft.rfft(patches, axis=-1))


def patch_baselines(train: np.ndarray, held_out: np.ndarray, n_codes: int, n_components: int, seed: int = 0,
                    shift_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """Held-out patch MSE [n, S] of trivial and classical predictors fitted on train patches [m, S];
    with `shift_pairs` (held-out patches [k, S] and the same patches 0.1 s later [k, S]), the shift
    references of the module docstring."""
    from sklearn.decomposition import PCA

    kmeans = fit_kmeans(train, n_codes, seed)
    nearest = kmeans.cluster_centers_[kmeans.predict(held_out)]
    pca = PCA(n_components=min(n_components, train.shape[1]), random_state=seed).fit(train)
    projected = pca.inverse_transform(pca.transform(held_out))
    figures = {
        "zero_mse": float((held_out**2).mean()),
        "mean_patch_mse": float(((held_out - train.mean(axis=0)) ** 2).mean()),
        "kmeans_mse": float(((held_out - nearest) ** 2).mean()),
        "pca_mse": float(((held_out - projected) ** 2).mean()),
    }
    if shift_pairs is not None:
        original, moved = shift_pairs
        spectral = fit_kmeans(spectral_magnitudes(train), n_codes, seed)
        spectral_codes = [spectral.predict(spectral_magnitudes(patches)) for patches in (original, moved)]
        figures.update({
            "shifted_patch_mse": float(((original - moved) ** 2).mean()),
            "kmeans_codes_unchanged_by_0.1s_shift": float((kmeans.predict(original) == kmeans.predict(moved)).mean()),
            "spectral_kmeans_codes_unchanged_by_0.1s_shift": float((spectral_codes[0] == spectral_codes[1]).mean()),
        })
    return figures


@torch.no_grad()
def split_rows(store: Store, splits: tuple[str, ...], max_records: int | None, seed: int) -> np.ndarray:
    """Manifest rows of `splits`, split by split, at most `max_records` of them (a seeded draw, order kept)."""
    split = store.manifest["split"].to_numpy()
    rows = np.concatenate([np.flatnonzero(split == name) for name in splits])
    if max_records is not None and len(rows) > max_records:
        rows = rows[np.isin(rows, np.random.default_rng(seed).choice(rows, max_records, replace=False))]
    return rows


def tokenizer_health(model: AnyECG, store: Store, *, seed: int = 0, max_train_patches: int = 20_000,
                     max_cosine_tokens: int = 4_000, max_records: int | None = None,
                     baselines: dict[str, float] | None = None) -> dict:
    """The figures of the module docstring, on the store's val + test records (see there).

    `max_records` caps the held-out and the train records read (a seeded draw of each), for figures
    taken every few hundred training steps; `baselines`, the reconstruction baselines of an earlier
    call on the same records, skips refitting them (they do not depend on the model)."""
    tokenizer, backbone = model.tokenizer, model.backbone
    device = next(tokenizer.parameters()).device
    K, S = tokenizer.config.num_codes, tokenizer.config.patch_size
    held_out_rows = split_rows(store, ("val", "test"), max_records, seed)
    if len(held_out_rows) == 0:
        raise ValueError(f"{store.root}: no val or test records to measure on")
    held_out = StoreWindows(store, random_crop=False, max_window_s=10, rows=held_out_rows)
    train_rows = split_rows(store, ("train",), max_records, seed)
    rng = np.random.default_rng(seed)

    train_counts = np.zeros(K, dtype=np.int64)
    train_patches = []
    for batch in window_batches(StoreWindows(store, random_crop=False, max_window_s=10, rows=train_rows)):
        train_patches.append(batch["patches"][~batch["pad_mask"]].numpy())  # [n, S]
        batch = to_device(batch, device)
        codes = tokenizer.encode(batch["patches"], batch["lead_ids"], batch["pad_mask"])  # [B, L, P]
        train_counts += np.bincount(codes[codes >= 0].cpu().numpy(), minlength=K)
    if not train_patches:
        raise ValueError(f"{store.root}: no train records to fit the baselines on")
    train_patches = np.concatenate(train_patches)
    if len(train_patches) > max_train_patches:
        train_patches = train_patches[rng.choice(len(train_patches), max_train_patches, replace=False)]
    most_frequent = int(train_counts.argmax())

    counts = np.zeros(K, dtype=np.int64)
    fit_baselines = not baselines  # the held-out patches are kept only to fit them
    held_patches, encoder_out, shift_pairs = [], [], []
    sq_error = 0.0
    stable = shifted = 0
    scored = 0
    correct = {"backbone": 0, "most_frequent": 0, "other_lead": 0, "neighbour": 0}
    generator = torch.Generator(device).manual_seed(seed)
    for batch in window_batches(held_out):
        batch = to_device(batch, device)
        patches, lead_ids, pad = batch["patches"], batch["lead_ids"], batch["pad_mask"]
        valid = ~pad  # [B, L, P]
        out = tokenizer(batch)
        codes = out.indices  # [B, L, P]
        counts += np.bincount(codes[valid].cpu().numpy(), minlength=K)
        sq_error += float(((out.reconstruction - patches) ** 2)[valid].sum())
        if fit_baselines:
            held_patches.append(patches[valid].cpu().numpy())
        encoder_out.append(out.encoded[valid.flatten(1)])  # [n, d_c]

        if patches.shape[2] > 1:
            moved, moved_pad = shifted_patches(patches, pad, round(SHIFT_S * tokenizer.config.patch_size))
            moved_codes = tokenizer.encode(moved, lead_ids, moved_pad)  # [B, L, P-1]
            both = ~moved_pad
            stable += int((moved_codes == codes[..., :-1])[both].sum())
            shifted += int(both.sum())
            if fit_baselines:
                shift_pairs.append((patches[..., :-1, :][both].cpu().numpy(), moved[both].cpu().numpy()))

        if backbone is not None:
            mask = random_token_mask(pad, backbone.config.mask_ratio, generator)  # [B, L, P]
            features = backbone.forward_features(patches, lead_ids, pad, mask)  # [B, N, D]
            predicted = backbone.forward_head(features).argmax(-1).view(pad.shape)  # [B, L, P]
            other_lead, neighbour = copy_code_guesses(codes, pad, mask, most_frequent)
            target = codes[mask]
            correct["backbone"] += int((predicted[mask] == target).sum())
            correct["most_frequent"] += int((target == most_frequent).sum())
            correct["other_lead"] += int((other_lead[mask] == target).sum())
            correct["neighbour"] += int((neighbour[mask] == target).sum())
            scored += int(mask.sum())

    n_tokens = int(counts.sum())
    encoder_out = torch.cat(encoder_out).cpu()
    if len(encoder_out) > max_cosine_tokens:
        encoder_out = encoder_out[torch.from_numpy(rng.choice(len(encoder_out), max_cosine_tokens, replace=False))]
    if fit_baselines:
        # (patches, the same patches 0.1 s later), each [n, S]; none when every window is one second long
        shift_pairs = tuple(np.concatenate(side) for side in zip(*shift_pairs)) if shift_pairs else None
        baselines = patch_baselines(train_patches, np.concatenate(held_patches), K, tokenizer.config.code_dim, seed,
                                    shift_pairs)
    health = {
        "held_out_tokens": n_tokens,
        "codes": K,
        "code_usage": float((counts > 0).mean()),
        "code_perplexity": code_perplexity(counts),
        "code_perplexity_fraction": code_perplexity(counts) / K,
        "encoder_mean_cosine": mean_pairwise_cosine(encoder_out),
        "patch_mse": sq_error / max(n_tokens * S, 1),
        **baselines,
        "codes_unchanged_by_0.1s_shift": stable / max(shifted, 1),
    }
    if backbone is not None:
        accuracy = {name: value / max(scored, 1) for name, value in correct.items()}
        best_trivial = max(accuracy["most_frequent"], accuracy["other_lead"], accuracy["neighbour"])
        health.update({
            "masked_tokens_scored": scored,
            "masked_code_accuracy": accuracy["backbone"],
            "most_frequent_code_accuracy": accuracy["most_frequent"],
            "copy_other_lead_accuracy": accuracy["other_lead"],
            "copy_neighbour_accuracy": accuracy["neighbour"],
            "masked_code_accuracy_vs_best_trivial": accuracy["backbone"] / max(best_trivial, 1e-12),
        })
    return health
