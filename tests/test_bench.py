"""`fermion bench` and `fermion.bench.run_load`: correct counts, honest errors, a usable report (not speed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from support import EXAMPLES, FERMION, ROOT, free_port, running_server

from fermion.bench import LoadResult, percentile, run_load
from fermion.bench.pyload import build_request, chunked_end
from fermion.bench.wrk import lua_script, parse_output

ENGINES = [
    "python",
    pytest.param("wrk", marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")),
]
ECHO_BODY = b'{"text": "hello world"}'

FAILING_APP = textwrap.dedent(
    '''
    from fermion import Service, endpoint


    class Failing(Service):
        """Answers 200, or 500 when asked to fail."""

        @endpoint
        def ok(self, text: str) -> str:
            return text

        @endpoint
        def boom(self, text: str) -> str:
            raise RuntimeError("this endpoint always fails")
    '''
)


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    with running_server(EXAMPLES / "echo.py", tmp_dir=tmp_path_factory.mktemp("echo")) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def failing(tmp_path_factory):
    folder = tmp_path_factory.mktemp("failing")
    (folder / "failing.py").write_text(FAILING_APP)
    with running_server(folder / "failing.py", tmp_dir=folder) as srv:
        yield srv.url


def assert_ordered(result: LoadResult) -> None:
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.max_ms
    values = [result.percentiles[key] for key in sorted(result.percentiles, key=float)]
    assert values == sorted(values)


@pytest.mark.parametrize("engine", ENGINES)
def test_run_load_counts_every_answer(echo, engine):
    result = run_load(
        echo + "/predict", body=ECHO_BODY, concurrency=4, duration=0.5, warmup=0.2 if engine == "python" else 0, engine=engine
    )
    assert result.engine == engine
    assert result.requests > 0 and result.rps > 0
    assert result.statuses == {"200": result.requests}
    assert result.errors == 0 and result.ok == result.requests
    assert result.socket_errors == {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    assert_ordered(result)
    assert result.engine_cpu_s is not None and result.engine_cpu_s >= 0


@pytest.mark.parametrize("engine", ENGINES)
def test_run_load_counts_errors_by_status(failing, engine):
    server_error = run_load(failing + "/boom", body=b'{"text": "x"}', concurrency=2, duration=0.5, warmup=0, engine=engine)
    assert server_error.requests > 0
    assert server_error.statuses == {"500": server_error.requests}
    assert server_error.errors == server_error.requests and server_error.ok == 0
    invalid = run_load(failing + "/ok", body=b'{"wrong": 1}', concurrency=2, duration=0.5, warmup=0, engine=engine)
    assert invalid.statuses == {"422": invalid.requests} and invalid.requests > 0
    assert invalid.error_statuses == {"422": invalid.requests}


def test_python_engine_reads_chunked_streams():
    with running_server(EXAMPLES / "streaming.py") as srv:
        result = run_load(srv.url + "/count", body=b'{"n": 5}', concurrency=2, duration=0.5, warmup=0, engine="python")
    assert result.requests > 0 and result.statuses == {"200": result.requests}


def test_refused_connections_are_errors_not_silence():
    result = run_load(
        f"http://127.0.0.1:{free_port()}/predict", body=ECHO_BODY, concurrency=2, duration=0.3, warmup=0, engine="python"
    )
    assert result.requests == 0 and result.rps == 0
    assert result.socket_errors["connect"] > 0 and result.errors == result.socket_errors["connect"]


def test_timeouts_are_counted():
    # a server that accepts but never answers: a listening socket nobody reads from
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        result = run_load(url, body=b"{}", concurrency=2, duration=0.8, warmup=0, engine="python", timeout=0.2)
    assert result.requests == 0 and result.socket_errors["timeout"] >= 2


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0 and percentile([], 50) == 0.0


def test_request_bytes_and_chunked_framing():
    host, port, tls, request = build_request("http://127.0.0.1:9/a?b=1", "POST", b"{}", {"Content-Type": "application/json"})
    assert (host, port, tls) == ("127.0.0.1", 9, False)
    assert request.startswith(b"POST /a?b=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert b"Content-Length: 2\r\n" in request and request.endswith(b"\r\n\r\n{}")
    body = bytearray(b"HDR4\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n")
    assert chunked_end(body, 4) == len(body)
    assert chunked_end(body[:-2], 4) == -1
    with_trailer = bytearray(b"0\r\nX-Trailer: 1\r\n\r\n")
    assert chunked_end(with_trailer, 0) == len(with_trailer)


def test_wrk_script_and_output_parsing():
    script = lua_script("POST", b'{"a": "]]\\n"}', {"X-Token": "t"}, status_detail=True)
    assert 'wrk.method = "\\80\\79\\83\\84"' in script and "function response" in script
    assert "function response" not in lua_script("GET", None, {}, status_detail=False)
    line = (
        'FERMION_BENCH_JSON {"requests": 10, "duration_us": 2000000, "bytes": 1, "connect": 0, "read": 1, "write": 0, '
        '"status": 3, "timeout": 2, "mean_ms": 1.5, "max_ms": 9.0, "percentiles": {"50": 1.0, "90": 2.0, "99": 8.0}, '
        '"codes": {}}'
    )
    result = parse_output(line, "", 0, url="http://x/", method="GET", concurrency=4, status_detail=False)
    assert result.rps == 5.0 and result.statuses == {"2xx/3xx": 7, "4xx/5xx": 3}
    assert result.errors == 3 + 1 + 2 and result.p99_ms == 8.0


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*FERMION, "bench", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_cli_prints_the_report_and_writes_json(echo, tmp_path):
    out = tmp_path / "report.json"
    result = bench(echo, "predict", "-c", "2", "-d", "0.5", "--warmup", "0", "--engine", "python", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "req/s" in result.stdout and "p99" in result.stdout and "errors      none (200:" in result.stdout
    assert "python (uvloop" in result.stdout or "python (asyncio)" in result.stdout
    report = json.loads(out.read_text())
    documented = {
        "endpoint",
        "arguments",
        "engine",
        "engine_version",
        "fermion_version",
        "finished_at",
        "url",
        "method",
        "concurrency",
        "duration_s",
        "requests",
        "rps",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "max_ms",
        "statuses",
        "socket_errors",
        "percentiles",
        "ok",
        "errors",
        "engine_cpu_s",
        "engine_busy",
    }
    assert documented <= set(report)
    assert report["endpoint"] == "predict" and report["arguments"] == {"text": "hello"}  # example built from the schema
    assert report["url"] == echo + "/predict" and report["statuses"] == {"200": report["requests"]}


def test_cli_json_body_and_error_statuses(echo):
    result = bench(echo, "predict", "-c", "1", "-d", "0.5", "--warmup", "0", "--engine", "python", "--body", '{"times": 2}')
    assert result.returncode == 1  # every request failed validation
    assert "422:" in result.stdout
    assert error_lines(result) == [error_lines(result)[0]] and "no request succeeded" in error_lines(result)[0]


def test_cli_unknown_endpoint_is_one_line(echo):
    result = bench(echo, "nope")
    assert result.returncode == 2
    assert error_lines(result) == [f"error: {echo} has no endpoint 'nope'; it has: predict, info"]
    assert "Traceback" not in result.stderr


def test_cli_unreachable_url_is_one_line():
    result = bench(f"http://127.0.0.1:{free_port()}", "predict")
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "cannot reach" in lines[0] and "Traceback" not in result.stderr


def test_cli_plot_without_matplotlib_says_what_to_install(echo, tmp_path):
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    result = bench(echo, "predict", "--plot", str(tmp_path / "p.png"), env={"PYTHONPATH": str(fake.parent)})
    assert result.returncode == 2
    assert error_lines(result) == ["error: plotting needs matplotlib: pip install 'fermion[bench]'"]


def test_cli_plot_draws_a_png(echo, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "latency.png"
    result = bench(echo, "predict", "-c", "2", "-d", "1", "--warmup", "0", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_a_bad_engine(echo):
    result = bench(echo, "predict", "--engine", "jmeter")
    assert result.returncode == 2 and "unknown engine 'jmeter'" in error_lines(result)[0]


def test_importing_fermion_bench_stays_light():
    code = "import sys, fermion.bench; print(any(m in sys.modules for m in ('httpx', 'rich', 'matplotlib', 'uvloop')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
