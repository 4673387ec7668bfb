"""Every benchmark result file says what was measured, where and through what, and the README quotes only them.

A number without its commit, gateway and machine cannot be compared with anything; the suite's code
writes all three (benchmarks/run.py, benchmarks/training.py), and the files from before it did
carry them as recorded afterwards from git history.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from typing import Any

import pytest
from support import ROOT

RESULTS = ROOT / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("*.json"))


def test_there_are_result_files() -> None:
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_a_result_file_records_its_commit_gateway_and_machine(path) -> None:
    record = json.loads(path.read_text())
    assert re.fullmatch(r"[0-9a-f]{7,40}(\+changes)?", record.get("commit") or ""), (
        f"{path.name}: commit {record.get('commit')!r}"
    )
    assert record.get("gateway"), f"{path.name}: no gateway (write 'none' where servers are measured directly)"
    machine = record.get("machine") or {}
    assert machine.get("cpu") and machine.get("cores") and machine.get("memory_gib"), f"{path.name}: machine {machine!r}"


def test_the_results_page_names_each_sections_commit_and_gateway() -> None:
    page = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert "| benchmark | result file | commit measured | gateway | machine |" in page
    assert "not recorded" not in page


def _numbers(text: str) -> set[str]:
    """Numbers with a decimal point or a thousands comma ("8,449", "0.88", "1.22"), as written."""
    return set(re.findall(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+\.\d+", text))


def test_the_readme_performance_numbers_come_from_the_results() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    notes = readme.split("## Design notes", 1)[1].split("\n## ", 1)[0]
    backed = (ROOT / "benchmarks" / "RESULTS.md").read_text() + (ROOT / "benchmarks" / "TRAINING.md").read_text()
    backed_numbers = _numbers(backed) | {n.replace(",", "") for n in _numbers(backed)}
    for record in FILES:
        backed_numbers |= set(re.findall(r"\d+\.\d+", record.read_text()))

    def rounded_forms(number: str) -> set[str]:
        value = float(number.replace(",", ""))
        return {f"{value:.{d}f}" for d in range(5)} | {f"{value:,.0f}"}

    backed_forms = set().union(*(rounded_forms(n) for n in backed_numbers))
    unbacked = sorted(n for n in _numbers(section + notes) if n not in backed_forms and n.replace(",", "") not in backed_forms)
    assert not unbacked, f"README numbers no results file backs: {unbacked}"


def _report() -> Any:
    """benchmarks/suite/report.py, imported the way benchmarks/run.py imports it (benchmarks/ on the path)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("suite.report")


MACHINE = {"cpu": "Test CPU", "cores": 2, "memory_gib": 24, "os": "Linux", "python": "3.11"}


def _llm_record(**changes: Any) -> dict[str, Any]:
    """A small `llm` record shaped like the one suite/llm.py writes."""
    answers = {"Tell me about the sea.": "waves", "Tell me about HTTP.": "verbs"}
    record = {
        "bench": "llm",
        "file": "2026-12-07T050000-llm.json",
        "machine": MACHINE,
        "new_tokens": 64,
        "method": {"window_s": 40.0, "server_cpus": "0,1", "streams": 16, "baseline": "7574e88", "lengths": [34, 94]},
        "raw": {"parameters_m": 25.6, "tokens_per_s": {"1": 80.0, "16": 400.0}},
        "fermion": {
            "single": {"tokens_per_s": 78.0, "p50_ttft_ms": 40.0, "requests": 50, "answers": {}},
            "concurrent": {"tokens_per_s": 360.0, "p50_ttft_ms": 70.0, "requests": 300, "answers": answers},
        },
        "serial": {
            "single": {"tokens_per_s": 80.0, "p50_ttft_ms": 38.0, "requests": 51, "answers": {}},
            "concurrent": {"tokens_per_s": 79.0, "p50_ttft_ms": 900.0, "requests": 55, "answers": {}},
        },
        "greedy_mismatches": [],
        "transformers_serve": {
            "single": {"tokens_per_s": 60.0, "p50_ttft_ms": 45.0, "requests": 40, "answers": {}},
            "concurrent": {"tokens_per_s": 200.0, "p50_ttft_ms": 150.0, "requests": 160, "answers": answers},
            "versions": {"transformers": "5.25.0", "accelerate": "1.16.0"},
            "greedy_mismatches": ["Tell me about HTTP."],
        },
    }
    return {**record, **changes}


def _batch_record(**changes: Any) -> dict[str, Any]:
    """A small `batch` record shaped like the one suite/batch.py writes."""
    timing = {"rps": 200.0, "p50_ms": 30.0, "p90_ms": 35.0, "p99_ms": 40.0}
    record = {
        "bench": "batch",
        "file": "2026-12-07T050000-batch.json",
        "machine": MACHINE,
        "method": {"load_cpu": 1},
        "concurrency": 8,
        "cpus": "0-1",
        "source": "examples/embeddings.py",
        "online": timing,
        "batch": {"rows": 6000, "rows_per_s": 190.0, "rows_per_s_end_to_end": 170.0, "seconds": 35.3},
        "interactive_idle": {**timing, "rps": 60.0, "p99_ms": 20.0},
        "interactive_during_batch": {**timing, "rps": 25.0, "p99_ms": 50.0},
        "batch_during_interactive": {"rows_done": 900, "rows_per_s": 150.0, "status": "running"},
    }
    return {**record, **changes}


def _target_rows(page: str, prefix: str) -> list[list[str]]:
    """The targets table's rows whose name starts with `prefix`, as cells."""
    table = page.split("## Targets", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith(f"| {prefix}")]


def test_the_llm_section_and_its_targets_come_from_the_record() -> None:
    page = _report().render({"llm": _llm_record()})
    rows = _target_rows(page, "LLM")
    assert [row[1] for row in rows] == ["≥ 0.8×", "≥ 0.95×", "≤ 2×", "0 differ"]
    assert rows[0][2:] == ["0.90× (360.0 / 400.0)", "met"]  # aggregate vs raw generate at batch 16
    assert rows[1][2:] == ["0.97× (78.0 / 80.0)", "met"]  # one stream vs the serial engine
    assert rows[2][2:] == ["1.75× (70.0 / 40.0)", "met"]  # time to first token, 16 streams vs 1
    assert rows[3][2:] == ["0 of 2 differ", "met"]
    section = page.split("## LLM serving", 1)[1]
    assert "| Fermion, 16 streams | 360.0 | 0.90× | 70.0 | 300 |" in section
    assert "| serial engine, 1 stream | 80.0 | 1.00× | 38.0 | 51 |" in section
    assert "| raw `generate`, batch 16 | 400.0 |" in section and "25.6 M parameters" in section
    assert "34 to 94 new tokens per request (mean 64, each client keeping one length" in section
    assert "| `transformers serve`, 16 streams | 200.0 | 0.50× | 150.0 | 160 |" in section
    assert "(transformers 5.25.0, accelerate 1.16.0)" in section and "1 of 2 differ from raw `generate`" in section


def test_llm_targets_that_fail_or_were_not_measured_say_so() -> None:
    slow = _llm_record(
        greedy_mismatches=["Tell me about HTTP."],
        serial={"skipped": "git archive 7574e88 failed: not a tree"},
        transformers_serve={"skipped": "transformers serve did not get ready"},
    )
    slow["fermion"]["concurrent"] = {**slow["fermion"]["concurrent"], "tokens_per_s": 200.0, "p50_ttft_ms": 120.0}
    page = _report().render({"llm": slow})
    rows = _target_rows(page, "LLM")
    assert [row[3] for row in rows] == ["**not met**", "–", "**not met**", "**not met**"]
    assert rows[1][2] == "not measured" and rows[3][2] == "1 of 2 differ"
    assert "| serial engine | not measured: git archive 7574e88 failed" in page
    assert "1 differ: 'Tell me about HTTP.'" in page
    assert "| `transformers serve` | not measured: transformers serve did not get ready" in page


def test_the_batch_section_and_its_targets_come_from_the_record() -> None:
    page = _report().render({"batch": _batch_record()})
    rows = _target_rows(page, "batch")
    assert rows[0][1:] == ["≥ 0.9×", "0.95× (190.0 / 200.0)", "met"]  # batch job vs online at 8 in flight
    assert rows[1][1:] == ["≤ 2×", "2.50× (50.0 / 20.0)", "**not met**"]  # interactive p99 during a batch vs idle
    section = page.split("## Batch predictions", 1)[1]
    assert "| online, 8 clients | 200.0 req/s | 30.00 | 40.00 |" in section
    assert "| batch job, 6,000 rows, 8 in flight (10–90 %) | 190.0 rows/s |" in section
    assert "| interactive, 1 client, during a batch | 25.0 req/s | 30.00 | 50.00 |" in section


def test_a_missing_or_skipped_llm_or_batch_run_is_not_measured() -> None:
    report = _report()
    echo_only = {"startup": {"file": "x-startup.json", "machine": MACHINE, "import": {}, "replica": {}}}
    rows = [row for row in report.targets(echo_only) if row.name.startswith(("LLM", "batch"))]
    assert len(rows) == 6 and {(row.measured, row.met) for row in rows} == {("not measured", None)}
    skipped = _batch_record(skipped="fermion up did not get ready")
    for key in ("online", "batch", "interactive_idle", "interactive_during_batch"):
        skipped.pop(key)
    page = report.render({"batch": skipped})
    assert [row[2] for row in _target_rows(page, "batch")] == ["not measured", "not measured"]
    assert "Not measured: fermion up did not get ready" in page.split("## Batch predictions", 1)[1]
