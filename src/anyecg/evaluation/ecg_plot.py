"""ECGs drawn the way clinicians read them: on standard grid paper.

Paper speed 25 mm/s and gain 10 mm/mV: a small square (1 mm) is 0.04 s by 0.1 mV, a large square
(5 mm) 0.2 s by 0.5 mV. Figures are sized in real millimetres, so a printout at 100% is to scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MM_PER_S = 25.0
MM_PER_MV = 10.0
MM_PER_INCH = 25.4
ROW_HEIGHT_MM = 30.0  # 3 mV of room per lead
GRID_MINOR = "#f6c5c5"
GRID_MAJOR = "#e48b8b"


def plot_ecg(
    signal: np.ndarray,
    fs: float,
    leads: list[str],
    path: str | Path,
    *,
    seconds: float = 10.0,
    start_s: float = 0.0,
    title: str = "",
) -> Path:
    """Draw `signal` [leads, samples] (mV) from `start_s`, at most `seconds`, one row per lead, to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 2 or signal.shape[0] != len(leads):
        raise ValueError(f"signal shape {signal.shape} does not match {len(leads)} lead names")
    first = int(round(start_s * fs))
    window = signal[:, first : first + int(round(seconds * fs))]  # [L, n]
    if window.shape[1] == 0:
        raise ValueError(f"nothing to draw: start {start_s} s is past the end ({signal.shape[1] / fs:.1f} s)")
    n_leads, n = window.shape
    width_mm = n / fs * MM_PER_S
    height_mm = n_leads * ROW_HEIGHT_MM
    margin_mm = 12.0

    fig = plt.figure(figsize=((width_mm + 2 * margin_mm) / MM_PER_INCH, (height_mm + 2 * margin_mm) / MM_PER_INCH))
    ax = fig.add_axes((
        margin_mm / (width_mm + 2 * margin_mm), margin_mm / (height_mm + 2 * margin_mm),
        width_mm / (width_mm + 2 * margin_mm), height_mm / (height_mm + 2 * margin_mm),
    ))
    ax.set_xlim(0, width_mm)
    ax.set_ylim(0, height_mm)
    for x in np.arange(0, width_mm + 1e-6, 1.0):
        ax.axvline(x, color=GRID_MAJOR if round(x) % 5 == 0 else GRID_MINOR, lw=0.6 if round(x) % 5 == 0 else 0.25, zorder=0)
    for y in np.arange(0, height_mm + 1e-6, 1.0):
        ax.axhline(y, color=GRID_MAJOR if round(y) % 5 == 0 else GRID_MINOR, lw=0.6 if round(y) % 5 == 0 else 0.25, zorder=0)

    t_mm = np.arange(n) / fs * MM_PER_S
    for row, (lead, trace) in enumerate(zip(leads, window)):
        baseline = height_mm - (row + 0.5) * ROW_HEIGHT_MM
        centred = trace - np.median(trace)  # baseline wander is not drawn as an offset
        ax.plot(t_mm, baseline + centred * MM_PER_MV, color="black", lw=0.6, zorder=2)
        ax.text(1.0, baseline + 0.3 * ROW_HEIGHT_MM, lead, fontsize=8, zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])
    caption = f"{MM_PER_S:g} mm/s, {MM_PER_MV:g} mm/mV, {fs:g} Hz, from {start_s:g} s"
    fig.text(margin_mm / (width_mm + 2 * margin_mm), 0.3 * margin_mm / (height_mm + 2 * margin_mm),
             f"{title}  {caption}".strip(), fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
