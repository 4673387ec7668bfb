"""RESULTS.md's part for the `llm` benchmark (suite/llm.py): its targets and its table.

The record holds raw `generate` tokens/s at batch 1 and 16 (`raw`), Fermion's continuous batching, the serial
engine it replaced and `transformers serve` with continuous batching (`fermion`, `serial`, `transformers_serve`) at
one stream and at 16, and the prompts whose greedy answer at 16 streams differed from raw batch-1 `generate`
(`greedy_mismatches`).
"""

from __future__ import annotations

from typing import Any

from suite.llm import BASELINE_COMMIT
from suite.target import Target, ratio_target


def _load(record: dict[str, Any] | None, engine: str, load: str) -> dict[str, Any]:
    """One engine's measurement at one load ("single" or "concurrent"); empty when it was not measured."""
    return (record or {}).get(engine, {}).get(load, {})


def llm_targets(record: dict[str, Any] | None) -> list[Target]:
    """Issue 19's targets: batching pays, one stream lost nothing, the first token still comes soon, greedy is exact."""
    streams = (record or {}).get("method", {}).get("streams", 16)
    raw = (record or {}).get("raw", {}).get("tokens_per_s", {})
    single, many = _load(record, "fermion", "single"), _load(record, "fermion", "concurrent")
    baseline = (record or {}).get("method", {}).get("baseline", BASELINE_COMMIT)
    rows = [
        ratio_target(
            f"LLM, {streams} streams: aggregate tok/s vs raw `generate` at batch {streams}",
            "≥ 0.8×",
            many.get("tokens_per_s"),
            raw.get(str(streams)),
            0.8,
            True,
        ),
        ratio_target(
            f"LLM, 1 stream: tok/s vs the serial engine it replaced ({baseline})",
            "≥ 0.95×",
            single.get("tokens_per_s"),
            _load(record, "serial", "single").get("tokens_per_s"),
            0.95,
            True,
        ),
        ratio_target(
            f"LLM: p50 time to first token, {streams} streams vs 1 stream",
            "≤ 2×",
            many.get("p50_ttft_ms"),
            single.get("p50_ttft_ms"),
            2.0,
            False,
        ),
    ]
    name = f"LLM: greedy answers at {streams} streams vs raw batch-1 `generate`"
    mismatches = (record or {}).get("greedy_mismatches")
    if mismatches is None:
        rows.append(Target(name, "0 differ", "not measured", None))
    else:
        compared = len(many.get("answers", {}))
        rows.append(Target(name, "0 differ", f"{len(mismatches)} of {compared} differ", not mismatches))
    return rows


def _turns(method: dict[str, Any]) -> str:
    rounds = method.get("rounds")
    if not rounds:
        return ""
    return f" (at 1 stream in {rounds} turns, the servers taking turns; raw `generate` before and after them, the mean)"


def llm_section(record: dict[str, Any]) -> list[str]:
    """The `llm` section: tokens/s and time to first token of raw `generate`, Fermion and the serial engine."""
    method, raw = record.get("method", {}), record.get("raw", {})
    streams = method.get("streams", 16)
    rates = raw.get("tokens_per_s", {})
    lengths = method.get("lengths")
    asked = f"{record.get('new_tokens')} new tokens per request"
    if lengths:
        asked = (
            f"{min(lengths)} to {max(lengths)} new tokens per request (mean {sum(lengths) / len(lengths):g}, each "
            f"client keeping one length; raw `generate` makes {record.get('new_tokens')} per row)"
        )
    lines = [
        "",
        "## LLM serving: continuous batching (`hf:` causal LMs)",
        "",
        f"From {record['file']}{' (quick)' if record.get('quick') else ''}: a randomly initialised GPT-2-style model "
        f"({raw.get('parameters_m')} M parameters), {asked} at temperature 0 "
        f"through the streamed OpenAI chat endpoint, {method.get('window_s')} s of closed-loop load per case"
        f"{_turns(method)}; the "
        f"server and raw `generate` both on CPUs {method.get('server_cpus')} (2 torch threads). The serial engine is "
        f"`fermion` at {method.get('baseline')}, the last commit before continuous batching, under the same loads.",
        "",
        "| case | tok/s | × raw `generate` (same batch) | p50 time to first token ms | requests |",
        "|---|---:|---:|---:|---:|",
    ]
    for batch, rate in rates.items():
        lines.append(f"| raw `generate`, batch {batch} | {rate:,.1f} | 1.00× | – | – |")
    engines = (("fermion", "Fermion"), ("serial", "serial engine"), ("transformers_serve", "`transformers serve`"))
    for engine, label in engines:
        if not isinstance(record.get(engine, {}), dict):  # an older record: a sentence instead of measurements
            continue
        if "skipped" in record.get(engine, {}):
            lines.append(f"| {label} | not measured: {record[engine]['skipped'][:80]} | | | |")
            continue
        for load, count in (("single", 1), ("concurrent", streams)):
            found = _load(record, engine, load)
            if not found:
                continue
            base = rates.get(str(count))
            times = f"{found['tokens_per_s'] / base:.2f}×" if base else "–"
            lines.append(
                f"| {label}, {count} stream{'s' if count > 1 else ''} | {found['tokens_per_s']:,.1f} | {times} "
                f"| {found['p50_ttft_ms']:,.1f} | {found['requests']:,} |"
            )
    mismatches = record.get("greedy_mismatches")
    if mismatches is not None:
        compared = len(_load(record, "fermion", "concurrent").get("answers", {}))
        said = "all identical" if not mismatches else f"{len(mismatches)} differ: " + ", ".join(repr(p) for p in mismatches)
        lines += ["", f"Greedy answers of Fermion at {streams} streams vs raw batch-1 `generate`, {compared} answers: {said}."]
    theirs = record.get("transformers_serve")
    if isinstance(theirs, str):
        lines += ["", f"`transformers serve`: {theirs}."]
    elif isinstance(theirs, dict) and "versions" in theirs:
        found = ", ".join(f"{name} {version}" for name, version in theirs["versions"].items())
        lines += [
            "",
            f"`transformers serve --continuous-batching --device cpu` ({found}) ran on the same CPUs under the same loads.",
        ]
        if theirs.get("greedy_mismatches") is not None:
            compared = len(theirs.get("concurrent", {}).get("answers", {}))
            lines[-1] += (
                f" Its greedy answers at {streams} streams: {len(theirs['greedy_mismatches'])} of {compared} differ from raw `generate`."
            )
    return lines
