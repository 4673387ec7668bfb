"""The suite ends with one line per group of skipped tests and the command that enables them (tests/skip_summary.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skip_summary import summary_lines

TESTS = Path(__file__).resolve().parent


def test_skips_are_grouped_by_what_is_missing_largest_group_first() -> None:
    lines = summary_lines(
        [
            "haproxy is not installed (.ci/run installs it)",
            "needs playwright (the dev extra) and chromium (.ci/run installs it)",
            "chromium is not installed (.ci/run installs it)",
            "the Ray backend's tests need ray[serve]: pip install 'fermion[ray]'",
            "something else entirely",
        ]
    )
    assert (
        lines[0]
        == "chromium missing: 2 tests skipped — install with: apt-get install -y chromium (playwright: pip install -e '.[dev]')"
    )
    assert "haproxy missing: 1 test skipped — install with: apt-get install -y haproxy" in lines
    assert "ray missing: 1 test skipped — install with: pip install -e '.[ray]'" in lines
    assert "1 test skipped: something else entirely" in lines


def test_a_run_ends_with_the_skipped_groups(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["skip_summary"]\n')
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='wrk is not installed')\n"
        "def test_load(): pass\n"
        "def test_other(): pytest.skip('haproxy is not installed (.ci/run installs it)')\n"
        "def test_fine(): pass\n"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.strip().splitlines()[-3:]
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(last[:2]) == [
        "haproxy missing: 1 test skipped — install with: apt-get install -y haproxy",
        "wrk missing: 1 test skipped — install with: apt-get install -y wrk",
    ], done.stdout
    assert last[2].startswith("(.ci/run installs every system package")
