"""`anyecg serve` over real HTTP: uvicorn on loopback, httpx requests, real records from the shared
data, answers compared with the library called directly on the same input."""

import json
import math
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from anyecg.data.prepare import PrepareConfig, prepare
from anyecg.io import read_record
from anyecg.pretrained import AnyECG
from anyecg.serve import ServeLimits, create_app
from anyecg.signal.leads import STANDARD_12
from anyecg.tasks.runner import FinetuneConfig, finetune, load_finetuned, predict_signal

LIMITS = ServeLimits(max_request_bytes=4 * 2**20, max_duration_s=300.0)


@contextmanager
def serving(app):
    """An httpx client of `app` served by uvicorn in a thread, on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def classifier_dir(shared_data, tmp_path_factory, copy_records):
    """A tiny anomaly classifier fine-tuned on twelve CinC 2021 records (both classes in train)."""
    stems = [header.stem for header in sorted((shared_data / "cinc2021").glob("*.hea"))[:12]]
    corpus = copy_records(shared_data / "cinc2021", tmp_path_factory.mktemp("serve-corpus"), stems)
    store = tmp_path_factory.mktemp("serve-store")
    prepare(PrepareConfig(sources=[corpus], out=store, progress=False))
    out = tmp_path_factory.mktemp("serve-ft")
    finetune(store, out, FinetuneConfig(task="anomaly", seeds=1, steps=5, batch_size=8))
    return out / "seed-0" / "final"


@pytest.fixture(scope="module")
def app(classifier_dir):
    return create_app(model=None, classifier=classifier_dir, limits=LIMITS)


@pytest.fixture(scope="module")
def client(app):
    with serving(app) as http:
        yield http


@pytest.fixture(scope="module")
def reference():
    return AnyECG.from_pretrained()


@pytest.fixture(scope="module")
def finetuned(classifier_dir):
    return load_finetuned(classifier_dir)


def as_json(signal: np.ndarray, fs: float, leads: list[str]) -> dict:
    return {"signal": signal.tolist(), "fs": fs, "leads": leads}


def uploads(folder: Path, names: list[str]) -> list:
    return [("file", (name, (folder / name).read_bytes())) for name in names]


def assert_healthy(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_health_and_openapi(client, classifier_dir, finetuned):
    health = client.get("/health").json()
    assert health["model"] == "anyecg-small" and health["classifier"] == str(classifier_dir)
    assert health["classes"] == finetuned[1]["classes"] and health["version"]
    spec = client.get("/openapi.json").json()
    assert {"/health", "/embed", "/predict"} <= set(spec["paths"])
    for path in ("/embed", "/predict"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} == set(body)
        assert set(body["application/json"]["schema"]["required"]) == {"signal", "fs", "leads"}


def test_embed_json_matches_the_library(client, shared_data, reference):
    record = read_record(shared_data / "mitdb" / "100.hea")
    signal = record.signal[:, : int(60 * record.fs)]  # [2, 21600], one minute of MLII + V5
    response = client.post("/embed", json=as_json(signal, record.fs, record.raw_leads))
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = reference.embed(signal, record.fs, record.raw_leads)
    assert answer["dim"] == expected.shape[0] == len(answer["embedding"])
    assert answer["seconds"] == pytest.approx(60.0)
    np.testing.assert_allclose(answer["embedding"], expected, rtol=0, atol=1e-5)


def test_predict_json_matches_predict_signal(client, shared_data, finetuned):
    model, config = finetuned
    record = read_record(shared_data / "cinc2021" / "E07504.hea")
    response = client.post("/predict", json=as_json(record.signal, record.fs, record.raw_leads))
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = predict_signal(model, config, record.signal, record.fs, record.raw_leads)
    assert list(answer["probabilities"]) == config["classes"]
    np.testing.assert_allclose(list(answer["probabilities"].values()), expected, rtol=0, atol=1e-5)
    assert answer["predicted"] == config["classes"][int(expected.argmax())]
    assert math.isclose(sum(answer["probabilities"].values()), 1.0, abs_tol=1e-5)


@pytest.mark.parametrize("folder,names", [
    ("cinc2021", ["E07500.hea", "E07500.mat"]),  # WFDB header pointing at a MATLAB v4 signal file
    ("ptbdb", ["s0010_re.hea", "s0010_re.dat", "s0010_re.xyz"]),  # 15 leads in two signal files
])
def test_upload_wfdb_record(client, shared_data, reference, finetuned, folder, names):
    record = read_record(shared_data / folder / names[0])
    embedded = client.post("/embed", files=uploads(shared_data / folder, names))
    assert embedded.status_code == 200, embedded.text
    np.testing.assert_allclose(embedded.json()["embedding"], reference.embed(record.signal, record.fs, record.raw_leads),
                               rtol=0, atol=1e-5)
    assert embedded.json()["seconds"] == pytest.approx(record.signal.shape[1] / record.fs)
    predicted = client.post("/predict", files=uploads(shared_data / folder, names))
    assert predicted.status_code == 200, predicted.text
    expected = predict_signal(*finetuned, record.signal, record.fs, record.raw_leads)
    np.testing.assert_allclose(list(predicted.json()["probabilities"].values()), expected, rtol=0, atol=1e-5)


def test_upload_plain_mat_with_rate_and_leads(client, shared_data, reference):
    """A CODE-15% .mat carries no rate or lead names: the form fields supply them."""
    path = shared_data / "code15" / "code_15_1238362.mat"
    record = read_record(path, fs=400, leads=list(STANDARD_12))
    response = client.post("/embed", files=uploads(path.parent, [path.name]),
                           data={"fs": "400", "leads": ",".join(STANDARD_12)})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["embedding"], reference.embed(record.signal, 400, list(STANDARD_12)),
                               rtol=0, atol=1e-5)


def test_upload_longer_than_the_limit(client, shared_data):
    """MIT-BIH 100 is 650000 samples at 360 Hz: refused from its header, with the figure."""
    response = client.post("/embed", files=uploads(shared_data / "mitdb", ["100.hea", "100.dat"]))
    assert response.status_code == 413
    assert "1805.6 s" in response.json()["detail"] and "300 s" in response.json()["detail"]
    assert_healthy(client)


def test_bad_uploads(client, shared_data, tmp_path):
    cinc = shared_data / "cinc2021"
    cases = [
        (uploads(cinc, ["E07500.hea"]), {}, "E07500.mat"),  # header without its signal file
        (uploads(cinc, ["E07500.hea", "E07501.hea", "E07500.mat"]), {}, "cannot tell which"),
        (uploads(cinc, ["E07500.hea", "E07500.mat"]), {"record": "E07999.hea"}, "not among the uploaded files"),
        ([("file", ("../E07500.hea", (cinc / "E07500.hea").read_bytes()))], {}, "not allowed"),
        ([("file", ("notes.txt", b"not an ECG\n"))], {}, "unsupported file type"),
        ([("file", ("broken.hea", b"not a header\n"))], {}, "broken.hea"),
        (uploads(shared_data / "code15", ["code_15_1238362.mat"]), {"fs": "400", "leads": "I,II,Q7"}, "Q7"),
        (uploads(shared_data / "code15", ["code_15_1238362.mat"]), {"fs": "-400", "leads": "I"}, "positive"),
    ]
    for files, data, message in cases:
        response = client.post("/embed", files=files, data=data)
        assert response.status_code == 422, (message, response.text)
        assert message in response.json()["detail"], response.json()
    fields_only = b'--x\r\nContent-Disposition: form-data; name="fs"\r\n\r\n400\r\n--x--\r\n'
    no_files = client.post("/embed", content=fields_only, headers={"content-type": "multipart/form-data; boundary=x"})
    assert no_files.status_code == 422 and "no files" in no_files.json()["detail"]
    assert_healthy(client)


ONE_SECOND = np.sin(np.linspace(0, 6 * np.pi, 360)).round(4).tolist()
BAD_JSON = [
    (b"{\"signal\": [[0.1, 0.2]], \"fs\": 360,", 400, "not valid JSON"),
    (b"[1, 2, 3]", 422, "JSON object"),
    (json.dumps({"signal": [ONE_SECOND], "leads": ["II"]}).encode(), 422, "missing ['fs']"),
    (json.dumps({"signal": [ONE_SECOND, ONE_SECOND], "fs": 360, "leads": ["II"]}).encode(), 422, "2 rows but 1 lead"),
    (json.dumps({"signal": [ONE_SECOND, ONE_SECOND[:-5]], "fs": 360, "leads": ["I", "II"]}).encode(), 422,
     "different lengths [360, 355]"),
    (json.dumps({"signal": [ONE_SECOND[:7] + [float("nan")] + ONE_SECOND[8:]], "fs": 360, "leads": ["II"]}).encode(),
     422, "1 NaN/inf samples (first: row 0, sample 7)"),
    (json.dumps({"signal": [ONE_SECOND[:3] + ["0.1"] + ONE_SECOND[4:]], "fs": 360, "leads": ["II"]}).encode(), 422,
     "must all be numbers"),
    (json.dumps({"signal": [ONE_SECOND[:3] + [None] + ONE_SECOND[4:]], "fs": 360, "leads": ["II"]}).encode(), 422,
     "must all be numbers"),
    (json.dumps({"signal": ONE_SECOND, "fs": 360, "leads": ["II"]}).encode(), 422, "list of rows"),
    (json.dumps({"signal": [[]], "fs": 360, "leads": ["II"]}).encode(), 422, "empty"),
    (json.dumps({"signal": [ONE_SECOND], "fs": -360, "leads": ["II"]}).encode(), 422, "positive sampling rate"),
    (json.dumps({"signal": [ONE_SECOND], "fs": 0, "leads": ["II"]}).encode(), 422, "positive sampling rate"),
    (json.dumps({"signal": [ONE_SECOND], "fs": "360", "leads": ["II"]}).encode(), 422, "must be a number"),
    (json.dumps({"signal": [ONE_SECOND], "fs": 360, "leads": ["V7x"]}).encode(), 422, "unknown lead name(s) ['V7x']"),
    (json.dumps({"signal": [ONE_SECOND], "fs": 360, "leads": "II"}).encode(), 422, "list of lead names"),
]


@pytest.mark.parametrize("endpoint", ["/embed", "/predict"])
@pytest.mark.parametrize("body,status,message", BAD_JSON, ids=[case[2] for case in BAD_JSON])
def test_malformed_json_gets_a_4xx(client, endpoint, body, status, message):
    response = client.post(endpoint, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert_healthy(client)


def test_wrong_content_type_and_method(client):
    response = client.post("/embed", content=b"0.1,0.2\n", headers={"content-type": "text/csv"})
    assert response.status_code == 415 and "text/csv" in response.json()["detail"]
    assert client.get("/embed").status_code == 405
    assert_healthy(client)


def test_recording_longer_than_the_limit(client):
    """Two rows of 360 samples at 1 Hz: 360 s, over the 300 s limit."""
    response = client.post("/embed", json={"signal": [ONE_SECOND, ONE_SECOND], "fs": 1, "leads": ["I", "II"]})
    assert response.status_code == 413
    assert "360.0 s" in response.json()["detail"] and "300 s" in response.json()["detail"]
    assert_healthy(client)


def test_body_over_the_limit(client):
    limit = LIMITS.max_request_bytes
    declared = client.post("/embed", content=b" " * (limit + 1), headers={"content-type": "application/json"})
    assert declared.status_code == 413 and str(limit) in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while the body arrives
        for _ in range(5):
            yield b" " * (limit // 4)

    streamed = client.post("/embed", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and str(limit) in streamed.json()["detail"]
    assert_healthy(client)
    just_under = client.post("/embed", content=b" " * (limit - 10) + b"[]", headers={"content-type": "application/json"})
    assert just_under.status_code == 422  # read in full, then refused for its content


def test_health_answers_during_inference(app, client, shared_data):
    """/health does not wait for the model: hold the model lock and ask while an /embed waits on it."""
    record = read_record(shared_data / "cinc2021" / "E07500.hea")
    results = {}
    with app.state.service.lock:
        worker = threading.Thread(target=lambda: results.setdefault("embed", client.post(
            "/embed", json=as_json(record.signal, record.fs, record.raw_leads))))
        worker.start()
        assert_healthy(client)
        assert "embed" not in results  # still waiting for the lock
    worker.join(timeout=60)
    assert results["embed"].status_code == 200


def test_predict_without_a_classifier():
    with serving(create_app(limits=LIMITS)) as bare:
        assert bare.get("/health").json()["classifier"] is None
        response = bare.post("/predict", json={"signal": [ONE_SECOND], "fs": 360, "leads": ["II"]})
        assert response.status_code == 409 and "--classifier" in response.json()["detail"]
        assert bare.post("/embed", json={"signal": [ONE_SECOND], "fs": 360, "leads": ["II"]}).status_code == 200


def test_missing_fastapi_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'anyecg\[serve\]'"):
        create_app()


def test_cli_serve(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "anyecg.cli", "serve", "--port", str(port), "--max-request-mb", "1"],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            assert process.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "anyecg serve did not answer /health within 60 s"
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["classifier"] is None
        too_big = httpx.post(f"{url}/embed", content=b" " * (2**20 + 1), headers={"content-type": "application/json"})
        assert too_big.status_code == 413  # --max-request-mb reached the app
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_published_classifier_serves_its_labels():
    from anyecg.families import FamilyModel

    published = Path(__file__).parents[1] / "models" / "published" / "ecgfm_finetuned.pt"  # official-format fixture
    record = read_record(Path(__file__).parents[2] / "src" / "anyecg" / "embedded" / "cinc2021" / "E07501.hea")
    with serving(create_app(classifier=published, limits=LIMITS)) as http:
        health = http.get("/health").json()
        response = http.post("/predict", json=as_json(record.signal, record.fs, record.raw_leads))
    assert response.status_code == 200, response.text
    model = FamilyModel.from_pretrained(published)
    assert health["classes"] == model.labels == list(response.json()["probabilities"])
    expected = model.predict(record.signal, record.fs, record.raw_leads)
    np.testing.assert_allclose(list(response.json()["probabilities"].values()), expected, rtol=0, atol=1e-6)
