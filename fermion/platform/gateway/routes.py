"""The route table: each deployment's ready replicas, and the load on them.

The reconciler writes it (which replicas are ready, whether the deployment is public or may scale to
zero); the Python gateway routes by it, HAProxy is configured from it, and the autoscaler reads the
load it counts. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

#: Where deployments are called: `/run/<deployment>/<path>`.
PREFIX = "/run/"


@dataclass
class Upstream:
    """One ready replica and the requests it is serving through this gateway."""

    url: str
    outstanding: int = 0
    #: A Unix socket the replica also serves on (HAProxy goes through it; this gateway uses `url`).
    socket: str | None = None


@dataclass
class Route:
    """Where a deployment's traffic goes, and how much of it there is (read by the autoscaler)."""

    name: str
    upstreams: list[Upstream] = field(default_factory=list)
    public: bool = False
    cold_start: bool = False  # may scale to zero: with no upstream, requests wait for one instead of a 503
    waiting: int = 0  # requests waiting for a cold start
    arrivals: int = 0  # requests routed here so far (tells "idle" from "short requests between samples")
    # What a proxy in front of this gateway (HAProxy) reports for requests it sent to replicas itself.
    external_in_flight: int = 0
    external_arrivals: int = 0
    _turn: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def load(self) -> int:
        """Requests in flight to the upstreams through this gateway plus those waiting for a cold start."""
        return sum(u.outstanding for u in self.upstreams) + self.waiting + self.external_in_flight

    def pick(self, exclude: set[str]) -> Upstream | None:
        """The least busy upstream not in `exclude`; ties go round-robin."""
        candidates = [u for u in self.upstreams if u.url not in exclude]
        if not candidates:
            return None
        fewest = min(u.outstanding for u in candidates)
        tied = [u for u in candidates if u.outstanding == fewest]
        return tied[next(self._turn) % len(tied)]


class RouteTable:
    """Deployments and their ready replicas, kept current by the control plane.

    Written by the reconciler's thread and read by the gateway's event loop: every change is one
    attribute assignment or dict operation, which the other side sees whole.
    """

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def set(
        self,
        name: str,
        urls: list[str],
        public: bool = False,
        cold_start: bool = False,
        sockets: dict[str, str] | None = None,
    ) -> None:
        """Replace a deployment's ready replicas (`sockets`: the Unix socket of a replica's URL, where it has one),
        keeping the in-flight counts of those that stay."""
        route = self._routes.get(name) or self._routes.setdefault(name, Route(name))
        known = {u.url: u for u in route.upstreams}
        route.public = public
        route.cold_start = cold_start
        route.upstreams = [known.get(url) or Upstream(url, socket=(sockets or {}).get(url)) for url in urls]

    def remove(self, name: str) -> None:
        """Forget a deployment (requests for it get a 404 from now on)."""
        self._routes.pop(name, None)

    def get(self, name: str) -> Route | None:
        """The deployment's route, or None if there is no such deployment."""
        return self._routes.get(name)

    def names(self) -> list[str]:
        """Every deployment with a route, sorted."""
        return sorted(self._routes)
