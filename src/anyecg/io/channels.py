"""Which channels of a recording are ECG: by physical units first, then by channel name.

Bedside and sleep recordings put ECG beside blood pressure, plethysmography, respiration, EEG and
test signals. A channel is kept as ECG when its units are a voltage (mV, uV, V; WFDB's default mV
when none is given) and its name is ECG-like or unknown (`col 0`, `ch1`); a known non-ECG name
(`ABP`, `PLETH`, `RESP`, `Fp1`, `C4-A1`, `sine 8 Hz`, ...) or a non-voltage unit (mmHg, NU, Ohm,
degC) drops it; a name with `ECG`/`EKG` in it is ECG. Every dropped channel is reported with the reason.

`channels` overrides the rule: a list of names (matched to the file's or the canonical lead name,
case-insensitive) keeps exactly those channels; `["all"]` keeps every channel.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from anyecg.io.metadata import millivolt_factor
from anyecg.io.recording import RecordError, Recording
from anyecg.signal.leads import canonical_lead

KEEP_ALL = "all"
_ECG_NAME = re.compile(r"ecg|ekg")  # `ECG pulse`, `FECG`, `EKG V2`: named ECG whatever else the name says

# Channel-name patterns of other signals (matched, lower-cased, against the whole name).
_EEG_ELECTRODE = r"(?:fp[12z]|af[34z]|f[3478z]|fc[56z]|c[z]|cp[56z]|p[34z]|o[12z]|t[345678]|a[12]|m[12])"
_NON_ECG: tuple[tuple[str, re.Pattern], ...] = tuple((kind, re.compile(pattern)) for kind, pattern in (
    ("blood pressure", r"\b(?:abp\w*|nbp\w*|art|pap|cvp|icp|lap|rap|uap|bp|pressure)\b"),
    ("plethysmography / oximetry", r"\b(?:pleth|ppg|spo2|sao2|sp02|ox\w*)\b"),
    ("respiration", r"\b(?:resp\w*|co2|etco2|flow|airflow|snore|nasal)\b"),
    # belts, not abdominal fetal ECG leads such as `Abdomen_1`
    ("respiration", r"^(?:thor(?:ax|acic)?|abdo(?:men|minal)?)(?:\s*(?:belt|effort|resp\w*))?$"),
    ("EEG / EOG / EMG", r"\b(?:eeg|eog|emg|chin|leg\w*|loc|roc)\b"),
    ("EEG", rf"^(?:eeg\s*)?{_EEG_ELECTRODE}(?:\s*-\s*(?:{_EEG_ELECTRODE}|c[1-6]|ref|avg))?$"),
    ("EEG", rf"^c[34]\s*-\s*{_EEG_ELECTRODE}$"),
    ("heart rate", r"\b(?:hr|heart\s*rate|pulse\s*rate|rr|hrv|bpm)\b"),
    ("temperature", r"\b(?:temp\w*)\b"),
    ("motion", r"\b(?:acc\w*|gyro\w*|position|angle|activity|light)\b"),
    ("marker / annotation", r"\b(?:marker|event|trigger|status|annotations?|stim\w*)\b"),
    ("test signal", r"\b(?:sine|square\s*wave|squarewave|square|ramp|pulse|noise|calib\w*)\b"),
    ("skin conductance", r"\b(?:gsr|eda)\b"),
    ("uterine contraction", r"^(?:uc|toco)$"),
    ("sound", r"\b(?:pcg|sound|mic|audio)\b"),
))


def channel_problem(name: str, units: str | None) -> str | None:
    """Why a channel (its name as the file spells it, its physical units) is not ECG, or None."""
    if millivolt_factor(units) is None:
        return f"not ECG: units {units!r}"
    text = name.replace("_", " ").strip().lower()  # `DEV_Temperature`, `EEG_Fp1`: words apart
    if _ECG_NAME.search(text):
        return None
    for kind, pattern in _NON_ECG:
        if pattern.search(text):
            return f"not ECG: {kind} channel"
    return None


def select_channels(source: str, names: list[str], units: list[str] | None, channels: list[str] | None = None,
                    rates: list[float] | None = None, fs: float | None = None) -> tuple[list[int], list[dict]]:
    """(indices kept, dropped [{"lead", "reason", "index"}]) for a record's channels; raises if none is kept.

    `rates` (each channel's own sampling rate, where they differ) and `fs` (the record's): a channel
    sampled at another rate than the record's is dropped whatever `channels` says.
    """
    units = list(units) if units is not None else ["mV"] * len(names)
    keep_all = bool(channels) and [c.strip().lower() for c in channels] == [KEEP_ALL]
    wanted = {c.strip().lower() for c in channels} if channels and not keep_all else None
    keep, dropped = [], []
    for index, (name, unit) in enumerate(zip(names, units)):
        if keep_all:
            problem = None
        elif wanted is not None:
            chosen = name.strip().lower() in wanted or canonical_lead(name).lower() in wanted
            problem = None if chosen else "not in --channels"
        else:
            problem = channel_problem(name, unit)
        if problem is None and rates is not None and fs is not None and not np.isclose(rates[index], fs):
            problem = f"sampled at {rates[index]:g} Hz, not the record's {fs:g} Hz"
        if problem is None:
            keep.append(index)
        else:
            dropped.append({"lead": name, "reason": problem, "index": index})
    if keep:
        return keep, dropped
    if wanted is not None:
        raise RecordError(source, f"none of the channels {channels} is in this record at its rate (it has {names})")
    listing = ", ".join(f"{d['lead']!r} ({d['reason'].removeprefix('not ECG: ')})" for d in dropped)
    raise RecordError(source, f"no ECG channel: {listing}; choose channels with --channels")


def channel_names(meta: dict, raw_leads: list[str]) -> list[str]:
    """The names the file gives its channels (EDF labels keep their `EEG `/`ECG ` prefix)."""
    labels = meta.get("channel_labels")
    return list(labels) if labels is not None and len(labels) == len(raw_leads) else list(raw_leads)


def keep_rows(rec: Recording, keep: list[int], dropped: list[dict]) -> Recording:
    """The record with only the signal rows `keep`; `dropped` is added to meta["dropped_leads"]."""
    if not dropped:
        return rec
    meta = {**rec.meta, "dropped_leads": list(rec.meta.get("dropped_leads", [])) + dropped}
    if "units" in meta and len(meta["units"]) == rec.n_leads:
        meta["units"] = [meta["units"][i] for i in keep]
    raw = [rec.raw_leads[i] for i in keep] if len(rec.raw_leads) == rec.n_leads else rec.raw_leads
    return dataclasses.replace(rec, signal=np.ascontiguousarray(rec.signal[keep]),
                               leads=[rec.leads[i] for i in keep], raw_leads=raw, meta=meta)


def keep_ecg_channels(rec: Recording, channels: list[str] | None = None) -> Recording:
    """`rec` without its non-ECG channels (see module docstring); raises RecordError if none is ECG."""
    names = channel_names(rec.meta, rec.raw_leads) if len(rec.raw_leads) == rec.n_leads else list(rec.leads)
    keep, dropped = select_channels(rec.source or rec.record_id, names, rec.meta.get("units"), channels,
                                    rec.meta.get("channel_fs"), rec.fs)
    return keep_rows(rec, keep, dropped)
