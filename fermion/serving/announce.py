"""The banner line that says where a replica serves. `fermion serve` prints it; the platform's
local backend and the tests read it back (replicas pick their own port with `--port 0`)."""

from __future__ import annotations

import re

_ANNOUNCED = re.compile(r"^\s*API\s+(https?://\S+)", re.MULTILINE)


def announce_line(base_url: str) -> str:
    """The line `fermion serve` prints once it listens."""
    return f"  API     {base_url}"


def announced_url(output: str) -> str | None:
    """The URL from a replica's output, once it has printed its banner."""
    found = _ANNOUNCED.search(output)
    return found.group(1) if found else None
