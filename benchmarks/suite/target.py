"""One row of RESULTS.md's targets table: a goal of an issue and what the newest run measured against it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """One goal of the issue, with what this run measured."""

    name: str
    goal: str
    measured: str
    met: bool | None  # None: not measured in the results at hand


def ratio_target(name: str, goal: str, num: float | None, den: float | None, limit: float, at_least: bool) -> Target:
    """A goal on `num / den` (at least or at most `limit`); "not measured" when either side is missing."""
    if num is None or den is None or den == 0:
        return Target(name, goal, "not measured", None)
    value = num / den
    return Target(name, goal, f"{value:.2f}× ({num:,.1f} / {den:,.1f})", value >= limit if at_least else value <= limit)
