"""Which samples of an ECG drove a prediction: integrated gradients, attention maps, and a plot.

`integrated_gradients` works with any differentiable model mapping a batch of inputs to outputs
(ECG-FM and ECGFounder on x [B, C, T], AnyECG on patches [B, L, P, S] through a closure that
fixes lead ids and padding). Attention maps come from models that expose `attention_maps`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def _select(outputs: Tensor, target: int | None) -> Tensor:
    """[n] scores: column `target` of outputs [n, K], or outputs [n] / [n, 1] when target is None."""
    if target is not None:
        if outputs.dim() != 2 or not 0 <= target < outputs.shape[1]:
            raise ValueError(f"target {target} is not a column of the model's outputs {tuple(outputs.shape)}")
        return outputs[:, target]
    if outputs.dim() == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    if outputs.dim() != 1:
        raise ValueError(f"model outputs {tuple(outputs.shape)} have several columns: pass target=")
    return outputs


def integrated_gradients(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    target: int | None = None,
    steps: int = 32,
    baseline: Tensor | None = None,
    batch_size: int = 16,
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017) of one output for one example x.

    attribution = (x - baseline) * mean over the straight path baseline -> x of d f / d x, the
    mean taken by the trapezoid rule on `steps` intervals. Completeness: attribution.sum() equals
    f(x) - f(baseline) up to the quadrature error, which shrinks as `steps` grows.

    model: maps a batch [n, *x.shape] to outputs [n, K] (or [n]); put it in eval mode first, as
      dropout would make the path random. Use a closure for extra inputs, e.g.
      `lambda b: ecgfm(b, lead_mask.expand(len(b), -1))`.
    x: one example without its batch axis, e.g. [C, T]; baseline: same shape (default zeros, a
      flat line). target: output column; None when the model returns one score per example.
    Returns a tensor shaped like x. Gradients of the model's parameters are not touched.

    Baselines and scale invariance: a model that normalises the scale of its input (ECG-FM's
    first GroupNorm, AnyECG's per-patch GroupNorm) is nearly constant along alpha * x except for
    alpha within ~1e-2 of 0, so from the all-zero baseline the whole change f(x) - f(0) happens
    there and a uniform quadrature misses it. Prefer a baseline with an ECG's scale (a reference
    recording, a blurred copy of x) and check `completeness_gap`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    baseline = torch.zeros_like(x) if baseline is None else baseline.to(x)
    if baseline.shape != x.shape:
        raise ValueError(f"baseline shape {tuple(baseline.shape)} differs from the input's {tuple(x.shape)}")
    delta = (x - baseline).detach()
    alphas = torch.linspace(0.0, 1.0, steps + 1, device=x.device, dtype=x.dtype)  # [steps + 1]
    weights = torch.full_like(alphas, 1.0 / steps)
    weights[0] = weights[-1] = 0.5 / steps  # trapezoid rule
    expand = (-1,) + (1,) * x.dim()
    mean_grad = torch.zeros_like(x)
    for alpha, weight in zip(alphas.split(batch_size), weights.split(batch_size)):
        points = (baseline.detach() + alpha.view(expand) * delta).requires_grad_(True)  # [n, *x.shape]
        with torch.enable_grad():
            scores = _select(model(points), target)  # [n]
            (grad,) = torch.autograd.grad(scores.sum(), points)
        mean_grad += (grad * weight.view(expand)).sum(dim=0)
    return delta * mean_grad


def completeness_gap(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    attribution: Tensor,
    target: int | None = None,
    baseline: Tensor | None = None,
) -> float:
    """(attribution.sum() - (f(x) - f(baseline))) / |f(x) - f(baseline)|: how far an attribution
    is from complete; a few percent means the path integral was resolved."""
    baseline = torch.zeros_like(x) if baseline is None else baseline.to(x)
    with torch.no_grad():
        scores = _select(model(torch.stack([x, baseline])), target)  # [2]
    difference = float(scores[0] - scores[1])
    return (float(attribution.sum()) - difference) / max(abs(difference), 1e-12)


def attention_maps(model: torch.nn.Module, x: Tensor, lead_mask: Tensor | None = None) -> list[Tensor]:
    """Attention weights [B, H, N, N] of each transformer layer of a model that exposes them (ECG-FM).

    Row i of a map is how query frame i spreads its attention over the N frames (it sums to 1).
    """
    if not hasattr(model, "attention_maps"):
        raise TypeError(f"{type(model).__name__} has no attention_maps(x, lead_mask); it is not a transformer encoder")
    return model.attention_maps(x, lead_mask)


def plot_saliency(
    signal: np.ndarray, fs: float, leads: list[str], attribution: np.ndarray, path: str | Path, *, title: str = ""
) -> Path:
    """Draw each lead of `signal` [C, T] coloured by its `attribution` [C, T] and save to `path`.

    Colours run from blue (negative: pushes the output down) through grey (0) to red (positive),
    one symmetric scale for the whole figure so leads compare. Absent (all-zero) leads are drawn flat.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    signal = np.asarray(signal, dtype=np.float32)
    attribution = np.asarray(attribution, dtype=np.float32)
    if signal.ndim != 2 or signal.shape[0] != len(leads):
        raise ValueError(f"signal shape {signal.shape} does not match {len(leads)} lead names {leads}")
    if attribution.shape != signal.shape:
        raise ValueError(f"attribution shape {attribution.shape} differs from the signal's {signal.shape}")
    n_leads, n = signal.shape
    t = np.arange(n) / fs
    scale = float(np.abs(attribution).max()) or 1.0
    norm = Normalize(-scale, scale)

    fig, axes = plt.subplots(n_leads, 1, sharex=True, figsize=(12, 0.8 * n_leads + 1.2), squeeze=False)
    for ax, lead, trace, weight in zip(axes[:, 0], leads, signal, attribution):
        points = np.stack([t, trace], axis=1)  # [T, 2]
        pieces = np.stack([points[:-1], points[1:]], axis=1)  # [T - 1, 2, 2] one segment per sample step
        line = LineCollection(pieces, cmap="coolwarm", norm=norm, linewidths=1.2)
        line.set_array(0.5 * (weight[:-1] + weight[1:]))
        ax.add_collection(line)
        low, high = float(trace.min()), float(trace.max())
        margin = 0.1 * (high - low) or 0.5
        ax.set_ylim(low - margin, high + margin)
        ax.set_ylabel(lead, rotation=0, ha="right", va="center")
        ax.set_yticks([])
    axes[-1, 0].set_xlim(0, t[-1] if n > 1 else 1.0)
    axes[-1, 0].set_xlabel("time (s)")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="coolwarm"), ax=axes[:, 0].tolist(), label="attribution")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
