"""The wrk engine: drive the load with the `wrk` binary and read its numbers back as JSON.

A generated Lua script sets the method, body and headers, and its `done()` prints the summary
and latency percentiles as one JSON line. With `status_detail` each wrk thread also counts answers
by status in a `response()` hook (exact codes, a little more CPU per request in wrk); without it,
wrk's own counter gives only the number of 4xx/5xx answers.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from fermion.bench.result import PERCENTILES, LoadResult, _pct_key

MARK = "FERMION_BENCH_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed nothing we can read."""


def wrk_path() -> str | None:
    """Where the `wrk` binary is, or None."""
    return shutil.which("wrk")


def wrk_version() -> str:
    """`wrk 4.1.0`-style version text, or "wrk" when it cannot be read."""
    path = wrk_path()
    if not path:
        return "wrk"
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"wrk\s+(?:\S*/)?(\d[\w.]*)", done.stdout + done.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def _lua_string(value: str | bytes) -> str:
    """A Lua string literal for any bytes: every byte as a decimal escape."""
    data = value.encode() if isinstance(value, str) else value
    return '"' + "".join(f"\\{b}" for b in data) + '"'


def lua_script(method: str, body: bytes | None, headers: dict[str, str], status_detail: bool) -> str:
    """The Lua script that configures the request and prints the results as JSON."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    pcts = ", ".join(f"{{{_lua_string(_pct_key(p))}, {p}}}" for p in PERCENTILES)
    lines.append(
        f"""
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
{
            '''function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end'''
            if status_detail
            else ""
        }
local function num(x) return string.format("%.3f", x / 1000.0) end
function done(summary, latency, requests)
  local out = {{}}
  local e = summary.errors
  table.insert(out, string.format('"requests": %d, "duration_us": %d, "bytes": %d', summary.requests, summary.duration, summary.bytes))
  table.insert(out, string.format('"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d', e.connect, e.read, e.write, e.status, e.timeout))
  table.insert(out, '"mean_ms": ' .. num(latency.mean) .. ', "max_ms": ' .. num(latency.max))
  local pcts = {{}}
  for _, p in ipairs({{{pcts}}}) do
    local v = (p[2] == 0) and latency.min or ((p[2] == 100) and latency.max or latency:percentile(p[2]))
    table.insert(pcts, '"' .. p[1] .. '": ' .. num(v))
  end
  table.insert(out, '"percentiles": {{' .. table.concat(pcts, ", ") .. '}}')
  local codes = {{}}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    if c then for k, v in pairs(c) do codes[k] = (codes[k] or 0) + v end end
  end
  local parts = {{}}
  for k, v in pairs(codes) do table.insert(parts, string.format('"%d": %d', k, v)) end
  table.insert(out, '"codes": {{' .. table.concat(parts, ", ") .. '}}')
  io.write("{MARK}{{" .. table.concat(out, ", ") .. "}}\\n")
end
"""
    )
    return "\n".join(lines)


def run_wrk(
    url: str,
    *,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
    threads: int = 1,
    timeout: float = 10.0,
    cpu: int | None = None,
    status_detail: bool = True,
    progress: Callable[[float], None] | None = None,
) -> LoadResult:
    """One wrk run of `duration` seconds (rounded up to whole seconds, as wrk takes them)."""
    path = wrk_path()
    if path is None:
        raise WrkError("wrk is not installed; install it (apt-get install wrk) or use --engine python")
    if urlsplit(url).scheme not in ("http", "https"):
        raise WrkError(f"{url!r} is not an http(s) URL")
    seconds = max(1, int(-(-duration // 1)))
    threads = max(1, min(threads, concurrency))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="fermion-bench-", delete=False) as script:
        script.write(lua_script(method, body, headers, status_detail))
    cmd = [
        path,
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds}s",
        "--timeout",
        f"{max(1, round(timeout))}s",
        "-s",
        script.name,
        url,
    ]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    cpu_before = _children_cpu()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        start = time.monotonic()
        try:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    if progress is not None:
                        progress(min(time.monotonic() - start, seconds))
                    if time.monotonic() - start > seconds + timeout + 30:
                        raise WrkError(f"wrk did not finish {seconds} s run in time") from None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        os.unlink(script.name)
    if progress is not None:
        progress(float(seconds))
    result = parse_output(
        stdout, stderr, proc.returncode, url=url, method=method, concurrency=concurrency, status_detail=status_detail
    )
    result.engine_cpu_s = round(_children_cpu() - cpu_before, 3)
    return result


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_output(
    stdout: str, stderr: str, returncode: int, *, url: str, method: str, concurrency: int, status_detail: bool
) -> LoadResult:
    """wrk's stdout (with our JSON line) → LoadResult."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        reason = (stderr.strip() or stdout.strip() or f"exit code {returncode}").splitlines()[-1]
        raise WrkError(f"wrk failed against {url}: {reason}")
    data = json.loads(line[len(MARK) :])
    duration_s = data["duration_us"] / 1e6
    requests = data["requests"]
    if status_detail and data["codes"]:
        statuses = {str(k): int(v) for k, v in data["codes"].items()}
    else:
        failed = data["status"]
        statuses = {"2xx/3xx": requests - failed, "4xx/5xx": failed} if failed else {"2xx/3xx": requests}
    pcts = data["percentiles"]
    if requests == 0:  # wrk's empty histogram reports its minimum as 2**64 - 1
        pcts = {key: 0.0 for key in pcts}
        data["mean_ms"] = data["max_ms"] = 0.0
    return LoadResult(
        engine="wrk",
        url=url,
        method=method,
        concurrency=concurrency,
        duration_s=round(duration_s, 3),
        requests=requests,
        rps=round(requests / duration_s, 2) if duration_s else 0.0,
        p50_ms=pcts["50"],
        p90_ms=pcts["90"],
        p99_ms=pcts["99"],
        mean_ms=data["mean_ms"],
        max_ms=data["max_ms"],
        statuses=dict(sorted(statuses.items())),
        socket_errors={k: data[k] for k in ("connect", "read", "write", "timeout")},
        percentiles=pcts,
    )
