"""The one in-memory type every reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class RecordError(ValueError):
    """A record that cannot be used, with the file and the problem in the message."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class Annotations:
    """Sample-indexed annotations (WFDB `.atr` style).

    `sample[i]` is an index into the recording's own samples (at `Recording.fs`), `symbol[i]` a beat
    or event symbol (`N`, `V`, `+`, ...), `aux[i]` the auxiliary note (`(AFIB`, `(N`, ... for rhythm
    changes, `""` otherwise).
    """

    sample: np.ndarray  # int64 [n]
    symbol: list[str]
    aux: list[str]
    fs: float | None = None  # the rate `sample` counts at, where it is not the recording's (WFDB time resolution)

    def __len__(self) -> int:
        return len(self.symbol)


@dataclass
class Recording:
    signal: np.ndarray  # float32 [leads, samples], millivolts
    fs: float  # samples per second
    leads: list[str]  # canonical lead names (see anyecg.signal.leads), "unknown" where not mappable
    record_id: str
    patient_id: str | None = None
    age: float | None = None  # years
    sex: str | None = None  # "M" or "F"
    labels: list[str] = field(default_factory=list)
    source: str = ""  # path of the file the record came from
    raw_leads: list[str] = field(default_factory=list)  # lead names as the file spelled them
    annotations: Annotations | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # header comments, units, format, ...

    @property
    def n_leads(self) -> int:
        return int(self.signal.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs
