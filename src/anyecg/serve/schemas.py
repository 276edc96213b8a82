"""Request and response shapes, for the OpenAPI description (the service checks input itself, in
`service.py`, so that every refusal names the offending value)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SignalRequest(BaseModel):
    signal: list[list[float]] = Field(description="leads x samples, in mV; every row the same length")
    fs: float = Field(gt=0, description="sampling rate in Hz")
    leads: list[str] = Field(description="one name per row: I, II, III, aVR, aVL, aVF, V1..V6, X, Y, Z or an alias such as MLII")


UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "the record's files: a WFDB header with its signal files (100.hea + 100.dat), "
                                "or one .mat / .edf / .npy / .npz / .csv file; any field name is accepted"},
        "record": {"type": "string", "description": "which uploaded file is the record, when that is ambiguous"},
        "fs": {"type": "number", "description": "sampling rate in Hz, for files that carry none"},
        "leads": {"type": "string", "description": "comma-separated lead names, for files that carry none"},
    },
    "required": ["file"],
}

RECORDING_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": SignalRequest.model_json_schema()},
        "multipart/form-data": {"schema": UPLOAD_SCHEMA},
    },
}


class Health(BaseModel):
    status: str
    model: str = Field(description="AnyECG checkpoint used by /embed")
    classifier: str | None = Field(description="fine-tuned model used by /predict; null when none was loaded")
    classes: list[str] | None
    version: str


class Embedding(BaseModel):
    embedding: list[float] = Field(description="mean of the recording's token features")
    dim: int
    seconds: float = Field(description="length of the recording embedded")


class Prediction(BaseModel):
    predicted: str
    probabilities: dict[str, float]
    seconds: float = Field(description="length of the recording classified")


class Problem(BaseModel):
    detail: str


ERRORS = {
    400: {"model": Problem, "description": "body is not valid JSON, or a malformed upload"},
    409: {"model": Problem, "description": "/predict on a server started without --classifier"},
    413: {"model": Problem, "description": "request body or recording longer than the server's limits"},
    415: {"model": Problem, "description": "body neither application/json nor multipart/form-data"},
    422: {"model": Problem, "description": "wrong shapes, NaN, bad sampling rate, unknown lead, unreadable record"},
}
