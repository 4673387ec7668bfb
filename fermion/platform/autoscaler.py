"""The autoscaler: how many replicas a deployment needs, from the requests in flight through the gateway.

Like Ray Serve's and Knative's: a deployment's load is the requests its replicas are serving
through the gateway plus those waiting for a cold start, and it wants about `target_in_flight`
of them per replica, within [min_replicas, max_replicas]. The reconciler asks every tick; each
ask is one sample. Scaling up is immediate (the peak of the last few seconds counts); scaling down
waits until the load has needed fewer replicas for `scale_down_delay_s`, then goes to the most
that quiet period needed. Scaling to zero therefore needs `min_replicas == 0` and no request at
all for `scale_down_delay_s`. The decisions depend only on the samples and the clock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fermion.platform.gateway.routes import RouteTable
from fermion.platform.store.records import DeploymentRecord

# Float noise must not add a replica: 6 in flight at 0.1 per replica is 60 replicas, not 61.
_EPSILON = 1e-9


@dataclass
class _History:
    since: float  # first sample: a scale-down needs a whole quiet period observed
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (time, load), oldest first
    arrivals: int = -1  # the route's request count at the last sample
    desired: int | None = None
    load: float = 0.0  # the load behind the last decision


class Autoscaler:
    """Replica counts from in-flight load; `desired()` once per reconcile tick per deployment.

    `scale_down_delay_s`: how long the load must need fewer replicas before they go (and how long
    a deployment with `min_replicas == 0` must see no request before it scales to zero).
    `window_s`: scaling up covers the peak load of this many recent seconds (at most the delay).
    A burst counts from the first sample that sees it, so the window only keeps a brief lull
    from hiding the load that was just there.
    """

    def __init__(
        self,
        routes: RouteTable,
        *,
        clock: Callable[[], float] = time.monotonic,
        scale_down_delay_s: float = 30.0,
        window_s: float = 10.0,
    ) -> None:
        if scale_down_delay_s < 0 or window_s < 0:
            raise ValueError(f"scale_down_delay_s and window_s must be ≥ 0, got {scale_down_delay_s} and {window_s}")
        self.routes = routes
        self.clock = clock
        self.scale_down_delay_s = scale_down_delay_s
        self.window_s = window_s
        self._history: dict[str, _History] = {}

    def desired(self, d: DeploymentRecord, current: int) -> int:
        """Sample the deployment's load now and return how many replicas it should have.

        `current` (the replicas of the current revision) seeds the first answer, so that replicas
        adopted after a restart stay until the load says otherwise; later answers build on the
        previous one, so a crashed replica or a rollout does not look like a decision to scale.
        """
        now = self.clock()
        history = self._history.get(d.name)
        if history is None:
            history = self._history[d.name] = _History(since=now)
        load = self._sample(d.name, history)
        samples = history.samples
        samples.append((now, load))
        keep = max(self.scale_down_delay_s, self.window_s)
        while samples and samples[0][0] < now - keep:
            samples.popleft()

        low, high = d.min_replicas, d.max_replicas
        previous = _clamp(current if history.desired is None else history.desired, low, high)
        if low == high:
            history.desired, history.load = low, load
            return low

        def needed(load: float) -> int:
            return _clamp(math.ceil(load / d.target_in_flight - _EPSILON), low, high)

        decision, behind = previous, load
        recent = max(value for t, value in samples if t >= now - min(self.window_s, self.scale_down_delay_s))
        if needed(recent) > previous:
            decision, behind = needed(recent), recent
        elif now - history.since >= self.scale_down_delay_s:
            quiet = max(value for t, value in samples if t >= now - self.scale_down_delay_s)
            if needed(quiet) < previous:
                decision, behind = needed(quiet), quiet
        history.desired, history.load = decision, behind
        return decision

    def load(self, name: str) -> float:
        """The load (requests in flight) behind the deployment's last decision; 0 if none yet."""
        history = self._history.get(name)
        return history.load if history is not None else 0.0

    def forget(self, name: str) -> None:
        """Drop a deleted deployment's samples (a new one with the same name starts afresh)."""
        self._history.pop(name, None)

    def _sample(self, name: str, history: _History) -> float:
        route = self.routes.get(name)
        if route is None:
            return 0.0
        load = float(route.load())
        arrivals = route.arrivals + route.external_arrivals
        if arrivals != history.arrivals:
            # Requests came and went between two samples: short ones are never seen in flight,
            # yet they are traffic, and a deployment with traffic must not scale to zero.
            if history.arrivals >= 0:
                load = max(load, 1.0)
            history.arrivals = arrivals
        return load


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))
