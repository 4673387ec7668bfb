"""Per-token request rates (`fermion token create --rate 10/s`): the rule, and the counter the built-in
gateway keeps.

A rate is a number of calls per second, minute or hour. Both gateways count the same way, the way
HAProxy's `http_req_rate` does: the calls of the current period plus the previous period's share of
the sliding window, `current + previous × (time left in the period / period)`. Every call counts,
refused ones too, so a caller that keeps hammering stays refused. A refused call gets 429 with
`Retry-After` (the seconds until the estimate falls back under the limit, if the caller stops:
`⌈period × (estimate − limit + 1) / estimate⌉`, the formula HAProxy's rules compute too) and the
`X-RateLimit-*` headers; allowed calls carry `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from fermion.platform.errors import Invalid

#: Periods a rate may name, in seconds (HAProxy keeps one stick table per period).
PERIODS = {"s": 1, "min": 60, "h": 3600}
_SPELLINGS = {"s": "s", "sec": "s", "second": "s", "m": "min", "min": "min", "minute": "min", "h": "h", "hour": "h"}
_RULE = re.compile(r"^\s*(\d{1,9})\s*/\s*([a-z]+)\s*$")
#: A ceiling that still reads as a limit: a million calls per period.
MAX_LIMIT = 1_000_000


@dataclass(frozen=True)
class Rate:
    """At most `limit` calls per `unit` ('s', 'min' or 'h')."""

    limit: int
    unit: str

    @property
    def period(self) -> int:
        return PERIODS[self.unit]

    def __str__(self) -> str:
        return f"{self.limit}/{self.unit}"


def parse_rate(text: object) -> Rate:
    """'10/s', '600/min' or '5000/h' → Rate; anything else → Invalid saying how to write one."""
    how = "write a rate as calls per period, e.g. '10/s', '600/min' or '5000/h'"
    found = _RULE.match(text.lower()) if isinstance(text, str) else None
    if found is None or found[2] not in _SPELLINGS:
        raise Invalid(f"invalid rate {text!r}: {how}")
    limit = int(found[1])
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"invalid rate {text!r}: the number of calls must be between 1 and {MAX_LIMIT}")
    return Rate(limit, _SPELLINGS[found[2]])


@dataclass(frozen=True)
class Verdict:
    """What the counter says about one call: allowed or not, and the headers to answer with."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds; 0 when allowed

    def headers(self) -> list[tuple[bytes, bytes]]:
        out = [(b"x-ratelimit-limit", b"%d" % self.limit), (b"x-ratelimit-remaining", b"%d" % self.remaining)]
        if not self.allowed:
            out += [(b"retry-after", b"%d" % self.retry_after), (b"x-ratelimit-reset", b"%d" % self.retry_after)]
        return out


def retry_after(rate: Rate, estimate: int) -> int:
    """Seconds until an over-limit estimate falls back under the limit if the caller stops (at least 1)."""
    return max(1, math.ceil(rate.period * (estimate - rate.limit + 1) / max(estimate, 1)))


class RateLimiter:
    """Sliding-window call counters by key (a token's id), as HAProxy's `http_req_rate` keeps them.

    Memory is bounded by the keys in use: one small entry per token that called in the last two periods.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[object, list[float]] = {}  # key → [window start, current count, previous count]
        self._pruned_at = clock()

    def take(self, key: object, rate: Rate) -> Verdict:
        """Count one call for `key` and say whether it stays within `rate`."""
        now = self._clock()
        period = rate.period
        window = self._windows.get(key)
        if window is None:  # a key's periods start at its first call, as HAProxy's counters do
            window = self._windows[key] = [now, 0.0, 0.0]
        start = window[0]
        if now >= start + 2 * period:  # quiet for a whole period: nothing left to slide in
            window[:] = [now, 0.0, 0.0]
        elif now >= start + period:
            window[:] = [start + period, 0.0, window[1]]
        window[1] += 1
        left = 1 - (now - window[0]) / period
        estimate = math.floor(window[1] + window[2] * left)
        self._prune(now)
        if estimate > rate.limit:
            return Verdict(False, rate.limit, 0, retry_after(rate, estimate))
        return Verdict(True, rate.limit, rate.limit - estimate, 0)

    def _prune(self, now: float) -> None:
        """Drop keys idle for over two hours (the longest period twice), at most once a minute."""
        if now - self._pruned_at < 60:
            return
        self._pruned_at = now
        horizon = 2 * max(PERIODS.values())
        for key in [key for key, window in self._windows.items() if now - window[0] > horizon]:
            del self._windows[key]
