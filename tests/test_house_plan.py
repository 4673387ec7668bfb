"""The house plan holds (docs/architecture.md): imports only point down, as the import-linter contracts in
pyproject.toml say; the pictures of the rooms match the code; the code passes ruff and is as `ruff format`
writes it; and files stay a size a reader can hold, none packed to fit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import ROOT

BIN = Path(sys.executable).parent
#: Lines a module of fermion/ may have before it needs a reason at its top; lines a test file may have.
MODULE_LINES, TEST_LINES = 400, 600
REASON = "# Long on purpose: "
LINTED = ["fermion", "tests", "benchmarks", "examples", "tools"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept():
    done = run(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout, done.stdout[-2000:]


def test_the_pictures_of_the_rooms_match_the_code():
    done = run(sys.executable, "tools/house_plan.py", "--check")
    assert done.returncode == 0, done.stderr


def test_ruff_finds_nothing_and_the_code_is_formatted():
    done = run(str(BIN / "ruff"), "check", *LINTED)
    assert done.returncode == 0, done.stdout[-4000:]
    done = run(str(BIN / "ruff"), "format", "--check", *LINTED)
    assert done.returncode == 0, "run `ruff format " + " ".join(LINTED) + "`:\n" + done.stdout[-4000:]


def _python_files(*folders: str) -> list[Path]:
    return [path for folder in folders for path in (ROOT / folder).rglob("*.py") if ".venvs" not in path.parts]


def test_long_modules_say_why_and_tests_stay_short():
    unexplained = []
    for path in _python_files("fermion"):
        lines = path.read_text().splitlines()
        if len(lines) > MODULE_LINES and not (lines and lines[0].startswith(REASON)):
            unexplained.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert not unexplained, f"split these along a seam, or give a one-line reason starting {REASON!r}: {unexplained}"
    long_tests = [
        f"{p.relative_to(ROOT)} ({n})" for p in _python_files("tests") if (n := len(p.read_text().splitlines())) > TEST_LINES
    ]
    assert not long_tests, f"split these test files along their seams: {long_tests}"


def test_nothing_is_packed_to_fit():
    packed = re.compile(r"#\s*fmt:\s*(skip|off)")
    found = [str(p.relative_to(ROOT)) for p in _python_files(*LINTED) if packed.search(p.read_text())]
    assert not found, f"write these the way the formatter would instead of switching the formatter off: {found}"
