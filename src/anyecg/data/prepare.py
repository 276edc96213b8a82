"""`anyecg prepare`: folders of recordings in any supported format -> a prepared store.

    sources --find_records--> plan (record -> shard, fixed at the first run)
            --worker processes, one shard each: read, keep the ECG channels (io/channels.py), repair
              missing samples (io/gaps.py), drop flat/saturated leads, clean--> shards/*.f32 + index (atomic)
            --main process--> labels, patient ids, splits --> manifest.parquet + skipped.csv

A rerun of the same command skips every shard whose index exists, so a killed job resumes where it
stopped and duplicates nothing. A record that cannot be used is listed in skipped.csv with the
problem; it never stops the job.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from anyecg.data.labels import LabelTable
from anyecg.data.splits import patient_split
from anyecg.data.store import (
    MANIFEST, MANIFEST_COLUMNS, NOT_READ, PLAN, RECIPE, SHARD_DIR, SKIPPED, StoreError, atomic_write_bytes,
    atomic_write_parquet, read_recipe, shard_name,
)
from anyecg.io import find_records, iter_chunks, read_annotations, read_header, read_record
from anyecg.io.channels import channel_names, keep_ecg_channels, select_channels
from anyecg.io.gaps import cut_annotations, fill_short_gaps, plan_gaps, repair_gaps
from anyecg.io.quality import StreamStats, check_signal
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.normalize import normalize
from anyecg.signal.recipe import Recipe, clean_batch, clean_stream

# Records with more samples (all leads) than this are streamed chunk by chunk, so memory stays flat
# for 24 h Holters; smaller ones (a 30 min 2-lead record has 1.3M) are read and cleaned whole.
STREAM_ABOVE_VALUES = 16_000_000
STREAM_CHUNK_S = 5 * 60.0
# Normalisation statistics of a streamed record come from a strided subsample of this many samples per lead.
STATS_SAMPLES = 1_000_000
# Same-shape records are cleaned together, up to this many samples (all leads) per call.
BATCH_VALUES = 4_000_000


@dataclass
class PrepareConfig:
    sources: list[Path]
    out: Path
    recipe: Recipe = field(default_factory=Recipe)
    labels_csv: Path | None = None
    workers: int = 1
    records_per_shard: int | None = None  # default: enough shards to keep every worker busy
    fs: float | None = None  # for formats that carry no sampling rate (.npy, .csv, plain .mat)
    leads: list[str] | None = None  # for formats that carry no lead names
    channels: list[str] | None = None  # channels to keep (["all"]: every one); default: the ECG channels
    annotator: str = "atr"  # WFDB annotation file extension to store with each record (qrs, ecg, ...)
    split_seed: int = 0
    progress: bool = True
    stream_above_values: int = STREAM_ABOVE_VALUES  # records larger than this are streamed in chunks


@dataclass
class PrepareResult:
    store: Path
    records: int
    skipped: int
    shards_written: int
    shards_reused: int
    skipped_reasons: dict[str, int]
    not_read: dict[str, int] = field(default_factory=dict)  # files found but not read, by extension


def prepare(config: PrepareConfig) -> PrepareResult:
    out = Path(config.out)
    sources = [Path(s) for s in config.sources]
    labels = LabelTable.read(config.labels_csv) if config.labels_csv else None  # fail fast on a bad CSV
    ignored: list[tuple[Path, str]] = []  # files found but not read (unsupported type, tables, ...)
    plan = _load_or_make_plan(out, sources, config, ignored)
    n_shards = int(plan["shard"].max()) + 1 if len(plan) else 0
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)

    todo = [s for s in range(n_shards) if not (out / SHARD_DIR / f"{shard_name(s)}.parquet").is_file()]
    by_shard = {s: group["source"].tolist() for s, group in plan.groupby("shard")}
    # Each worker process cleans with one thread; a single process lets clean_batch use every core.
    threads = 1 if config.workers > 1 and len(todo) > 1 else None
    jobs = [(s, [_signal_args(src, config, labels, sources) for src in by_shard[s]], config.recipe, out, threads,
             config.stream_above_values, config.channels, config.annotator) for s in todo]

    bar = tqdm(total=len(plan), unit="rec", desc="prepare", disable=not config.progress, file=sys.stderr)
    bar.update(len(plan) - sum(len(by_shard[s]) for s in todo))
    if config.workers > 1 and len(jobs) > 1:
        _compile_kernels(config.recipe)  # forked workers inherit the compiled preprocessing kernels
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=min(config.workers, len(jobs)), mp_context=context) as pool:
            for future in as_completed([pool.submit(prepare_shard, *job) for job in jobs]):
                bar.update(future.result())
    else:
        for job in jobs:
            bar.update(prepare_shard(*job))
    bar.close()

    manifest, skipped = _assemble(out, n_shards, sources, labels, config.split_seed, ignored)
    skipped = skipped[skipped["kind"] != NOT_READ]  # records that failed, not the files that are no records
    return PrepareResult(
        store=out,
        records=len(manifest),
        skipped=len(skipped),
        shards_written=len(todo),
        shards_reused=n_shards - len(todo),
        skipped_reasons=skipped["problem"].map(skip_reason).value_counts().to_dict() if len(skipped) else {},
        not_read=dict(Counter(path.suffix.lower() or "(none)" for path, _ in ignored).most_common()),
    )


def _load_or_make_plan(out: Path, sources: list[Path], config: PrepareConfig,
                       ignored: list[tuple[Path, str]]) -> pd.DataFrame:
    """The record -> shard assignment, written once; a rerun must see the same sources and recipe."""
    previous_recipe = read_recipe(out)
    if previous_recipe is not None:
        try:
            previous_recipe.check_compatible(config.recipe)
        except ValueError as err:
            raise StoreError(f"{out}: store was prepared with another recipe ({err}); use a new --out") from None
    records = [str(p) for p in find_records(sources, ignored=ignored)]
    plan_path = out / PLAN
    if plan_path.is_file():
        plan = pd.read_parquet(plan_path)
        # The same files named another way (a relative path, a link) resume the plan under today's names.
        today = {str(Path(r).resolve()): r for r in records}
        planned = plan["source"].map(lambda s: str(Path(s).resolve()))
        if sorted(planned) != sorted(today):
            raise StoreError(
                f"{out}: store was started from other sources ({len(plan)} records planned, {len(records)} "
                "found now); rerun with the same sources or use a new --out"
            )
        plan["source"] = planned.map(today)
        return plan
    if not records:
        raise StoreError(f"no records found in {[str(s) for s in sources]}")
    out.mkdir(parents=True, exist_ok=True)
    per_shard = config.records_per_shard or max(1, min(1024, math.ceil(len(records) / (4 * max(config.workers, 1)))))
    plan = pd.DataFrame({"source": records, "shard": [i // per_shard for i in range(len(records))]})
    atomic_write_bytes(out / RECIPE, config.recipe.to_json().encode())
    atomic_write_parquet(plan, plan_path)
    return plan


# ---------------------------------------------------------------- worker side: one shard per call


def _compile_kernels(recipe: Recipe) -> None:
    clean_batch(np.zeros((1, 12, 5000)), 500.0, recipe, workers=1)


def _signal_args(source: str, config: PrepareConfig, labels: LabelTable | None, roots: list[Path]):
    """(source, fs, leads) for a record: the labels CSV's `fs`/`leads` columns, else the command's."""
    row = labels.lookup(Path(source), roots) if labels is not None else None
    fs = row.fs if row is not None and row.fs is not None else config.fs
    leads = row.leads if row is not None and row.leads is not None else config.leads
    return source, fs, leads


def prepare_shard(
    shard: int, records: list[tuple[str, float | None, list[str] | None]], recipe: Recipe, out: Path,
    threads: int | None = None, stream_above_values: int = STREAM_ABOVE_VALUES, channels: list[str] | None = None,
    annotator: str = "atr",
) -> int:
    """Clean every record of one shard into its .f32 file and index; returns the number of records seen.

    `records` holds (source, fs, leads): the rate and lead names to use where the file has none.
    `channels` chooses the channels to keep (see anyecg.io.channels); by default the ECG channels.
    `annotator` is the extension of the WFDB annotation files stored with the records.
    """
    shard_dir = Path(out) / SHARD_DIR
    name = shard_name(shard)
    writer = _ShardWriter(shard_dir / f"{name}.f32.tmp", shard, recipe, threads)
    skipped: list[dict] = []
    pending: dict[tuple, list[Recording]] = defaultdict(list)  # same (fs, leads, samples) -> one batch

    for source, fs, leads in records:
        try:
            info = read_header(source, fs=fs, leads=leads)
            keep, dropped = select_channels(source, channel_names(info.meta, info.raw_leads), info.meta.get("units"),
                                            channels, info.meta.get("channel_fs"), info.fs)
            if info.n_samples * len(keep) > stream_above_values:
                writer.write_streamed(source, info, fs, leads, keep, dropped, annotator)
                continue
            record = keep_ecg_channels(read_record(source, fs=fs, leads=leads), channels)
            if annotator != "atr":
                record.annotations = read_annotations(source, annotator, fs=record.fs)
            parts = [check_signal(part) for part in repair_gaps(record)]
        except RecordError as err:
            skipped.append({"source": source, "problem": err.problem})
            continue
        except Exception as err:  # a reader bug must not end a 10,000-record job; report it instead
            skipped.append({"source": source, "problem": f"unexpected {type(err).__name__}: {err}"})
            continue
        for record in parts:
            key = (record.fs, record.n_leads, record.n_samples)
            pending[key].append(record)
            if len(pending[key]) * record.n_leads * record.n_samples >= BATCH_VALUES:
                writer.write_batch(pending.pop(key))
    for batch in pending.values():
        writer.write_batch(batch)
    writer.finish(shard_dir / f"{name}.f32", shard_dir / f"{name}.parquet", skipped)
    return len(records)


class _ShardWriter:
    """Appends cleaned records to a temporary sample file; `finish` renames everything into place."""

    def __init__(self, tmp_path: Path, shard: int, recipe: Recipe, threads: int | None):
        self.tmp_path = tmp_path
        self.shard = shard
        self.recipe = recipe
        self.threads = threads
        self.handle = open(tmp_path, "wb")
        self.offset = 0  # in float32 elements
        self.rows: list[dict] = []
        self.annotations: list[pd.DataFrame] = []

    def write_batch(self, records: list[Recording]) -> None:
        signals = np.stack([r.signal for r in records])  # [B, L, T]
        cleaned = clean_batch(signals, records[0].fs, self.recipe, self.threads)  # [B, L, T'] mV at target_fs
        for record, signal in zip(records, cleaned):
            _, offset, scale = normalize(signal, self.recipe)
            self.handle.write(_time_major_bytes(signal))
            self._add_row(record, signal.shape, offset, scale)

    def _add_row(self, record: Recording, shape: tuple[int, int], offset: np.ndarray, scale: np.ndarray) -> None:
        n_leads, n_samples = shape
        target_fs = self.recipe.target_fs
        self.rows.append({
            "record_id": record.record_id,
            "patient_id": record.patient_id,
            "source": record.source,
            "format": record.meta.get("format", Path(record.source).suffix.lstrip(".")),
            "fs_original": float(record.fs),
            "n_leads": n_leads,
            "leads": ";".join(record.leads),
            "raw_leads": ";".join(record.raw_leads),
            "units": ";".join(record.meta.get("units", [])),  # as the file gave them; the store holds mV
            "dropped_leads": ";".join(f"{d['lead']}:{d['reason']}" for d in record.meta.get("dropped_leads", [])),
            "repairs": "; ".join(record.meta.get("repairs", [])),
            "source_start_s": float(record.meta.get("source_start_s", 0.0)),
            "duration_s": n_samples / target_fs,
            "n_samples": n_samples,
            "age": record.age,
            "sex": record.sex,
            "header_labels": ";".join(record.labels),
            "n_annotations": len(record.annotations) if record.annotations is not None else 0,
            "shard": self.shard,
            "offset": self.offset,
            "norm_offset": offset.astype(np.float32).tolist(),
            "norm_scale": scale.astype(np.float32).tolist(),
        })
        self.offset += n_leads * n_samples
        if record.annotations is not None and len(record.annotations):
            ann = record.annotations
            self.annotations.append(pd.DataFrame({
                "record_id": record.record_id,
                "source": record.source,
                # annotation indices follow the signal to the store's rate
                "sample": np.round(ann.sample * (target_fs / record.fs)).astype(np.int64),
                "symbol": ann.symbol,
                "aux": ann.aux,
            }))

    def write_streamed(self, source: str, info, fs: float | None, leads: list[str] | None,
                       keep: list[int], dropped: list[dict], annotator: str = "atr") -> None:
        """A long record's channels `keep`, chunk by chunk, with the checks and gap policy of a whole one.

        A first pass gathers per-lead statistics (flat/saturated leads, missing runs); the second
        cleans and writes each gap-free part. On any failure the partial samples are cut off again.
        """
        chunk = int(STREAM_CHUNK_S * info.fs)

        def read() -> Iterator[tuple[int, np.ndarray]]:
            for chunk_start, values in iter_chunks(source, chunk, fs=fs, leads=leads):
                yield chunk_start, values[keep] if dropped else values

        names = [info.raw_leads[i] for i in keep]
        stats = StreamStats(len(keep))
        for _, values in read():
            stats.update(values)
        if stats.n_samples == 0:
            raise RecordError(source, "zero-length signal")
        dropped = list(dropped)
        for row, index in enumerate(keep):
            if (problem := stats.problem(row)) is not None:
                dropped.append({"lead": info.raw_leads[index], "reason": problem, "index": index})
        usable = [row for row, index in enumerate(keep) if index not in {d["index"] for d in dropped}]
        if not usable:
            reasons = "; ".join(f"{d['lead']}: {d['reason']}" for d in dropped)
            raise RecordError(source, f"no usable lead left: {reasons}")
        plan = plan_gaps(source, [stats.missing[row] for row in usable], [names[row] for row in usable],
                         stats.n_samples, info.fs)
        dropped += [{**d, "index": keep[usable[d["index"]]]} for d in plan.dropped]
        rows = [row for row in usable if keep[row] not in {d["index"] for d in dropped}]
        kept = [keep[row] for row in rows]

        annotations = read_annotations(source, annotator, fs=info.fs)
        start = self.handle.tell()
        parts = []
        cursor = _ChunkCursor((s, v[rows] if len(rows) < len(keep) else v) for s, v in read())
        try:
            for part_start, part_stop in plan.parts:
                stride = max(1, math.ceil((part_stop - part_start) * self.recipe.target_fs / info.fs / STATS_SAMPLES))
                subsample, n_out = [], 0
                raw = fill_short_gaps(cursor.span(part_start, part_stop))
                for cleaned in clean_stream(raw, info.fs, self.recipe):  # [L, n] mV at target_fs
                    self.handle.write(_time_major_bytes(cleaned))
                    subsample.append(cleaned[:, (-n_out) % stride :: stride])
                    n_out += cleaned.shape[1]
                parts.append((part_start, part_stop, n_out, normalize(np.concatenate(subsample, axis=1), self.recipe)))
        except BaseException:
            self.handle.seek(start)
            self.handle.truncate()
            raise
        for k, (part_start, part_stop, n_out, (_, offset, scale)) in enumerate(parts):
            split = len(parts) > 1
            record = Recording(
                signal=np.empty((len(kept), 0), np.float32), fs=info.fs, leads=[info.leads[i] for i in kept],
                record_id=f"{info.record_id}_part{k + 1}" if split else info.record_id,
                patient_id=info.patient_id or (f"record:{source}" if split else None),
                age=info.age, sex=info.sex, labels=info.labels, source=str(source),
                raw_leads=[info.raw_leads[i] for i in kept],
                annotations=cut_annotations(annotations, part_start, part_stop),
                meta={**info.meta, "dropped_leads": dropped, "repairs": plan.repairs,
                      "source_start_s": part_start / info.fs,
                      "units": [info.meta["units"][i] for i in kept] if "units" in info.meta else []},
            )
            self._add_row(record, (len(kept), n_out), offset, scale)

    def finish(self, data_path: Path, index_path: Path, skipped: list[dict]) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.tmp_path, data_path)
        stem = index_path.with_suffix("")
        if self.annotations:
            atomic_write_parquet(pd.concat(self.annotations, ignore_index=True), stem.with_suffix(".ann.parquet"))
        atomic_write_parquet(pd.DataFrame(skipped, columns=["source", "problem"]), stem.with_suffix(".skipped.parquet"))
        # The index goes last: its presence is what marks the shard as complete.
        atomic_write_parquet(pd.DataFrame(self.rows), index_path)


def _time_major_bytes(signal: np.ndarray) -> bytes:
    """[leads, samples] -> bytes of float32 [samples, leads], the store's layout."""
    return np.ascontiguousarray(signal.T, dtype=np.float32).tobytes()


class _ChunkCursor:
    """Consecutive (start, [L, n]) chunks of a record, read once and handed out span by span, in order."""

    def __init__(self, chunks: Iterator[tuple[int, np.ndarray]]):
        self.chunks = iter(chunks)
        self.pending: tuple[int, np.ndarray] | None = None

    def span(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """The samples [start, stop) as pieces; spans must be asked for in increasing order."""
        while True:
            if self.pending is None:
                self.pending = next(self.chunks, None)
                if self.pending is None:
                    return
            chunk_start, values = self.pending
            chunk_stop = chunk_start + values.shape[1]
            if chunk_stop <= start:
                self.pending = None
                continue
            if chunk_start >= stop:
                return
            low, high = max(start, chunk_start), min(stop, chunk_stop)
            self.pending = None if high == chunk_stop else (high, values[:, high - chunk_start:])
            yield values[:, low - chunk_start:high - chunk_start]
            if high == stop:
                return


# ---------------------------------------------------------------- main side: the manifest


def _assemble(out: Path, n_shards: int, sources: list[Path], labels: LabelTable | None, seed: int,
              ignored: list[tuple[Path, str]]):
    shard_dir = out / SHARD_DIR
    parts = [pd.read_parquet(shard_dir / f"{shard_name(s)}.parquet") for s in range(n_shards)]
    parts = [p for p in parts if len(p)]
    # With every record skipped the manifest is empty but keeps the columns a shard index has.
    manifest = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MANIFEST_COLUMNS + INDEX_COLUMNS)
    not_read = pd.DataFrame([(str(path), why) for path, why in ignored], columns=["source", "problem"]).assign(kind=NOT_READ)
    failed = [pd.read_parquet(shard_dir / f"{shard_name(s)}.skipped.parquet").assign(kind="record") for s in range(n_shards)]
    skipped = pd.concat(failed + [not_read], ignore_index=True)
    manifest["record_id"] = _unique_ids(manifest, sources)
    manifest["labels"] = manifest["header_labels"]
    csv_splits = [None] * len(manifest)
    if labels is not None:
        matched = [labels.lookup(Path(src), sources) for src in manifest["source"]]
        manifest["labels"] = [";".join(m.labels) if m else h for m, h in zip(matched, manifest["header_labels"])]
        manifest["patient_id"] = [m.patient if m and m.patient else p for m, p in zip(matched, manifest["patient_id"])]
        manifest["label_source"] = ["csv" if m else "header" for m in matched]
        if labels.has_split:
            csv_splits = [m.split if m else None for m in matched]
    # Unknown patients count as their own patient: never merged, never split across sets.
    manifest["patient_id"] = [
        str(p) if isinstance(p, str) and p else f"record:{r}" for p, r in zip(manifest["patient_id"], manifest["record_id"])
    ]
    if labels is not None and labels.has_split and all(csv_splits):
        manifest["split"] = csv_splits
        manifest["split_source"] = "csv"
    else:
        manifest["split"] = patient_split(
            manifest["patient_id"].tolist(), [l.split(";") if l else [] for l in manifest["labels"]], seed=seed
        )
        manifest["split_source"] = f"patient-level stratified, seed {seed}"
    rest = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    manifest = manifest[MANIFEST_COLUMNS + rest]
    atomic_write_parquet(manifest, out / MANIFEST)
    tmp = out / (SKIPPED + ".tmp")
    skipped.to_csv(tmp, index=False)
    os.replace(tmp, out / SKIPPED)
    return manifest, skipped


# Columns of a shard index that the manifest needs beyond MANIFEST_COLUMNS (see _ShardWriter._add_row).
INDEX_COLUMNS = ["header_labels"]


def _unique_ids(manifest: pd.DataFrame, sources: list[Path]) -> list[str]:
    """Record ids are file stems; where two sources share a stem, the path relative to its source
    (keeping the `_part<k>` of a record split at gaps)."""
    ids = manifest["record_id"].astype(str)
    clashes = set(ids[ids.duplicated(keep=False)])
    if not clashes:
        return ids.tolist()
    result = []
    for record_id, source in zip(ids, manifest["source"]):
        if record_id in clashes:
            path = Path(source).with_suffix("")
            part = record_id[len(path.name):] if record_id.startswith(f"{path.name}_part") else ""
            for root in sources:
                if root.is_dir() and path.is_relative_to(root):
                    path = path.relative_to(root)
                    break
            record_id = path.as_posix() + part
        result.append(record_id)
    return result


def skip_reason(problem: str) -> str:
    """Group skip reasons for the summary: the problem text up to its first detail."""
    return problem.split(" (")[0].split(":")[0]
