"""RESULTS.md and the chart, from the newest result file of each benchmark in benchmarks/results/.

Standard library only (the chart part imports matplotlib, in the suite's own `tools` environment).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from suite.batch_report import batch_section, batch_targets
from suite.llm_report import llm_section, llm_targets
from suite.target import Target, ratio_target

#: examples/embeddings.py batches with max_wait_ms=5: the 1-client target allows that plus 1 ms.
FERMION_MAX_WAIT_MS = 5.0


def latest_results(results: Path) -> dict[str, dict[str, Any]]:
    """The newest `<time>-<bench>.json` of each benchmark, by bench name."""
    newest: dict[str, Path] = {}
    for path in sorted(results.glob("[0-9]*-*.json")):  # the suite's runs; training-*.json belong to training.py
        newest[path.stem.rsplit("-", 1)[-1]] = path
    return {bench: {**json.loads(path.read_text()), "file": path.name} for bench, path in newest.items()}


def _rps(record: dict[str, Any] | None, peer: str) -> float | None:
    entry = (record or {}).get("peers", {}).get(peer, {})
    return entry.get("rps") if "skipped" not in entry else None


def targets(runs: dict[str, dict[str, Any]]) -> list[Target]:
    """Every target of the benchmark issue, measured against the newest results."""
    echo, minilm, startup = runs.get("echo"), runs.get("minilm"), runs.get("startup")
    rows: list[Target] = []

    def ratio(name: str, goal: str, num: float | None, den: float | None, limit: float, at_least: bool) -> None:
        rows.append(ratio_target(name, goal, num, den, limit, at_least))

    fermion = _rps(echo, "fermion")
    ratio("echo: Fermion vs bare ASGI (same validation, 1 worker)", "≥ 0.6×", fermion, _rps(echo, "asgi"), 0.6, True)
    ratio("echo: Fermion vs LitServe", "≥ 8×", fermion, _rps(echo, "litserve"), 8.0, True)
    raw = (minilm or {}).get("raw_model", {}).get("sentences_per_s", {})
    served = _rps(minilm, "fermion")
    ratio("MiniLM, 64 clients: Fermion vs raw model, batches of 32", "≥ 0.85×", served, raw.get("32"), 0.85, True)
    fermion_minilm = (minilm or {}).get("peers", {}).get("fermion", {})
    clients = (minilm or {}).get("method", {}).get("concurrency", 64)
    bound = clients / served * 1000 if served else None
    ratio(
        f"MiniLM: p99 vs queueing bound ({clients} clients ÷ throughput)",
        "≤ 1.5×",
        fermion_minilm.get("p99_ms"),
        bound,
        1.5,
        False,
    )
    at_one = fermion_minilm.get("at_1", {}).get("p50_ms")
    unbatched_at_one = (minilm or {}).get("peers", {}).get("fermion-unbatched", {}).get("at_1", {}).get("p50_ms")
    limit = FERMION_MAX_WAIT_MS + 1.0
    name = "MiniLM, 1 client: added p50 (Fermion batched − the same model unbatched)"
    if unbatched_at_one is None or at_one is None:
        rows.append(Target(name, f"≤ {limit:g} ms", "not measured", None))
    else:
        added = at_one - unbatched_at_one
        rows.append(Target(name, f"≤ {limit:g} ms", f"{added:.2f} ms ({at_one:.2f} − {unbatched_at_one:.2f})", added <= limit))
    imported = (startup or {}).get("import", {}).get("import_s")
    rows.append(
        Target(
            "`import fermion`",
            "< 0.3 s",
            f"{imported:.3f} s" if imported is not None else "not measured",
            None if imported is None else imported < 0.3,
        )
    )
    replica = (startup or {}).get("replica", {})
    ready = replica.get("ready_s")
    rows.append(
        Target(
            "echo replica: process start → /readyz 200",
            "< 1.5 s",
            f"{ready:.2f} s" if ready is not None else "not measured",
            None if ready is None else ready < 1.5,
        )
    )
    rss = max((v for v in (replica.get("rss_ready_mb"), replica.get("rss_after_load_mb")) if v is not None), default=None)
    rows.append(
        Target(
            "echo replica RSS (ready, after load)",
            "< 100 MB",
            f"{replica.get('rss_ready_mb')} MB, {replica.get('rss_after_load_mb')} MB" if rss is not None else "not measured",
            None if rss is None else rss < 100,
        )
    )
    rows += _gateway_targets(runs.get("gateway"))
    rows += llm_targets(runs.get("llm"))
    rows += batch_targets(runs.get("batch"))
    return rows


def _gateway_targets(record: dict[str, Any] | None) -> list[Target]:
    """The platform issue's gateway targets: throughput kept through the gateway, latency added."""
    cases = (record or {}).get("cases", {})
    rows = []
    for bench, goal in (("minilm", 0.95), ("echo", 0.5)):
        case = cases.get(bench, {})
        name = f"{'MiniLM' if bench == 'minilm' else 'echo'}, 64 clients: through the gateway vs direct to the replica"
        ratio = case.get("throughput_ratio")
        if "gateway" not in case or ratio is None:  # None: the direct run answered nothing to compare with
            rows.append(Target(name, f"≥ {goal}×", "not measured", None))
            continue
        measured = f"{ratio:.2f}× ({case['gateway']['rps']:,.1f} / {case['direct']['rps']:,.1f})"
        rows.append(Target(name, f"≥ {goal}×", measured, ratio >= goal))
    echo = cases.get("echo", {})
    name = "echo, 1 client: p50 the gateway adds"
    if "added_p50_ms_1_client" in echo:
        added = echo["added_p50_ms_1_client"]
        rows.append(
            Target(
                name,
                "≤ 1 ms",
                f"{added:.2f} ms ({echo['gateway_1']['p50_ms']:.2f} − {echo['direct_1']['p50_ms']:.2f})",
                added <= 1.0,
            )
        )
    else:
        rows.append(Target(name, "≤ 1 ms", "not measured", None))
    return rows


def _gateway_section(record: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## The platform's gateway",
        "",
        f"From {record['file']}: `fermion up` and the replica it starts share the same CPUs (the replica inherits the "
        "taskset); the same replica is measured directly, then through `/run/<name>/...`.",
        "",
        "| case | CPUs | direct req/s | gateway req/s | ratio | direct p50 ms | gateway p50 ms | added p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for bench, case in record.get("cases", {}).items():
        if "gateway" not in case:
            lines.append(f"| {bench} | – | not measured: {case.get('skipped', '')[:80]} | | | | | |")
            continue
        d, g = case["direct"], case["gateway"]
        ratio = "–" if case.get("throughput_ratio") is None else f"{case['throughput_ratio']:.2f}×"
        lines.append(
            f"| {bench}, 64 clients | {case['cpus']} | {d['rps']:,.1f} | {g['rps']:,.1f} | {ratio} "
            f"| {d['p50_ms']:.2f} | {g['p50_ms']:.2f} | {case['added_p50_ms']:+.2f} |"
        )
        if "gateway_1" in case:
            d1, g1 = case["direct_1"], case["gateway_1"]
            lines.append(
                f"| {bench}, 1 client | {case['cpus']} | {d1['rps']:,.1f} | {g1['rps']:,.1f} | {g1['rps'] / d1['rps']:.2f}× "
                f"| {d1['p50_ms']:.2f} | {g1['p50_ms']:.2f} | {case['added_p50_ms_1_client']:+.2f} |"
            )
    return lines


def _times(ratio: float) -> str:
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.3f}×"


#: The backends the `backends` benchmark runs, in its order, as the report names them.
BACKEND_LABELS = {"local": "local processes", "ray": "Ray Serve, its proxy", "ray-haproxy": "Ray Serve, HAProxy ingress"}


def _backends_section(record: dict[str, Any]) -> list[str]:
    cases = record.get("cases", {})
    lines = [
        "",
        "## Platform backends: local processes vs Ray Serve",
        "",
        f"From {record['file']}{' (quick)' if record.get('quick') else ''}: the same deployment through `fermion up`'s "
        "built-in gateway, on the local backend and with `--backend ray` on a Ray head the benchmark starts "
        f"(Ray {record.get('versions', {}).get('ray')}): once with Serve's own HTTP proxy (Ray's default) and once with "
        "Serve's HAProxy ingress (`RAY_SERVE_ENABLE_HA_PROXY=1`, what a head that `fermion up` starts uses when "
        "haproxy is installed). Same CPUs for all: `fermion up`, its replica, and the head with every Ray process "
        f"(pinned when it starts); the load generator is on CPU {record['method']['load_cpu']}.",
        "",
        "| case | backend | req/s | × local | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    said = []
    for bench, case in cases.items():
        local = case.get("local", {})
        for clients, pick in (("64 clients", lambda r: r), ("1 client", lambda r: r.get("at_1"))):
            for backend, label in BACKEND_LABELS.items():
                found = case.get(backend)
                if found is None:
                    continue
                if "skipped" in found:
                    if clients == "64 clients":
                        lines.append(f"| {bench}, {clients} | {label} | not measured: {found['skipped'][:80]} | | | |")
                    continue
                result, base = pick(found), pick(local) if "rps" in local else None
                if not result:
                    continue
                times = _times(result["rps"] / base["rps"]) if base and base.get("rps") else "–"
                lines.append(
                    f"| {bench}, {clients} | {label} | {result['rps']:,.1f} | {times} | {result['p50_ms']:.2f} "
                    f"| {result['p99_ms']:.2f} |"
                )
        parts = [
            f"{BACKEND_LABELS[b]} keeps {_times(case[b]['rps'] / local['rps'])}"
            for b in ("ray", "ray-haproxy")
            if "rps" in case.get(b, {}) and local.get("rps")
        ]
        if parts:
            said.append(f"{bench} at 64 clients: " + ", ".join(parts) + " of the local throughput")
    if said:
        lines += [
            "",
            "Overhead: " + "; ".join(said) + ". On Ray a call makes one more hop (gateway → Serve's ingress → "
            "replica) and the cluster's own processes (GCS, raylet, dashboard, Serve's controller and proxy) share "
            "the same CPUs.",
        ]
    setup = []
    for bench, case in cases.items():
        for backend in ("ray", "ray-haproxy"):
            ray = case.get(backend, {})
            if "rps" in ray:
                serve = ray.get("serve", {})
                setup.append(
                    f"- {bench}, {BACKEND_LABELS[backend]}: resources cpus = {case['resources']['cpus']} (the replica's "
                    f"`num_cpus` on a head of {ray.get('head_cpus')} logical CPUs; locally its compute threads); "
                    f"Serve's `max_ongoing_requests` = {serve.get('max_ongoing_requests')}; CPUs the processes may "
                    f"use: {ray.get('affinity')} (local: {case.get('local', {}).get('affinity')})."
                )
    return lines + (["", *setup] if setup else [])


def _peer_table(record: dict[str, Any], limit_name: str, limit: float | None) -> list[str]:
    fermion = _rps(record, "fermion")
    lines = [
        f"| server | req/s | p50 ms | p90 ms | p99 ms | errors | vs Fermion | vs {limit_name} | windows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    skipped = []
    for entry in record.get("peers", {}).values():
        if "skipped" in entry:
            skipped.append(f"- {entry['label']}: {entry['skipped']}")
            continue
        rps = entry["rps"]
        windows = f"{len(entry['windows'])}{'' if entry['stable'] else ' (not stable)'}"
        vs_fermion = f"{rps / fermion:.2f}×" if fermion else "–"
        vs_limit = f"{rps / limit:.2f}×" if limit else "–"
        lines.append(
            f"| {entry['label']} | {rps:,.1f} | {entry['p50_ms']:.2f} | {entry['p90_ms']:.2f} | {entry['p99_ms']:.2f} "
            f"| {entry['errors']:,} | {vs_fermion} | {vs_limit} | {windows} |"
        )
    if skipped:
        lines += ["", "Not measured:", *skipped]
    notes = [f"- {e['label']}: {e['note']}" for e in record.get("peers", {}).values() if e.get("note")]
    return lines + (["", "How each server is set up:", *notes] if notes else [])


def _method_line(record: dict[str, Any]) -> str:
    m = record["method"]
    return (
        f"{record['file']}{' (quick)' if record.get('quick') else ''}: {m['concurrency']} connections, server on CPU "
        f"{m['server_cpus']}, load generator ({record.get('peers', {}).get('fermion', {}).get('engine', m['engine'])}) "
        f"on CPU {m['load_cpu']}, {m['warmup_s']:g} s warm-up, {m['window_s']:g} s windows until two agree within "
        f"±{m['tolerance']:.0%} (at most {m['max_windows']}), medians reported. Load average before/after: "
        f"{record['machine'].get('load_average')} / {record.get('load_average_after')}."
    )


def _provenance(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Which file, commit, gateway and machine each section comes from."""
    lines = ["| benchmark | result file | commit measured | gateway | machine |", "|---|---|---|---|---|"]
    for bench, record in runs.items():
        machine = record.get("machine", {})
        lines.append(
            f"| {bench} | {record['file']} | {record.get('commit') or 'not recorded'} | "
            f"{record.get('gateway') or 'not recorded'} | {machine.get('cpu')}, {machine.get('cores')} cores, "
            f"{machine.get('memory_gib')} GiB |"
        )
    return [*lines, ""]


def render(runs: dict[str, dict[str, Any]]) -> str:
    """The whole RESULTS.md."""
    any_run = next(iter(runs.values()))
    machine = any_run["machine"]
    out = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python benchmarks/run.py`); the method is in [README.md](README.md). "
        "Numbers are from one machine and one run: compare them only with numbers from the same run.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']}, "
        f"Python {machine['python']}, {machine.get('wrk') or 'no wrk'}.",
        "",
    ]
    out += _provenance(runs)
    if any(r.get("quick") for r in runs.values()):
        out += ["**Quick run** (short windows): indicative only.", ""]
    out += ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for row in targets(runs):
        met = "–" if row.met is None else ("met" if row.met else "**not met**")
        out.append(f"| {row.name} | {row.goal} | {row.measured} | {met} |")
    if echo := runs.get("echo"):
        out += [
            "",
            "## Echo",
            "",
            f'`POST {json.dumps(echo["payload"])}` → `{{"output": ...}}`, validated by a pydantic model '
            "with one `text: str` field in every server.",
            "",
            _method_line(echo),
            "",
            *_peer_table(echo, "bare ASGI", _rps(echo, "asgi")),
        ]
    if minilm := runs.get("minilm"):
        raw = minilm.get("raw_model", {})
        rates = raw.get("sentences_per_s", {})
        out += [
            "",
            "## MiniLM embeddings",
            "",
            f"all-MiniLM-L6-v2, one sentence per request: {raw.get('sentence', '')!r}.",
            "",
            _method_line(minilm),
            "",
            f"Raw model in-process ({raw.get('threads')} torch threads), sentences/s: "
            + ", ".join(f"batch {b}: {r:,.1f}" for b, r in rates.items())
            + f"; one sentence alone: {raw.get('single_encode_ms')} ms.",
            "",
            *_peer_table(minilm, "raw model (batch 32)", rates.get("32")),
        ]
        at_one = minilm.get("peers", {}).get("fermion", {}).get("at_1")
        if at_one:
            out += [
                "",
                f"Fermion at 1 client: {at_one['rps']:,.1f} req/s, p50 {at_one['p50_ms']:.2f} ms, p99 {at_one['p99_ms']:.2f} ms.",
            ]
    if startup := runs.get("startup"):
        imp, rep = startup["import"], startup["replica"]
        out += [
            "",
            "## Startup and memory (Fermion)",
            "",
            f"From {startup['file']}.",
            "",
            f"- `import fermion`: {imp['import_s']} s (`python -X importtime`, cumulative; median of {imp['runs']}); "
            f"wall clock over a bare interpreter: {imp['wall_extra_s']} s.",
            f"- echo replica, process start → `/readyz` 200: {rep['ready_s']} s (median of {rep['ready_runs_s']}).",
            f"- echo replica RSS: {rep['rss_ready_mb']} MB when ready, {rep['rss_after_load_mb']} MB after "
            f"{rep['rss_load_requests']:,} requests.",
        ]
    if gateway := runs.get("gateway"):
        out += _gateway_section(gateway)
    if backends := runs.get("backends"):
        out += _backends_section(backends)
    if llm := runs.get("llm"):
        out += llm_section(llm)
    if batch := runs.get("batch"):
        out += batch_section(batch)
    out += ["", "## Versions", ""]
    seen: dict[str, dict[str, str]] = {}
    for record in runs.values():
        for entry in record.get("peers", {}).values():
            seen.setdefault(entry["label"], {}).update(entry.get("versions", {}))
    out += [f"- {label}: " + ", ".join(f"{k} {v}" for k, v in found.items()) for label, found in seen.items() if found]
    out += ["", "![requests per second](results/chart.png)", ""]
    return "\n".join(out)


def write_report(results: Path, path: Path) -> Path:
    """Write RESULTS.md from the newest results."""
    path.write_text(render(latest_results(results)))
    return path


def write_chart(results: Path, path: Path, log_dir: Path) -> Path | str:
    """Draw the chart in the `tools` environment (matplotlib); the path, or why it was skipped."""
    from suite.envs import EnvError, ensure_env

    try:
        python = ensure_env("tools", log_dir / "install-tools.log").python
    except EnvError as exc:
        return str(exc)
    done = subprocess.run(
        [str(python), "-m", "suite.chart", str(results), str(path)],
        capture_output=True,
        text=True,
        cwd=results.parent,
        timeout=300,
    )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["chart failed"])[-1]
    return path
