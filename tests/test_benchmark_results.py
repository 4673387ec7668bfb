"""Every benchmark result file says what was measured, where and through what, and the README quotes only them.

A number without its commit, gateway and machine cannot be compared with anything; the suite's code
writes all three (benchmarks/run.py, benchmarks/training.py), and the files from before it did
carry them as recorded afterwards from git history.
"""

from __future__ import annotations

import json
import re

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
