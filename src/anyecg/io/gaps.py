"""Missing samples (NaN/inf): what a record keeps, fills or cuts instead of being refused whole.

WFDB marks invalid samples (electrode off, monitor gaps, skew padding at a record's end) and they
arrive here as NaN. Policy, applied to the ECG channels only (non-ECG channels are dropped first):

1. a lead with no valid sample, or with more than MAX_MISSING_FRACTION of its samples missing, is
   dropped (reported like a flat lead);
2. a frame counts as missing when any remaining lead is missing there; missing frames at the start
   and end of the record are trimmed;
3. an inner gap of at most MAX_INTERPOLATED_GAP_S (0.1 s: shorter than a QRS complex, so no beat
   can hide in it) is filled by linear interpolation, per lead, between the valid samples around it;
4. a longer gap splits the record into parts, each stored as its own record (`<id>_part<k>`, same
   patient); parts shorter than MIN_PART_S are left out.

Everything done is written as short sentences into `meta["repairs"]`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from anyecg.io.channels import keep_rows
from anyecg.io.recording import Annotations, RecordError, Recording

MAX_INTERPOLATED_GAP_S = 0.1
MAX_MISSING_FRACTION = 0.5
MIN_PART_S = 5.0

Runs = list[tuple[int, int]]  # [start, stop) sample ranges


@dataclass
class GapPlan:
    dropped: list[dict] = field(default_factory=list)  # {"lead", "reason", "index"}
    parts: Runs = field(default_factory=list)  # sample ranges stored, each free of long gaps
    repairs: list[str] = field(default_factory=list)


def missing_runs(values: np.ndarray, offset: int = 0) -> Runs:
    """Runs of non-finite samples in one lead (float [n]), shifted by `offset`."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], bad.view(np.int8), [0]))))
    return [(int(a) + offset, int(b) + offset) for a, b in zip(edges[::2], edges[1::2])]


def append_runs(runs: Runs, new: Runs) -> None:
    """Add later runs to `runs`, joining a run that continues across a chunk boundary."""
    for start, stop in new:
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], stop)
        else:
            runs.append((start, stop))


def _union(per_lead: list[Runs]) -> Runs:
    merged: Runs = []
    for start, stop in sorted(run for runs in per_lead for run in runs):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def plan_gaps(source: str, per_lead: list[Runs], names: list[str], n_samples: int, fs: float) -> GapPlan:
    """What to drop, fill and cut, from each lead's missing runs; raises RecordError if nothing is left."""
    plan = GapPlan()
    keep = []
    for index, runs in enumerate(per_lead):
        missing = sum(stop - start for start, stop in runs)
        if missing == n_samples:
            plan.dropped.append({"lead": names[index], "reason": "no valid sample", "index": index})
        elif missing > MAX_MISSING_FRACTION * n_samples:
            plan.dropped.append({"lead": names[index], "reason": f"missing: {missing / n_samples:.0%} of samples",
                                 "index": index})
        else:
            keep.append(index)
    if not keep:
        raise RecordError(source, "no lead with enough valid samples: " +
                          "; ".join(f"{d['lead']}: {d['reason']}" for d in plan.dropped))
    gaps = _union([per_lead[i] for i in keep])
    start, stop = 0, n_samples
    if gaps and gaps[0][0] == 0:
        start = gaps.pop(0)[1]
        plan.repairs.append(f"trimmed {start} samples with missing values at the start")
    if gaps and gaps[-1][1] == n_samples:
        stop = gaps.pop()[0]
        plan.repairs.append(f"trimmed {n_samples - stop} samples with missing values at the end")
    longest = int(MAX_INTERPOLATED_GAP_S * fs)
    short = [g for g in gaps if g[1] - g[0] <= longest]
    long = [g for g in gaps if g[1] - g[0] > longest]
    if short:
        plan.repairs.append(f"interpolated {len(short)} gaps of at most {MAX_INTERPOLATED_GAP_S:g} s "
                            f"({sum(b - a for a, b in short)} samples)")
    edges = [start] + [x for gap in long for x in gap] + [stop]
    parts = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]
    if long:
        missing_s = sum(b - a for a, b in long) / fs
        plan.repairs.append(f"split at {len(long)} gaps longer than {MAX_INTERPOLATED_GAP_S:g} s "
                            f"({missing_s:.1f} s missing)")
        short_parts = [p for p in parts if p[1] - p[0] < MIN_PART_S * fs]
        parts = [p for p in parts if p[1] - p[0] >= MIN_PART_S * fs]
        if short_parts:
            plan.repairs.append(f"left out {len(short_parts)} parts shorter than {MIN_PART_S:g} s")
    if not parts:
        raise RecordError(source, f"no stretch of at least {MIN_PART_S:g} s without gaps longer than "
                                  f"{MAX_INTERPOLATED_GAP_S:g} s ({'; '.join(plan.repairs)})")
    plan.parts = parts
    return plan


def interpolate_inner(block: np.ndarray) -> np.ndarray:
    """Fill non-finite samples of [L, n] (first and last frames finite) linearly, lead by lead, in place."""
    for lead in block:
        bad = ~np.isfinite(lead)
        if bad.any():
            x = np.arange(lead.size)
            lead[bad] = np.interp(x[bad], x[~bad], lead[~bad])
    return block


def fill_short_gaps(pieces: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """Consecutive [L, n] pieces of one part (valid first and last frames, only short inner gaps) with
    the gaps interpolated; a gap that runs across pieces is held back until its end arrives."""
    held = None  # trailing frames with missing values, waiting for the next valid frame
    anchor = None  # the last frame yielded
    for piece in pieces:
        block = piece if held is None else np.concatenate([held, piece], axis=1)
        valid = np.isfinite(block).all(axis=0)
        if valid.all():
            held, anchor = None, block[:, -1:]
            yield block
            continue
        end = int(np.flatnonzero(valid)[-1]) + 1 if valid.any() else 0
        held = block[:, end:] if end < block.shape[1] else None
        if end == 0:
            continue
        if anchor is None:
            filled = interpolate_inner(block[:, :end].copy())
        else:
            filled = interpolate_inner(np.concatenate([anchor, block[:, :end]], axis=1))[:, 1:]
        anchor = filled[:, -1:]
        yield filled


def repair_gaps(rec: Recording) -> list[Recording]:
    """The record as stored parts (see module docstring); `[rec]` itself when nothing is missing."""
    if np.isfinite(rec.signal).all():
        return [rec]
    where = rec.source or rec.record_id
    names = rec.raw_leads if len(rec.raw_leads) == rec.n_leads else rec.leads
    plan = plan_gaps(where, [missing_runs(lead) for lead in rec.signal], names, rec.n_samples, rec.fs)
    dropped_rows = {d["index"] for d in plan.dropped}
    rec = keep_rows(rec, [i for i in range(rec.n_leads) if i not in dropped_rows], plan.dropped)
    parts = []
    for k, (start, stop) in enumerate(plan.parts):
        meta = {**rec.meta, "repairs": plan.repairs, "source_start_s": start / rec.fs}
        part = dataclasses.replace(
            rec, signal=interpolate_inner(rec.signal[:, start:stop].copy()),
            annotations=cut_annotations(rec.annotations, start, stop), meta=meta,
        )
        if len(plan.parts) > 1:
            part.record_id = f"{rec.record_id}_part{k + 1}"
            part.patient_id = rec.patient_id or f"record:{rec.source or rec.record_id}"  # parts never cross splits
        parts.append(part)
    return parts


def cut_annotations(annotations: Annotations | None, start: int, stop: int) -> Annotations | None:
    if annotations is None:
        return None
    inside = np.flatnonzero((annotations.sample >= start) & (annotations.sample < stop))
    return Annotations(sample=annotations.sample[inside] - start, symbol=[annotations.symbol[i] for i in inside],
                       aux=[annotations.aux[i] for i in inside], fs=annotations.fs)
