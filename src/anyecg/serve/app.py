"""`anyecg serve`: the models behind HTTP (FastAPI + uvicorn; `pip install 'anyecg[serve]'`).

    anyecg serve --classifier runs/ft/seed-0/final --port 8000

    GET  /health   {"status": "ok", "model": ..., "classifier": ... | null, "classes": ..., "version": ...}
    POST /embed    {"signal": [[...], ...], "fs": 360, "leads": ["MLII", "V5"]}  ->  {"embedding": [...], "dim": D, "seconds": ...}
    POST /predict  same body  ->  {"predicted": "abnormal", "probabilities": {"abnormal": 0.8, "normal": 0.2}, "seconds": ...}

    curl -F file=@100.hea -F file=@100.dat localhost:8000/embed       # or upload a record's files

The OpenAPI description is at /openapi.json (browsable at /docs). Bodies larger than
`ServeLimits.max_request_bytes` get 413 before the app reads them; bad input gets a 4xx whose
`detail` names the problem, and the server keeps serving.

    app = create_app(model=None, classifier="runs/ft/seed-0/final")   # e.g. under another ASGI server
"""

import json
import shutil
import tempfile
from pathlib import Path

from anyecg import __version__
from anyecg.serve.service import (
    EcgInput,
    EcgService,
    InputError,
    ServeLimits,
    check_upload_name,
    parse_form_fs,
    parse_form_leads,
    parse_json_request,
    read_uploaded_record,
)

__all__ = ["ServeLimits", "create_app", "run_server"]

INSTALL_HINT = "pip install 'anyecg[serve]'"
DEFAULT_LIMITS = ServeLimits()


def _require(*modules: str) -> None:
    """Import the first of `modules` that exists (alternative names of one package), or fail naming the extra."""
    for module in modules:
        try:
            __import__(module)
            return
        except ImportError:
            continue
    raise ImportError(f"anyecg serve needs {modules[0]!r}, which is not installed: {INSTALL_HINT}")


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, by its Content-Length or, for a chunked
    body, as it arrives. The body is buffered here and replayed to the app, because FastAPI turns an
    error raised while it reads a body into a 400."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(receive, send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(receive, send, None)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # later reads wait for the client's disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, receive, send, declared: int | None) -> None:
        # Read and drop the rest of the body first (up to the limit again): closing the connection
        # while the client still sends makes the kernel reset it, which can destroy the 413 in flight.
        drained = 0
        while drained <= self.max_bytes:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
            drained += len(message.get("body", b""))
        size = f"{declared} bytes" if declared is not None else "more"
        detail = f"request body of {size} is over this server's limit of {self.max_bytes} bytes (--max-request-mb)"
        payload = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),  # the rest of the body is never read
        ]})
        await send({"type": "http.response.body", "body": payload})


def create_app(model: str | Path | None = None, classifier: str | Path | None = None,
               limits: ServeLimits = DEFAULT_LIMITS):
    """A FastAPI app serving `model` (AnyECG checkpoint; None: the shipped one) on /embed and the
    fine-tuned `classifier` folder, if given, on /predict. Both are loaded here, once."""
    _require("fastapi")
    _require("python_multipart", "multipart")  # python-multipart, for uploads; renamed in 0.0.13
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
    from starlette.datastructures import UploadFile

    from anyecg.serve.schemas import (
        ERRORS,
        RECORDING_BODY,
        Embedding,
        Health,
        Prediction,
    )

    service = EcgService(model, classifier)
    app = FastAPI(title="anyecg", version=__version__,
                  description="ECG embeddings and predictions from AnyECG models, for raw recordings in mV "
                              "(any sampling rate, any lead subset) or uploaded record files.")
    app.state.service = service
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_request_bytes)

    @app.exception_handler(InputError)
    async def refuse(request: Request, err: InputError):
        return JSONResponse({"detail": err.message}, status_code=err.status)

    def save_uploads(folder: Path, uploads: list[UploadFile]) -> list[str]:
        names: list[str] = []
        for upload in uploads:
            name = check_upload_name(upload.filename, set(names))
            with (folder / name).open("wb") as handle:
                shutil.copyfileobj(upload.file, handle)
            names.append(name)
        return names

    async def recording(request: Request) -> EcgInput:
        """The request's recording, from a JSON body or a multipart upload of record files."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            return await run_in_threadpool(parse_json_request, await request.body(), limits)
        if kind != "multipart/form-data":
            raise InputError(415, f"send application/json or multipart/form-data, not {kind or 'no content type'!r}")
        async with request.form(max_files=limits.max_upload_files) as form:
            uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            if not uploads:
                raise InputError(422, "the upload has no files; send the record's files as multipart file fields")
            fields = {key: value for key, value in form.items() if isinstance(value, str)}
            fs, leads = parse_form_fs(fields.get("fs")), parse_form_leads(fields.get("leads"))
            with tempfile.TemporaryDirectory(prefix="anyecg-upload-") as folder:
                names = await run_in_threadpool(save_uploads, Path(folder), uploads)
                return await run_in_threadpool(read_uploaded_record, Path(folder), names, limits,
                                               record=fields.get("record"), fs=fs, leads=leads)

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        return {"status": "ok", "model": service.model_name, "classifier": service.classifier_name,
                "classes": service.classes, "version": __version__}

    @app.post("/embed", response_model=Embedding, responses=ERRORS, openapi_extra={"requestBody": RECORDING_BODY})
    async def embed(request: Request) -> dict:
        """Embedding of one recording: the mean of its token features, [D]."""
        ecg = await recording(request)
        vector = await run_in_threadpool(service.embed, ecg)
        return {"embedding": vector.tolist(), "dim": int(vector.shape[0]), "seconds": ecg.seconds}

    @app.post("/predict", response_model=Prediction, responses=ERRORS, openapi_extra={"requestBody": RECORDING_BODY})
    async def predict(request: Request) -> dict:
        """Class probabilities of one recording from the fine-tuned classifier."""
        service.require_classifier()
        ecg = await recording(request)
        probabilities = await run_in_threadpool(service.predict, ecg)
        return {"predicted": max(probabilities, key=probabilities.get), "probabilities": probabilities,
                "seconds": ecg.seconds}

    return app


def run_server(model: str | Path | None = None, classifier: str | Path | None = None, host: str = "127.0.0.1",
               port: int = 8000, limits: ServeLimits = DEFAULT_LIMITS) -> None:
    """Load the models, then serve until interrupted."""
    _require("uvicorn")
    import uvicorn

    uvicorn.run(create_app(model, classifier, limits), host=host, port=port, log_level="info")
