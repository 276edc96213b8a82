"""Signal checks run on a freshly read record before it is stored or used.

A record that cannot be used at all raises `RecordError`: no samples, NaN/inf samples, a sampling
rate that is missing, non-positive or outside [MIN_FS, MAX_FS]. A single unusable lead is removed
instead, and reported in `meta["dropped_leads"]` as `{"lead": name, "reason": text, "index": row}` (row in
the record as read):

- flat: peak-to-peak below FLAT_PTP_MV (1 uV), e.g. a disconnected electrode;
- saturated: more than SATURATED_FRACTION of its samples sit at the lead's minimum or maximum,
  i.e. the amplifier was clipping most of the time.

If no lead is left the record raises. (Header/data length mismatches are raised by the readers.)
`StreamStats` gathers what these checks need from a record read chunk by chunk. Missing samples are
repaired before these checks by anyecg.io.gaps.
"""

from __future__ import annotations

import numpy as np

from anyecg.io.channels import keep_rows
from anyecg.io.gaps import Runs, append_runs, missing_runs
from anyecg.io.recording import RecordError, Recording

FLAT_PTP_MV = 1e-3
SATURATED_FRACTION = 0.5
MIN_FS = 25.0  # below this no ECG waveform (QRS ~ 100 ms) is representable
MAX_FS = 50_000.0  # above any ECG amplifier's rate; larger values are unit mistakes (e.g. per-minute)


def _lead_label(rec: Recording, index: int) -> str:
    raw = rec.raw_leads[index] if index < len(rec.raw_leads) else ""
    name = rec.leads[index] if index < len(rec.leads) else f"#{index}"
    return f"{name} ({raw!r}, index {index})" if raw and raw != name else f"{name} (index {index})"


def lead_problem(values: np.ndarray) -> str | None:
    """Why one lead (float [samples], finite) is unusable, or None."""
    low, high = float(values.min()), float(values.max())
    at_limits = int(np.count_nonzero(values == low) + np.count_nonzero(values == high))
    return range_problem(low, high, at_limits, values.size)


def range_problem(low: float, high: float, at_limits: int, n: int) -> str | None:
    """`lead_problem` from a lead's min, max, samples at either and sample count."""
    if high - low < FLAT_PTP_MV:
        return f"flat: peak-to-peak {(high - low) * 1000:.3g} uV < {FLAT_PTP_MV * 1000:g} uV"
    if at_limits > SATURATED_FRACTION * n:
        return f"saturated: {at_limits / n:.0%} of samples at the lead's min {low:.4g} or max {high:.4g} mV"
    return None


class StreamStats:
    """What `check_signal` and the gap policy need of a record read chunk by chunk: per lead the
    valid samples' min and max, how many sit at each, and the runs of missing samples."""

    def __init__(self, n_leads: int):
        self.low = np.full(n_leads, np.inf)
        self.high = np.full(n_leads, -np.inf)
        self.at_low = np.zeros(n_leads, np.int64)
        self.at_high = np.zeros(n_leads, np.int64)
        self.valid = np.zeros(n_leads, np.int64)
        self.missing: list[Runs] = [[] for _ in range(n_leads)]
        self.n_samples = 0

    def update(self, chunk: np.ndarray) -> None:
        """Add the next chunk, float [leads, n]."""
        for i, lead in enumerate(chunk):
            ok = np.isfinite(lead)
            values = lead
            if not ok.all():
                append_runs(self.missing[i], missing_runs(lead, self.n_samples))
                values = lead[ok]
            self.valid[i] += values.size
            if not values.size:
                continue
            low, high = values.min(), values.max()
            if low < self.low[i]:
                self.low[i], self.at_low[i] = low, 0
            if high > self.high[i]:
                self.high[i], self.at_high[i] = high, 0
            self.at_low[i] += np.count_nonzero(values == self.low[i])
            self.at_high[i] += np.count_nonzero(values == self.high[i])
        self.n_samples += chunk.shape[1]

    def problem(self, lead: int) -> str | None:
        if not self.valid[lead]:
            return None  # all missing: the gap policy reports it
        return range_problem(float(self.low[lead]), float(self.high[lead]),
                             int(self.at_low[lead] + self.at_high[lead]), int(self.valid[lead]))


def check_signal(rec: Recording) -> Recording:
    """The record, minus flat or saturated leads (listed in meta["dropped_leads"]); raises RecordError."""
    where = rec.source or rec.record_id
    fs = rec.fs
    if fs is None or not np.isfinite(fs) or fs <= 0:
        raise RecordError(where, f"sampling rate missing or not positive: {fs!r}")
    if not MIN_FS <= fs <= MAX_FS:
        raise RecordError(where, f"sampling rate {fs} Hz is outside the plausible range [{MIN_FS:g}, {MAX_FS:g}] Hz")
    signal = rec.signal
    if signal.ndim != 2:
        raise RecordError(where, f"signal must be [leads, samples], got shape {signal.shape}")
    if signal.shape[0] == 0 or signal.shape[1] == 0:
        raise RecordError(where, f"record has no samples (signal shape {signal.shape})")
    if len(rec.leads) != signal.shape[0]:
        raise RecordError(where, f"{len(rec.leads)} lead names for {signal.shape[0]} signal rows")
    finite = np.isfinite(signal)  # [L, T]
    if not finite.all():
        bad = [(i, int(signal.shape[1] - finite[i].sum())) for i in range(signal.shape[0]) if not finite[i].all()]
        parts = ", ".join(f"lead {_lead_label(rec, i)}: {count} of {signal.shape[1]}" for i, count in bad)
        raise RecordError(where, f"NaN/inf samples in {len(bad)} lead(s): {parts}")

    dropped, keep = [], []
    for index in range(signal.shape[0]):
        problem = lead_problem(signal[index])
        if problem is None:
            keep.append(index)
        else:
            dropped.append({"lead": rec.leads[index], "reason": problem, "index": index})
    if not dropped:
        return rec
    if not keep:
        reasons = "; ".join(f"{_lead_label(rec, d['index'])}: {d['reason']}" for d in dropped)
        raise RecordError(where, f"no usable lead left: {reasons}")
    return keep_rows(rec, keep, dropped)
