"""`platform.deployments`: create, inspect, change, scale, roll back and delete deployments, and wait for them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fermion.client._errors import DeploymentFailed, platform_error
from fermion.client.platform.transport import API, Transport
from fermion.client.platform.transport import quote_name as _path
from fermion.client.platform.types import Deployment, Event, Replica, Revision

#: The API's largest page of events.
EVENT_PAGE = 1000


def _scaling(replicas: int | None, min_replicas: int | None, max_replicas: int | None) -> dict[str, int]:
    """`replicas=N` is shorthand for min = max = N; it cannot be combined with min/max."""
    if replicas is not None:
        if min_replicas is not None or max_replicas is not None:
            raise ValueError("give either replicas=N or min_replicas/max_replicas, not both")
        return {"min_replicas": replicas, "max_replicas": replicas}
    found = {"min_replicas": min_replicas, "max_replicas": max_replicas}
    return {key: value for key, value in found.items() if value is not None}


def _with_source_options(
    options: Mapping[str, Any] | None, task: str | None, trust_pickle: bool | None, resources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    merged = dict(options or {})
    if task is not None:
        merged["task"] = task
    if trust_pickle is not None:
        merged["trust_pickle"] = trust_pickle
    if resources:  # the keys given replace those of the current resources
        merged["resources"] = {**(merged.get("resources") or {}), **resources}
    return merged


class Deployments:
    """`platform.deployments`: create, inspect, change, scale, roll back and delete deployments."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._transport.request(method, "/deployments" + path, **kwargs)

    def create(
        self,
        name: str,
        source: str,
        *,
        replicas: int | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        target_in_flight: float | None = None,
        env: Mapping[str, str] | None = None,
        public: bool = False,
        options: Mapping[str, Any] | None = None,
        task: str | None = None,
        trust_pickle: bool = False,
        resources: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> Deployment:
        """Create a deployment from any source `fermion serve` takes; its replicas start at once.

        The platform loads the source first: one that does not load raises `InvalidError` with the
        error `fermion serve` would print. `env` values are secrets: the API never shows them.
        `resources` ({"cpus": 0.5, "gpus": 1, "memory": "2GiB"}) is what each replica reserves on
        the Ray backend (the local backend takes `cpus` as the replica's compute threads).
        """
        body: dict[str, Any] = {
            "name": name,
            "source": source,
            "public": public,
            **_scaling(replicas, min_replicas, max_replicas),
        }
        body["options"] = _with_source_options(options, task, True if trust_pickle else None, resources)
        optional = {"env": dict(env) if env is not None else None, "target_in_flight": target_in_flight, "note": note}
        body.update({key: value for key, value in optional.items() if value is not None})
        return Deployment.from_json(self._call("POST", "", body=body))

    def get(self, name: str) -> Deployment:
        """One deployment; `NotFoundError` (naming the close matches) if there is none by that name."""
        return Deployment.from_json(self._call("GET", f"/{_path(name)}"))

    def update(
        self,
        name: str,
        *,
        source: str | None = None,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
        task: str | None = None,
        trust_pickle: bool | None = None,
        resources: Mapping[str, Any] | None = None,
        public: bool | None = None,
        note: str | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        target_in_flight: float | None = None,
    ) -> Deployment:
        """Change a deployment; what is left as None stays. A new source, options or env makes a new revision.

        `env` replaces the whole environment (values are never shown, so they cannot be merged);
        `task`/`trust_pickle`/`resources` change those keys of the current options.
        """
        body: dict[str, Any] = {
            "source": source,
            "env": dict(env) if env is not None else None,
            "public": public,
            "note": note,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_in_flight": target_in_flight,
        }
        if options is not None or task is not None or trust_pickle is not None or resources:
            base = options if options is not None else self.get(name).options
            body["options"] = _with_source_options(base, task, trust_pickle, resources)
        changes = {key: value for key, value in body.items() if value is not None}
        return Deployment.from_json(self._call("PATCH", f"/{_path(name)}", body=changes))

    def scale(
        self, name: str, replicas: int | None = None, *, min_replicas: int | None = None, max_replicas: int | None = None
    ) -> Deployment:
        """`scale(name, 3)` runs 3 replicas; `min_replicas`/`max_replicas` set the autoscaler's range."""
        changes = _scaling(replicas, min_replicas, max_replicas)
        if not changes:
            raise ValueError("scale() needs replicas=N, or min_replicas and/or max_replicas")
        return Deployment.from_json(self._call("PATCH", f"/{_path(name)}", body=changes))

    def rollback(self, name: str, revision: int | None = None) -> Deployment:
        """Roll out revision `revision`'s source, options and env again, as a new revision (default: the one before)."""
        body = {"revision": revision} if revision is not None else {}
        return Deployment.from_json(self._call("POST", f"/{_path(name)}/rollback", body=body))

    def delete(self, name: str) -> Deployment:
        """Stop the deployment's replicas and remove it; returns it with state 'deleting'."""
        return Deployment.from_json(self._call("DELETE", f"/{_path(name)}"))

    def revisions(self, name: str) -> list[Revision]:
        """Every revision, oldest first."""
        return [Revision.from_json(item) for item in self._call("GET", f"/{_path(name)}/revisions")["revisions"]]

    def forget_unused_env(self, name: str) -> tuple[int, list[int]]:
        """Erase the env values the current revision no longer uses (a rotated key, say) from the platform's
        database: (how many, the revisions that can no longer be rolled back to)."""
        answer = self._call("POST", f"/{_path(name)}/forget-unused-env")
        return int(answer["forgotten"]), [int(n) for n in answer["revisions"]]

    def replicas(self, name: str) -> list[Replica]:
        """The replicas running now, starting or ready."""
        return [Replica.from_json(item) for item in self._call("GET", f"/{_path(name)}/replicas")["replicas"]]

    def events(self, name: str, after: int | None = None, limit: int = 100) -> list[Event]:
        """The deployment's events, oldest first, from just after event id `after`."""
        answer = self._call("GET", f"/{_path(name)}/events", params={"after": after, "limit": limit})
        return [Event.from_json(item) for item in answer["events"]]

    def latest_events(self, name: str, count: int = 10) -> list[Event]:
        """The deployment's last `count` events, oldest first."""
        return latest(lambda after: self.events(name, after=after, limit=EVENT_PAGE), count)

    def logs(self, name: str, lines: int = 100) -> list[tuple[str, str]]:
        """The replicas' last log lines as (replica id, line) pairs (needs a deploy token)."""
        answer = self._call("GET", f"/{_path(name)}/logs", params={"lines": lines})
        return [(str(item["replica"]), str(item["line"])) for item in answer["lines"]]

    def follow_logs(self, name: str, lines: int = 10) -> Iterator[tuple[str, str]]:
        """The last `lines` log lines, then new ones as they are written, until the caller stops iterating."""
        import httpx

        transport = self._transport
        url = f"{API}/deployments/{_path(name)}/logs"
        # The stream may stay quiet for long: only connecting is bounded, reading waits forever.
        timeout = httpx.Timeout(transport.timeout, read=None)
        with transport.errors():
            request = transport.http.build_request("GET", url, params={"lines": lines, "follow": "true"}, timeout=timeout)
            response = transport.http.send(request, stream=True)
        try:
            if not response.is_success:
                response.read()
                raise transport.explained(platform_error(response))
            with transport.errors():
                for text in response.iter_lines():
                    if not text.strip():
                        continue  # keep-alive blank lines
                    item = json.loads(text)
                    if isinstance(item, dict) and "line" in item:
                        yield str(item.get("replica", "")), str(item["line"])
        finally:
            response.close()

    def wait_ready(
        self,
        name: str,
        timeout: float = 300.0,
        progress: Callable[[Deployment], None] | None = None,
        *,
        revision: int | None = None,
        interval: float = 0.5,
    ) -> Deployment:
        """Poll until the deployment is ready (with `revision`: until that revision serves every desired replica).

        `progress` is called with each polled state. Raises `DeploymentFailed` as soon as replicas
        keep crashing (quoting the crash), and `TimeoutError` with the latest events after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        seen = self.latest_events(name, 1)
        last_id = seen[-1].id if seen else None
        fresh: list[Event] = []  # events since the wait began
        while True:
            deployment = self.get(name)
            if progress is not None:
                progress(deployment)
            if self._is_ready(deployment, revision):
                return deployment
            new = self.events(name, after=last_id, limit=EVENT_PAGE)
            if new:
                fresh += new
                last_id = new[-1].id
            crash = _crash_of(fresh, revision)
            if deployment.state == "deleting":
                raise DeploymentFailed(f"deployment {name!r} is being deleted")
            if deployment.status == "failing" or crash is not None:
                crash = crash or _crash_of(self.latest_events(name, 20), None)
                why = crash.message if crash is not None else "its replicas keep crashing"
                raise DeploymentFailed(
                    f"deployment {name!r} is failing: {why}\n(see `fermion logs {name}` and `fermion events {name}`)"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(_not_ready(deployment, timeout, revision, fresh))
            time.sleep(min(interval, remaining))

    def _is_ready(self, deployment: Deployment, revision: int | None) -> bool:
        counts = deployment.replicas
        if not deployment.min_replicas <= counts.desired <= max(deployment.min_replicas, deployment.max_replicas):
            return False  # just scaled: the control loop has not taken the new range up yet
        if deployment.status == "idle" and counts.desired == 0:
            return revision is None or deployment.revision >= revision  # scaled to zero: as ready as it gets
        if deployment.status != "ready":
            return False
        if revision is None:
            return True
        if deployment.revision != revision:
            return False
        # During a rollout the old revision's replicas still count as ready: ask which revision they run.
        serving = [r for r in self.replicas(deployment.name) if r.revision == revision and r.state == "ready"]
        return len(serving) >= counts.desired

    # Last, so that `list[...]` in the annotations above still means the built-in type.
    def list(self) -> list[Deployment]:
        """Every deployment, with its status and replica counts."""
        return [Deployment.from_json(item) for item in self._call("GET", "")["deployments"]]


def latest(page: Callable[[int | None], list[Event]], count: int) -> list[Event]:
    """The last `count` events: the API pages oldest first, so read through to the newest."""
    kept: list[Event] = []
    after: int | None = None
    while True:
        events = page(after)
        kept = (kept + events)[-count:] if count > 0 else []
        if len(events) < EVENT_PAGE:
            return kept
        after = events[-1].id


def _crash_of(events: list[Event], revision: int | None) -> Event | None:
    """The last CrashLoop event (of `revision`, if given): the replicas keep exiting."""
    for event in reversed(events):
        if event.kind == "CrashLoop" and (revision is None or f"(revision {revision})" in event.message):
            return event
    return None


def _not_ready(deployment: Deployment, timeout: float, revision: int | None, events: list[Event]) -> str:
    counts = deployment.replicas
    what = f"revision {revision} of deployment {deployment.name!r}" if revision is not None else f"deployment {deployment.name!r}"
    message = (
        f"{what} is not ready after {timeout:g} s (status {deployment.status}, "
        f"{counts.ready}/{counts.desired} replicas ready, {counts.starting} starting)"
    )
    if events:
        message += "; latest events:\n" + "\n".join(f"{e.kind}: {e.message}" for e in events[-5:])
    return message + f"\n(see `fermion logs {deployment.name}`)"
