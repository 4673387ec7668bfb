"""Behaviour of one replica over real HTTP: contracts, limits, errors, streams, files, batching."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from support import FERMION, ROOT, running_server, stop_process, wait_ready

APP = ROOT / "tests" / "apps" / "behaviour.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(APP, "--max-body-size", "64KiB", tmp_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in Prometheus text output (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.MULTILINE)
    for found_labels, value in pattern.findall(text):
        if all(part in found_labels for part in wanted.split(",") if part):
            return float(value)
    return 0.0


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# -- the contract -------------------------------------------------------------------------------


def test_signature_is_the_contract_with_defaults(http):
    assert http.post("/predict", json={"text": "ab"}).json() == {"output": "ab"}
    assert http.post("/predict", json={"text": "ab", "times": 3}).json() == {"output": "ababab"}


def test_async_endpoint(http):
    assert http.post("/apredict", json={"text": "hi"}).json() == "HI"


def test_get_endpoint_takes_query_parameters(http):
    answer = http.get("/lookup", params={"key": "k", "limit": "5", "tags": "a"}).json()
    assert answer == {"key": "k", "limit": 5, "tags": ["a"]}
    assert http.get("/lookup", params={"key": "k"}).json()["limit"] == 3


def test_curl_style_form_type_with_json_body_is_accepted(http):
    answer = http.post("/predict", content=b'{"text": "x"}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.json() == {"output": "x"}


def test_request_id_is_echoed(http):
    answer = http.post("/predict", json={"text": "x"}, headers={"x-request-id": "abc-123"})
    assert answer.headers["x-request-id"] == "abc-123"


# -- bad input ----------------------------------------------------------------------------------


def test_invalid_body_is_422_naming_the_field(http):
    missing = http.post("/predict", json={"times": 2})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["field"] == "text"
    assert "text" in missing.json()["error"] and "required" in missing.json()["error"].lower()
    wrong = http.post("/predict", json={"text": "a", "times": "many"})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "times"
    extra = http.post("/predict", json={"text": "a", "colour": "red"})
    assert extra.status_code == 422 and extra.json()["detail"][0]["field"] == "colour"
    broken = http.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422


def test_unknown_endpoint_is_404_and_lists_endpoints(http):
    answer = http.post("/predcit", json={})
    assert answer.status_code == 404
    assert "POST /predict" in answer.json()["error"]


def test_wrong_method_is_405(http):
    answer = http.get("/predict")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


def test_body_over_limit_is_413_without_reading_it(http):
    big = b"x" * (65 * 1024)
    declared = http.post("/predict", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413
    assert "limit" in declared.json()["error"]

    def chunks():
        for _ in range(100):
            yield b"y" * 1024

    chunked = http.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert http.post("/predict", json={"text": "still fine"}).status_code == 200


def test_unsupported_content_type_is_415(http):
    answer = http.post("/predict", content=b"text", headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    assert "application/json" in answer.json()["error"]


def test_handler_error_is_500_without_traceback_and_server_keeps_serving(http, server):
    answer = http.post("/boom", json={"message": "secret detail"})
    assert answer.status_code == 500
    body = answer.json()
    assert body["request_id"] and "ValueError" in body["error"]
    assert "Traceback" not in answer.text and "secret detail" not in answer.text  # the text stays in the log
    assert http.post("/predict", json={"text": "ok"}).status_code == 200
    wait_until(lambda: body["request_id"] in server.log())
    assert "Traceback" in server.log()


@pytest.mark.parametrize("kind, name", [("memory", "MemoryError"), ("overflow", "OverflowError")])
def test_running_out_of_memory_is_a_500_without_the_exception_text(http, server, kind, name):
    answer = http.post("/exhausted", json={"kind": kind})
    assert answer.status_code == 500
    body = answer.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"] == f"{name} in endpoint 'exhausted'; the details are in the server log under this request id"
    assert "secret-model" not in answer.text and "22.0 GiB" not in answer.text
    wait_until(lambda: body["request_id"] in server.log())
    assert "/srv/secret-model" in server.log()  # the operator still sees what happened


def test_a_stream_that_runs_out_of_memory_ends_with_an_error_event_without_its_text(http):
    with http.stream("POST", "/stream_exhausted", json={"n": 1}) as answer:
        events = sse_events(answer)
    assert events[0] == ("message", "0")
    assert events[1][0] == "error" and "MemoryError" in events[1][1]
    assert "secret-model" not in events[1][1]
    answer = http.post("/stream_exhausted", json={"n": 0})  # before the first item: a plain 500
    assert answer.status_code == 500 and "secret-model" not in answer.text


def test_timeout_is_504(http):
    answer = http.post("/slow", json={"seconds": 5})
    assert answer.status_code == 504
    assert "0.3" in answer.json()["error"]


def test_full_queue_is_429_with_retry_after(http, server, tmp_path):
    release = tmp_path / "release"
    started_a = tmp_path / "a"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(http.post, "/blocking", json={"tag": "q-a", "started": str(started_a), "release": str(release)})
        wait_until(started_a.exists)
        second = pool.submit(http.post, "/blocking", json={"tag": "q-b", "started": str(tmp_path / "b"), "release": str(release)})
        wait_until(lambda: metric(http.get("/metrics").text, "fermion_queue_depth", endpoint="blocking") == 1)
        third = http.post("/blocking", json={"tag": "q-c", "started": str(tmp_path / "c"), "release": str(release)})
        assert third.status_code == 429
        assert third.headers["retry-after"] == "1"
        release.write_text("go")
        assert first.result().status_code == 200
        assert second.result().status_code == 200
    assert http.get("/calls_of", params={"tag": "q-c"}).json() == 0


def test_client_disconnect_drops_queued_work(http, tmp_path):
    release = tmp_path / "release"
    started_a = tmp_path / "a"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(http.post, "/blocking", json={"tag": "d-a", "started": str(started_a), "release": str(release)})
        wait_until(started_a.exists)
        body = f'{{"tag": "d-b", "started": "{tmp_path / "b"}", "release": "{release}"}}'.encode()
        host, port = http.base_url.host, http.base_url.port
        raw = socket.create_connection((host, port))
        raw.sendall(
            b"POST /blocking HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_until(lambda: metric(http.get("/metrics").text, "fermion_queue_depth", endpoint="blocking") == 1)
        raw.close()
        wait_until(lambda: metric(http.get("/metrics").text, "fermion_queue_depth", endpoint="blocking") == 0)
        release.write_text("go")
        assert first.result().json() == "d-a"
    assert http.get("/calls_of", params={"tag": "d-b"}).json() == 0
    assert 'status="499"' in http.get("/metrics").text


# -- streams, files, batching --------------------------------------------------------------------


def sse_events(response: httpx.Response) -> list[tuple[str, str]]:
    events, kind = [], "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, line[6:]))
            kind = "message"
    return events


def test_stream_sends_one_event_per_item_then_end(http):
    with http.stream("POST", "/count", json={"n": 3}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer)
    assert events == [("message", "0"), ("message", "1"), ("message", "2"), ("end", "{}")]


def test_stream_error_midway_is_an_error_event(http):
    with http.stream("POST", "/stream_fail", json={"n": 2}) as answer:
        events = sse_events(answer)
    assert events[:2] == [("message", "0"), ("message", "1")]
    assert events[2][0] == "error" and "RuntimeError" in events[2][1] and "stream broke" not in events[2][1]


def test_stream_stops_when_the_client_goes_away(http):
    with http.stream("POST", "/ticker", json={"tag": "t-gone"}) as answer:
        lines = answer.iter_lines()
        assert next(lines) == "data: 0"
    wait_until(lambda: metric(http.get("/metrics").text, "fermion_requests_total", endpoint="ticker", status="499") == 1)
    produced = http.get("/calls_of", params={"tag": "t-gone"}).json()
    time.sleep(0.3)  # the generator would produce ~30 more items in this time if it were still running
    assert http.get("/calls_of", params={"tag": "t-gone"}).json() == produced


def test_stream_timeout_is_a_504_error_event(http):
    with http.stream("POST", "/slow_stream", json={"n": 5}) as answer:
        events = sse_events(answer)
    assert events[0] == ("message", "0")
    kind, data = events[-1]
    assert kind == "error"
    assert json.loads(data)["status"] == 504 and "timeout" in json.loads(data)["error"]


def test_stream_refusing_its_input_at_once_answers_a_real_422(http):
    answer = http.post("/refuses_early", json={"n": -1})
    assert answer.status_code == 422 and answer.json()["error"] == "n must not be negative"
    with http.stream("POST", "/refuses_early", json={"n": 0}) as empty:
        assert sse_events(empty) == [("end", "{}")]


def test_endpoint_can_ignore_unknown_fields_and_answer_errors_in_openai_shape(http):
    assert http.post("/lenient", json={"text": "a", "top_k": 3}).json() == "a"
    missing = http.post("/lenient", json={"top_k": 3})
    assert missing.status_code == 422
    error = missing.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "text" and "text" in error["message"]


def test_get_endpoint_takes_json_for_dict_parameters(http):
    assert http.get("/options_of", params={"options": '{"a": 1, "b": 2}'}).json() == 3


def test_file_as_multipart_upload_and_as_base64(http):
    upload = http.post("/size", files={"upload": ("a.txt", b"hello world", "text/plain")}, data={"label": "x"})
    assert upload.json() == {"size": 11, "filename": "a.txt", "content_type": "text/plain", "label": "x"}
    inline = http.post("/size", json={"upload": "aGVsbG8="})
    assert inline.json()["size"] == 5
    data_url = http.post("/size", json={"upload": "data:image/png;base64,aGVsbG8="})
    assert data_url.json()["content_type"] == "image/png"
    bad = http.post("/size", json={"upload": "%%%"})
    assert bad.status_code == 422 and "base64" in bad.json()["error"]


def test_file_lists_take_one_or_many_parts(http):
    one = http.post("/count_files", files=[("uploads", ("a", b"12", "text/plain"))])
    assert one.json() == [2]
    many = http.post("/count_files", files=[("uploads", ("a", b"12", "text/plain")), ("uploads", ("b", b"345", "text/plain"))])
    assert many.json() == [2, 3]
    schema = http.get("/openapi.json").json()["paths"]["/count_files"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert schema["schema"]["properties"]["uploads"]["items"]["format"] == "binary"


def test_batched_endpoint_is_served_per_item(http):
    values = list(range(12))
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda v: http.post("/double", json={"x": v}), values))
    assert [a.json() for a in answers] == [2 * v for v in values]
    sizes = http.get("/batches").json()
    assert max(sizes) <= 4 and max(sizes) > 1


def test_bad_item_fails_only_its_own_request(http):
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda v: http.post("/double", json={"x": v}), [1, -1, 3, 4]))
    assert [a.status_code for a in answers] == [200, 500, 200, 200]
    assert [answers[i].json() for i in (0, 2, 3)] == [2, 6, 8]


def test_endpoint_can_refuse_input_with_422(http):
    answer = http.post("/picky", json={"word": "abc1"})
    assert answer.status_code == 422
    assert answer.json()["error"] == "'abc1' is not a word: send letters only"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        batch = list(pool.map(lambda v: http.post("/checked", json={"x": v}), [1, -2, 3]))
    assert [a.status_code for a in batch] == [200, 422, 200]


def test_endpoint_can_return_raw_bytes(http):
    answer = http.get("/pixel")
    assert answer.headers["content-type"] == "image/png" and answer.headers["x-kind"] == "pixel"
    assert answer.content == b"\x89PNG fake"


def test_endpoint_can_decide_to_stream_at_run_time(http):
    assert http.post("/maybe_stream", json={"n": 2}).json() == {"items": [0, 1]}
    with http.stream("POST", "/maybe_stream", json={"n": 2, "stream": True}) as answer:
        lines = [line for line in answer.iter_lines() if line]
    assert lines == ['data: {"i":0}', 'data: {"i":1}', "data: [DONE]"]


# -- system endpoints ---------------------------------------------------------------------------


def test_metrics_cover_requests_latency_in_flight_queue_and_batches(http):
    http.post("/predict", json={"text": "m"})
    http.post("/double", json={"x": 1})
    text = http.get("/metrics").text
    assert metric(text, "fermion_requests_total", endpoint="predict", status="200") >= 1
    assert metric(text, "fermion_request_duration_seconds_count", endpoint="predict") >= 1
    assert "fermion_requests_in_flight" in text
    assert "fermion_queue_depth" in text
    assert metric(text, "fermion_batch_size_count", endpoint="double") >= 1
    assert metric(text, "fermion_ready") == 1


def test_openapi_describes_per_item_batched_contract_and_docs_render(http):
    doc = http.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["DoubleRequest"]["properties"]["x"]["type"] == "integer"
    assert schemas["DoubleResponse"]["type"] == "integer"
    assert doc["paths"]["/double"]["post"]["x-fermion"]["batch"] == {"max_batch_size": 4, "max_wait_ms": 50.0}
    assert "multipart/form-data" in doc["paths"]["/size"]["post"]["requestBody"]["content"]
    page = http.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert http.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert http.get("/healthz").json() == {"status": "ok"}


# -- life cycle ---------------------------------------------------------------------------------


def test_readyz_is_503_until_setup_finishes(tmp_path):
    gate = tmp_path / "gate"
    with running_server(APP, env={"FERMION_TEST_GATE": str(gate)}, wait=False, tmp_dir=tmp_path) as srv:
        wait_until(lambda: _get(srv.url + "/healthz") == 200, timeout=30)
        assert _get(srv.url + "/readyz") == 503
        early = httpx.post(srv.url + "/predict", json={"text": "x"})
        assert early.status_code == 503 and early.headers["retry-after"] == "1"
        gate.write_text("open")
        wait_until(lambda: _get(srv.url + "/readyz") == 200, timeout=30)
        assert httpx.post(srv.url + "/predict", json={"text": "x"}).status_code == 200


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def test_sigterm_finishes_in_flight_requests_then_exits_0(tmp_path):
    started = tmp_path / "started"
    with running_server(APP, tmp_dir=tmp_path) as srv:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, srv.url + "/sleepy", json={"seconds": 1.0, "started": str(started)}, timeout=30)
            wait_until(started.exists)
            code = srv.stop()
            answer = pending.result()
        assert answer.status_code == 200 and answer.json() == 1.0
        assert code == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url + "/healthz", timeout=2)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_with_a_drain_delay_keeps_serving_and_says_draining_then_exits_0(tmp_path, workers):
    """What a load balancer in front needs: after SIGTERM the replica answers requests on its open
    connections (one kept alive, as a balancer's pool would) and says it is leaving on /readyz; only
    after the delay does it close them. SIGINT skips the delay."""
    with running_server(APP, "--drain-delay", "3", "--workers", workers, tmp_dir=tmp_path) as srv:
        with httpx.Client(timeout=5) as pooled:
            assert pooled.post(srv.url + "/predict", json={"text": "a"}).status_code == 200
            signalled = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: _get(srv.url + "/readyz") == 503, timeout=2)
            assert httpx.get(srv.url + "/readyz").json() == {"status": "draining"}
            assert pooled.post(srv.url + "/predict", json={"text": "b"}).status_code == 200
            assert srv.proc.wait(30) == 0
            assert time.monotonic() - signalled >= 2.5
    with running_server(APP, "--drain-delay", "30", tmp_dir=tmp_path) as srv:
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(20) == 0 and time.monotonic() - signalled < 15


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_port_file_says_where_a_port_0_server_listens_and_goes_when_it_stops(tmp_path, workers):
    """What a program that starts `fermion serve --port 0` reads instead of the banner: one whole JSON
    document, never half of one, written once by the process that owns the socket."""
    folder = tmp_path / "run"
    folder.mkdir()
    port_file = folder / "replica.port"
    seen: set[str] = set()
    stop_watching = threading.Event()

    def watch() -> None:  # an impatient reader: reads as often as it can, from before the server starts
        while not stop_watching.is_set():
            with contextlib.suppress(FileNotFoundError):
                seen.add(port_file.read_text())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    log_path = tmp_path / "serve.log"
    command = [*FERMION, "serve", str(APP), "--port", "0", "--port-file", str(port_file), "--workers", workers]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    try:
        wait_until(lambda: bool(seen) or proc.poll() is not None, timeout=90)
        assert seen, log_path.read_text()
        record = json.loads(port_file.read_text())
        port = record["port"]
        expected = {"url": f"http://127.0.0.1:{port}", "scheme": "http", "port": port, "pid": proc.pid, "version": 1}
        assert record == {**expected, "unix_socket": None}
        assert f"API     {record['url']}" in log_path.read_text()  # the banner, for people, says the same
        wait_ready(record["url"], proc, 90, log_path)
        assert httpx.get(record["url"] + "/healthz").status_code == 200
        assert [path.name for path in folder.iterdir()] == ["replica.port"]  # renamed into place: no temporary file left
    finally:
        code = stop_process(proc)
        stop_watching.set()
        watcher.join()
    assert code == 0
    assert not port_file.exists()  # removed on a clean exit
    assert [json.loads(text) for text in seen] == [record]  # the reader only ever saw the whole document


def test_a_replica_also_serves_on_its_unix_socket_for_a_proxy_beside_it(tmp_path):
    """`--unix-socket`: the same app on a socket file only its user may open, named in the port file, gone at exit;
    a path longer than a socket address holds still works (bound from its folder)."""
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    deep.mkdir(parents=True)
    sock = deep / "http.sock"
    assert len(str(sock)) > 107
    with running_server(APP, "--unix-socket", str(sock), tmp_dir=tmp_path) as srv:
        assert json.loads(srv.log_path.with_suffix(".port").read_text())["unix_socket"] == str(sock)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        here = os.getcwd()
        os.chdir(deep)  # httpx's transport takes the socket's path as the OS does: relative, to fit
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds="http.sock"), base_url="http://replica") as over_socket:
                assert (
                    over_socket.post("/predict", json={"text": "hi"}).json()
                    == httpx.post(srv.url + "/predict", json={"text": "hi"}).json()
                )
        finally:
            os.chdir(here)
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(30) == 0
    assert not sock.exists()
    refused = subprocess.run(
        [*FERMION, "serve", str(APP), "--unix-socket", str(tmp_path / "x.sock"), "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert refused.returncode == 2 and "--unix-socket serves one process" in refused.stderr


def test_setup_failure_exits_3_with_its_message(tmp_path):
    with running_server(APP, env={"FERMION_TEST_SETUP_FAIL": "1"}, wait=False, tmp_dir=tmp_path) as srv:
        assert srv.proc.wait(60) == 3
        assert "setup() of Behaviour raised RuntimeError: model file missing" in srv.log()


def test_workers_share_the_port_aggregate_metrics_and_stop_cleanly(tmp_path):
    with running_server(APP, "--workers", "2", tmp_dir=tmp_path) as srv:
        children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children").read_text().split()
        assert len(children) == 2
        tag = uuid.uuid4().hex
        for _ in range(10):  # a worker takes connections only once its setup() is done: no 503s
            with httpx.Client() as fresh:  # a new connection each time, so either worker may answer
                assert fresh.post(srv.url + "/predict", json={"text": tag}).status_code == 200
        # each worker publishes its counters every second; any worker's scrape adds them all up
        wait_until(
            lambda: metric(httpx.get(srv.url + "/metrics").text, "fermion_requests_total", endpoint="predict", status="200") == 10
        )
        cpus = len(os.sched_getaffinity(0))
        expected = os.environ.get("OMP_NUM_THREADS", str(max(1, cpus // 2)))  # workers × threads ≤ cores
        assert httpx.get(srv.url + "/compute_threads").json() == expected
        assert srv.stop() == 0
        for pid in children:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
