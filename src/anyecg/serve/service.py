"""What the HTTP service does, without HTTP: check a request's recording, read uploaded record files,
run the models. Every problem with the input is an `InputError` carrying the status code to answer
with, so the web layer only translates.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anyecg.io import RecordError, read_header, read_record
from anyecg.pretrained import DEFAULT_MODEL, AnyECG
from anyecg.signal.leads import CANONICAL_LEADS, UNKNOWN, canonical_leads

# A file name an upload may use: no folders, nothing hidden, nothing a shell or file system treats specially.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ServeLimits:
    max_request_bytes: int = 32 * 2**20  # whole request body, JSON or multipart
    max_duration_s: float = 3600.0  # longest recording accepted
    max_upload_files: int = 16  # files in one multipart upload (a WFDB record is a few)


class InputError(Exception):
    """A request the service refuses; `status` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class EcgInput:
    signal: np.ndarray  # float32 [leads, samples], mV
    fs: float
    leads: list[str]  # as the client or the file names them

    @property
    def seconds(self) -> float:
        return self.signal.shape[1] / self.fs


# ---------------------------------------------------------------------------------------- checks


def check_fs(fs: object) -> float:
    if isinstance(fs, bool) or not isinstance(fs, (int, float)):
        raise InputError(422, f"fs must be a number (sampling rate in Hz), got {fs!r}")
    if not math.isfinite(fs) or fs <= 0:
        raise InputError(422, f"fs must be a positive sampling rate in Hz, got {fs!r}")
    return float(fs)


def check_leads(leads: object) -> list[str]:
    """Lead names, each one the canonical vocabulary knows (a typo must not pass as an "unknown" lead)."""
    if not isinstance(leads, list) or not leads or not all(isinstance(name, str) for name in leads):
        raise InputError(422, f"leads must be a non-empty list of lead names, got {leads!r}")
    unknown = [name for name, canonical in zip(leads, canonical_leads(leads)) if canonical == UNKNOWN]
    if unknown:
        known = [name for name in CANONICAL_LEADS if name != UNKNOWN]
        raise InputError(422, f"unknown lead name(s) {unknown}; known: {known} (and aliases such as MLII)")
    return leads


def check_signal(rows: object) -> np.ndarray:
    """float32 [leads, samples] from a JSON list of rows, or an InputError saying what is wrong."""
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
        raise InputError(422, "signal must be a non-empty list of rows (one per lead), each a list of samples in mV")
    lengths = [len(row) for row in rows]
    if len(set(lengths)) > 1:
        raise InputError(422, f"signal rows have different lengths {lengths}; every lead needs the same number of samples")
    if lengths[0] == 0:
        raise InputError(422, "signal rows are empty")
    try:
        array = np.asarray(rows)  # dtype inferred, so strings, nulls and nested lists show up as such
    except ValueError:
        raise InputError(422, "signal samples must be numbers, not nested lists") from None
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        raise InputError(422, "signal samples must all be numbers (mV); found strings, nulls, booleans or nested lists")
    array = array.astype(np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        lead, sample = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(422, f"signal has {int(bad.sum())} NaN/inf samples (first: row {lead}, sample {sample})")
    return array


def check_duration(n_samples: int, fs: float, limits: ServeLimits) -> None:
    seconds = n_samples / fs
    if seconds > limits.max_duration_s:
        raise InputError(413, f"recording is {seconds:.1f} s long ({n_samples} samples at {fs:g} Hz); "
                              f"this server accepts at most {limits.max_duration_s:g} s (--max-duration-s)")


def parse_json_request(body: bytes, limits: ServeLimits) -> EcgInput:
    """`{"signal": [[...], ...], "fs": 360, "leads": ["MLII", "V5"]}` -> checked EcgInput."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise InputError(422, f"request body must be a JSON object with signal, fs and leads, got {type(payload).__name__}")
    missing = [key for key in ("signal", "fs", "leads") if key not in payload]
    if missing:
        raise InputError(422, f"request is missing {missing}; expected signal (leads x samples, mV), fs (Hz), leads (names)")
    fs = check_fs(payload["fs"])
    leads = check_leads(payload["leads"])
    # Duration before conversion: a long recording is refused without building its array.
    rows = payload["signal"]
    if isinstance(rows, list) and rows and isinstance(rows[0], list):
        check_duration(len(rows[0]), fs, limits)
    signal = check_signal(rows)
    if signal.shape[0] != len(leads):
        raise InputError(422, f"signal has {signal.shape[0]} rows but {len(leads)} lead names {leads}; one row per lead")
    return EcgInput(signal, fs, leads)


# ---------------------------------------------------------------------------------------- uploads


def check_upload_name(name: str | None, taken: set[str]) -> str:
    if not name or not _SAFE_NAME.fullmatch(name):
        raise InputError(422, f"uploaded file name {name!r} is not allowed; use plain names such as 100.hea, 100.dat")
    if name in taken:
        raise InputError(422, f"file {name!r} uploaded twice")
    return name


def parse_form_fs(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(422, f"fs must be a number (sampling rate in Hz), got {text!r}") from None
    return check_fs(value)


def parse_form_leads(text: str | None) -> list[str] | None:
    """Comma-separated lead names ("I,II,V1"), for files that carry none (plain arrays, .mat)."""
    if text is None or text == "":
        return None
    return check_leads([name.strip() for name in text.split(",")])


def entry_file(folder: Path, names: list[str], record: str | None) -> Path:
    """The file `read_record` should open: the one named `record`, the only header, or the only file."""
    if record is not None:
        if record not in names:
            raise InputError(422, f"record {record!r} is not among the uploaded files {names}")
        return folder / record
    headers = [name for name in names if name.lower().endswith(".hea")]
    if len(headers) == 1:
        return folder / headers[0]
    if len(headers) == 0 and len(names) == 1:
        return folder / names[0]
    raise InputError(422, f"cannot tell which of the uploaded files {names} is the record; "
                          "upload one record (a .hea with its signal files, or one file), or name it in the 'record' field")


def read_uploaded_record(folder: Path, names: list[str], limits: ServeLimits, *, record: str | None = None,
                         fs: float | None = None, leads: list[str] | None = None) -> EcgInput:
    """Read the record uploaded into `folder`; its header's length is checked before any sample is read."""
    path = entry_file(folder, names, record)
    try:
        info = read_header(path, fs=fs, leads=leads)
        check_duration(info.n_samples, info.fs, limits)
        recording = read_record(path, fs=fs, leads=leads)
    except RecordError as err:
        raise InputError(422, f"cannot read the uploaded record {path.name}: {err.problem}") from None
    if recording.signal.size == 0:
        raise InputError(422, f"the uploaded record {path.name} has no samples")
    # File lead names pass as they are, like `anyecg embed` on files: "ECG1" in a Holter header is a
    # real lead the model takes as "unknown", not a typo.
    return EcgInput(recording.signal, recording.fs, recording.raw_leads or recording.leads)


# ---------------------------------------------------------------------------------------- models


class EcgService:
    """The models, loaded once, and one lock around torch calls: concurrent CPU inferences would only
    fight for the same cores and multiply peak memory, while /health stays outside the lock."""

    def __init__(self, model: str | Path | None = None, classifier: str | Path | None = None):
        from anyecg.families import FamilyModel, is_family_checkpoint
        from anyecg.tasks.runner import load_finetuned

        self.model_name = DEFAULT_MODEL if model is None else str(model)
        self.embedder = FamilyModel.from_pretrained(model) if is_family_checkpoint(model) else AnyECG.from_pretrained(model)
        self.classifier_name = None if classifier is None else str(classifier)
        self.classifier, self.classifier_config, self.published = None, None, None
        if is_family_checkpoint(classifier):  # a published classifier (file, hf:// name or converted folder)
            self.published = FamilyModel.from_pretrained(classifier)
            if self.published.labels is None:
                raise ValueError(f"{classifier}: this {self.published.family} network has no published classifier head")
        elif classifier is not None:
            self.classifier, self.classifier_config = load_finetuned(classifier)
        self.lock = threading.Lock()

    @property
    def classes(self) -> list[str] | None:
        if self.published is not None:
            return list(self.published.labels)
        return None if self.classifier_config is None else list(self.classifier_config["classes"])

    def embed(self, ecg: EcgInput) -> np.ndarray:
        """float32 [D]."""
        with self.lock:
            try:
                return self.embedder.embed(ecg.signal, ecg.fs, ecg.leads)
            except ValueError as err:  # the model's own signal contract (shape, rate, lead names)
                raise InputError(422, str(err)) from None

    def require_classifier(self) -> None:
        if self.classifier is None and self.published is None:
            raise InputError(409, "no classifier loaded: start the server with --classifier "
                                  "<fine-tuned model> (finetune's run folder or its seed-K/final) to use /predict")

    def predict(self, ecg: EcgInput) -> dict[str, float]:
        """{class: probability}, in the classifier's class order."""
        from anyecg.tasks.runner import predict_signal

        self.require_classifier()
        with self.lock:
            try:
                if self.published is not None:
                    probabilities = self.published.predict(ecg.signal, ecg.fs, ecg.leads)
                else:
                    probabilities = predict_signal(self.classifier, self.classifier_config, ecg.signal, ecg.fs, ecg.leads)
            except ValueError as err:
                raise InputError(422, str(err)) from None
        return {name: float(p) for name, p in zip(self.classes, probabilities)}
