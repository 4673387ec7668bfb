"""A pytest plugin: after the run, one line per group of skipped tests and the command that enables them.

A suite that skips silently looks green while it left out the browser, HAProxy or wrk tests. The
lines come last, after pytest's own summary, so they are what `make test` ends with.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class SkipGroup:
    """Skips whose reason names `pattern` (a regular expression): what is missing and how to install it."""

    pattern: str
    missing: str
    install: str


#: First match wins. A reason that matches none is shown as it is.
GROUPS = (
    SkipGroup(
        r"\bchromium\b|\bplaywright\b", "chromium missing", "apt-get install -y chromium (playwright: pip install -e '.[dev]')"
    ),
    SkipGroup(r"\bhaproxy\b", "haproxy missing", "apt-get install -y haproxy"),
    SkipGroup(r"\bwrk\b", "wrk missing", "apt-get install -y wrk"),
    SkipGroup(r"\bcurl\b", "curl missing", "apt-get install -y curl"),
    SkipGroup(r"\bray\b", "ray missing", "pip install -e '.[ray]'"),
    SkipGroup(r"\bmatplotlib\b", "matplotlib missing", "pip install -e '.[bench]'"),
    SkipGroup(r"\bopenai\b", "openai missing", "pip install -e '.[dev]'"),
)


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def summary_lines(reasons: list[str]) -> list[str]:
    """One line per group of skipped tests, largest first; what to install for each."""
    counts: Counter[tuple[str, str]] = Counter()
    for reason in reasons:
        group = next((g for g in GROUPS if re.search(g.pattern, reason, re.IGNORECASE)), None)
        counts[(group.missing, group.install) if group else (reason, "")] += 1
    lines = []
    for (what, install), count in counts.most_common():
        tests = f"{count} test{'s' if count != 1 else ''} skipped"
        lines.append(f"{what}: {tests} — install with: {install}" if install else f"{tests}: {what}")
    return lines


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary: the skipped groups, or a line saying nothing was skipped."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not reporter.stats:
        return
    skipped = [report for report in reporter.stats.get("skipped", []) if getattr(report, "longrepr", None)]
    if not skipped:
        reporter.write_line("skipped: none — every collected test ran")
        return
    for line in summary_lines([skip_reason(report) for report in skipped]):
        reporter.write_line(line, yellow=True)
    reporter.write_line("(.ci/run installs every system package the suite uses, as root, then runs `make test`)")
