"""The `fermion` command, run as a user runs it: a real process, real output, real exit codes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import EXAMPLES, FERMION, ROOT, free_port, running_server, wait_ready

from fermion import __version__

APPS = ROOT / "tests" / "apps"


def fermion(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FERMION, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_version():
    result = fermion("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"fermion {__version__}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("examples/nope.py", r"no file 'examples/nope\.py'"),
        ("examples/echo.py:Ech", r"no class 'Ech' in examples/echo\.py; did you mean 'Echo'\?"),
        (str(APPS / "cli_syntax_error.py"), r"syntax error in .*cli_syntax_error\.py:6"),
        (str(APPS / "cli_two_services.py"), r"several Services \(First, Second\); pick one: .*cli_two_services\.py:First"),
        (str(APPS / "cli_import_error.py"), r"failed to import: ModuleNotFoundError: No module named 'numpy_but_misspelled'"),
        (str(APPS / "cli_bad_batch.py"), r"is batched \(max_batch_size=8\).*`text: list\[\.\.\.\]`"),
        ("no_such_module:Thing", r"no Python file or module named 'no_such_module'"),
    ],
)
def test_serve_bad_source_is_one_clear_line(source, expected):
    result = fermion("serve", source, "--port", "0")
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_serve_port_in_use_is_one_clear_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = fermion("serve", "examples/echo.py", "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in error_lines(result)[0]


def test_serve_port_file_in_a_missing_folder_is_one_clear_line(tmp_path):
    result = fermion("serve", "examples/echo.py", "--port", "0", "--port-file", str(tmp_path / "no-such-folder" / "echo.port"))
    assert result.returncode == 2
    assert f"cannot write --port-file {tmp_path / 'no-such-folder' / 'echo.port'}" in error_lines(result)[0]


def test_serve_bad_option_value():
    result = fermion("serve", "examples/echo.py", "--max-body-size", "lots")
    assert result.returncode == 2
    assert "16MiB" in error_lines(result)[0]


def test_serve_prints_urls_and_snippets_that_work(tmp_path):
    with running_server(EXAMPLES / "echo.py", tmp_dir=tmp_path) as srv:
        log = srv.log()
        assert f"API     {srv.url}" in log
        assert f"Docs    {srv.url}/docs" in log
        curl = re.search(r"Try it  (curl .*)", log).group(1)
        assert f"{srv.url}/predict" in curl and '{"text": "hello"}' in curl
        snippet = re.search(r"Python  (.*)", log).group(1)
        ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        assert "echo: hello" in ran.stdout


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory):
    with running_server(APPS / "behaviour.py", tmp_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def test_call_prints_json(behaviour):
    result = fermion("call", behaviour.url, "predict", "text=ab", "times=2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"output": "abab"}


def test_call_keeps_strings_that_look_like_numbers(behaviour):
    result = fermion("call", behaviour.url, "predict", "text=42")
    assert json.loads(result.stdout) == {"output": "42"}


def test_call_with_json_body(behaviour):
    result = fermion("call", behaviour.url, "predict", "--body", '{"text": "x", "times": 3}')
    assert json.loads(result.stdout) == {"output": "xxx"}


def test_renamed_options_keep_their_old_spelling_for_a_release_with_a_warning(behaviour):
    old = fermion("call", behaviour.url, "predict", "--json", '{"text": "x", "times": 2}', "--timeout=30")
    assert old.returncode == 0 and json.loads(old.stdout) == {"output": "xx"}, old.stderr
    assert old.stderr.splitlines() == [
        "warning: `fermion call --json` is deprecated: use --body (the old spelling goes away in the next release)",
        "warning: `fermion call --timeout` is deprecated: use --request-timeout (the old spelling goes away in the next release)",
    ]
    helped = fermion("call", "--help").stdout
    assert "--body" in helped and "--json" not in helped and "--timeout " not in helped  # hidden: only the new names


def test_every_client_reads_a_url_without_scheme_as_http(behaviour):
    from fermion.client import Client
    from fermion.client._url import http_url

    assert http_url("localhost:8000/") == "http://localhost:8000"
    assert http_url(" https://h/x ") == "https://h/x"
    for bad in ("", "ftp://h", None):
        with pytest.raises(ValueError, match="needs"):
            http_url(bad)
    with Client(behaviour.url.removeprefix("http://")) as client:
        assert client.url == behaviour.url and client.predict(text="y") == {"output": "y"}


def test_call_streams_items_as_lines(behaviour):
    result = fermion("call", behaviour.url, "count", "n=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["0", "1", "2"]


def test_call_uploads_files(behaviour, tmp_path):
    upload = tmp_path / "hello.txt"
    upload.write_text("hello")
    result = fermion("call", behaviour.url, "size", f"upload=@{upload}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["size"] == 5


def test_call_errors_exit_non_zero_with_the_servers_message(behaviour):
    result = fermion("call", behaviour.url, "boom", "message=bad")
    assert result.returncode == 1
    assert "500" in error_lines(result)[0] and "ValueError in endpoint 'boom'" in error_lines(result)[0]
    unknown = fermion("call", behaviour.url, "predcit", "text=x")
    assert unknown.returncode == 2
    assert "predict" in error_lines(unknown)[0]
    missing = fermion("call", behaviour.url, "predict")
    assert missing.returncode != 0 and "text" in error_lines(missing)[0]


def test_call_accepts_a_url_without_scheme_and_saves_raw_bytes(behaviour, tmp_path):
    target = tmp_path / "pixel.png"
    with open(target, "wb") as out:
        result = subprocess.run(
            [*FERMION, "call", behaviour.url.removeprefix("http://"), "pixel"],
            stdout=out,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"\x89PNG fake"


def test_the_fermion_script_finds_modules_in_the_current_folder(tmp_path):
    (tmp_path / "mymodels.py").write_text((EXAMPLES / "echo.py").read_text())
    script = str(Path(sys.executable).parent / "fermion")
    result = subprocess.run(
        [script, "serve", "mymodels:Ech", "--port", "0"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "no class 'Ech' in mymodels; did you mean 'Echo'?" in result.stderr


def test_serve_reads_its_settings_from_the_environment(tmp_path):
    port = str(free_port())
    env = {**os.environ, "FERMION_PORT": port, "FERMION_MAX_BODY_SIZE": "1KiB"}
    proc = subprocess.Popen(
        [*FERMION, "serve", "examples/echo.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, 60)
        assert httpx.post(f"http://127.0.0.1:{port}/predict", content=b"x" * 2000).status_code == 413
    finally:
        proc.terminate()
        proc.wait(30)


def test_call_unreachable_server_is_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = fermion("call", f"http://127.0.0.1:{port}", "predict", "text=x")
    assert result.returncode == 1
    assert len(error_lines(result)) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("source", "module", "extra"),
    [("st:all-MiniLM-L6-v2", "sentence_transformers", "st"), ("onnx:x.onnx", "onnxruntime", "onnx")],
)
def test_missing_extra_is_one_line_naming_the_pip_install(source, module, extra):
    program = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['fermion', 'serve', {source!r}, '--port', '0']; "
        "from fermion.cli import main; main()"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: the '{source.split(':')[0]}:' source needs {module}, which is not installed; run: pip install 'fermion[{extra}]'"
    ]
