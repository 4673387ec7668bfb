"""/deployments and /events: what runs, its revisions, replicas, events and logs (docs/platform-api.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import StreamingResponse

from fermion.platform.api.common import PREFIX, Deployer, EventId, Invoker, NarrowableDeployer, NarrowableInvoker
from fermion.platform.api.schemas import (
    DeploymentCreate,
    DeploymentList,
    DeploymentPatch,
    DeploymentView,
    EventView,
    ForgottenEnv,
    LogLine,
    ReplicaView,
    RevisionView,
    Rollback,
)
from fermion.platform.auth import narrowed_to, reach
from fermion.platform.code_folders import UNREADABLE, absolute_source
from fermion.platform.errors import Conflict, Forbidden, Invalid, NotFound
from fermion.platform.jobfiles import iso
from fermion.platform.resources import serve_flags
from fermion.platform.store.records import (
    DeploymentRecord,
    check_env,
    check_name,
    check_options,
    check_scaling,
    check_source,
)

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane
    from fermion.platform.sandbox import Sandbox

#: How long `fermion serve --check` may take to load a source before the API gives up on it.
SOURCE_CHECK_TIMEOUT_S = 120.0


def check_source_loads(sandbox: Sandbox, source: str, options: dict[str, Any], env: dict[str, str]) -> None:
    """Refuse code from outside the opened folders, then run `fermion serve SOURCE --check` as a replica
    would (same sandbox, options and env); Invalid if it fails, with no path of the platform's in the answer."""
    sandbox.code.check(source, options)
    command = [sys.executable, "-m", "fermion", "serve", absolute_source(source), "--check", *serve_flags(options)]
    with tempfile.TemporaryDirectory(prefix="check-", dir=sandbox.data_dir) as run_dir:
        try:
            done = subprocess.run(
                sandbox.wrap(command, Path(run_dir)),
                capture_output=True,
                text=True,
                timeout=SOURCE_CHECK_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                env={**sandbox.env(env, Path(run_dir)), "NO_COLOR": "1"},
                cwd=sandbox.workdir(source, options),
            )
        except subprocess.TimeoutExpired:
            raise Invalid(f"source {source!r} did not load within {SOURCE_CHECK_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        if sandbox.code.outside(source):  # missing or not a model: one answer, so the API is no file-existence oracle
            raise Invalid(f"source {source!r} does not load: {UNREADABLE}")
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        message = next((line.strip() for line in lines if line.startswith("error:")), lines[-1] if lines else "")
        message = message.removeprefix("error:").strip() or f"exited with code {done.returncode}"
        raise Invalid(sandbox.redact(f"source {source!r} does not load: {message}"))


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add /deployments and /events to the API."""

    def view(request: Request, record: DeploymentRecord) -> dict[str, Any]:
        public = record.to_public_dict()
        public.pop("id", None)
        base = str(request.base_url).rstrip("/")
        return {**public, "url": f"{base}/run/{record.name}", **plane.deployment_status(record)}

    # Deployments

    @api.post(f"{PREFIX}/deployments", status_code=201, response_model=DeploymentView, tags=["deployments"])
    def create_deployment(body: DeploymentCreate, request: Request, who: NarrowableDeployer) -> dict[str, Any]:
        """Create a deployment from any source `fermion serve` takes; its replicas start at once. A token
        narrowed to deployments may create only those."""
        reach(who, body.name, "creating a deployment")
        max_replicas = body.max_replicas if body.max_replicas is not None else max(body.min_replicas, 1)
        check_name(body.name)
        check_scaling(body.min_replicas, max_replicas, body.target_in_flight)
        source, options, env = check_source(body.source), check_options(body.options), check_env(body.env)
        if body.name in {d.name for d in plane.store.list_deployments()}:
            raise Conflict(
                f"a deployment named {body.name!r} already exists; change it with `fermion update`, or pick another name"
            )
        plane.check_capacity(body.name, source, options, body.min_replicas, max_replicas)
        plane.check_resources(options)
        check_source_loads(plane.sandbox, source, options, env)
        record = plane.store.create_deployment(
            body.name,
            source,
            options=options,
            env=env,
            min_replicas=body.min_replicas,
            max_replicas=max_replicas,
            target_in_flight=body.target_in_flight,
            public=body.public,
            note=body.note,
        )
        plane.store.audit(
            who.name,
            "deployment.create",
            body.name,
            {
                "source": source,
                "options": options,
                "env": env,
                "min_replicas": body.min_replicas,
                "max_replicas": max_replicas,
                "public": body.public,
            },
        )
        plane.wake()
        return view(request, record)

    @api.get(f"{PREFIX}/deployments", response_model=DeploymentList, tags=["deployments"])
    def list_deployments(request: Request, who: NarrowableInvoker) -> dict[str, Any]:
        """Every deployment (that the token reaches), by name, with its status and replica counts."""
        return {"deployments": [view(request, d) for d in plane.store.list_deployments() if who.reaches(d.name)]}

    @api.get(f"{PREFIX}/deployments/{{name}}", response_model=DeploymentView, tags=["deployments"])
    def get_deployment(name: str, request: Request, _who: Invoker) -> dict[str, Any]:
        """One deployment; an unknown name → 404 listing the known ones."""
        return view(request, plane.store.get_deployment(name))

    @api.patch(f"{PREFIX}/deployments/{{name}}", response_model=DeploymentView, tags=["deployments"])
    def update_deployment(name: str, body: DeploymentPatch, request: Request, who: Deployer) -> dict[str, Any]:
        """Change a deployment: a new source, options or env rolls out a new revision; scaling applies at once."""
        current = plane.store.get_deployment(name)
        changes = body.model_dump(exclude_none=True)
        if "min_replicas" in changes and "max_replicas" not in changes and changes["min_replicas"] > current.max_replicas:
            changes["max_replicas"] = changes["min_replicas"]  # `scale N` above the old ceiling raises it
        if {"source", "options", "env"} & changes.keys():
            source = changes.get("source", current.source)
            options = changes["options"] = check_options(changes.get("options", current.options))
            env = changes.get("env", current.env)
            if (source, options, env) != (current.source, current.options, current.env):
                plane.check_resources(options)
                check_source_loads(plane.sandbox, source, options, env)
        if {"source", "options", "min_replicas", "max_replicas"} & changes.keys():
            plane.check_capacity(
                name,
                changes.get("source", current.source),
                changes.get("options", current.options),
                changes.get("min_replicas", current.min_replicas),
                changes.get("max_replicas", current.max_replicas),
            )
        record = plane.store.update_deployment(name, **changes)
        plane.store.audit(who.name, "deployment.update", name, changes)
        plane.wake()
        return view(request, record)

    @api.delete(f"{PREFIX}/deployments/{{name}}", status_code=202, response_model=DeploymentView, tags=["deployments"])
    def delete_deployment(name: str, request: Request, who: Deployer) -> dict[str, Any]:
        """Stop a deployment's replicas and remove it (its events stay)."""
        record = plane.store.delete_deployment(name)
        plane.store.audit(who.name, "deployment.delete", name)
        plane.wake()
        return view(request, record)

    @api.get(f"{PREFIX}/deployments/{{name}}/revisions", tags=["deployments"])
    def list_revisions(name: str, _who: Deployer) -> dict[str, list[RevisionView]]:
        """Every revision of a deployment, oldest first (env values masked)."""
        revisions = []
        for rev in plane.store.list_revisions(name):
            public = rev.to_public_dict()
            revisions.append(RevisionView(**{k: public[k] for k in RevisionView.model_fields}))
        return {"revisions": revisions}

    @api.post(f"{PREFIX}/deployments/{{name}}/rollback", response_model=DeploymentView, tags=["deployments"])
    def rollback(name: str, request: Request, who: Deployer, body: Rollback | None = None) -> dict[str, Any]:
        """Roll out an earlier revision's source, options and env again (as a new revision)."""
        current = plane.store.get_deployment(name)
        revisions = {rev.number: rev for rev in plane.store.list_revisions(name)}
        number = body.revision if body is not None and body.revision is not None else current.revision - 1
        if number not in revisions:
            known = ", ".join(str(n) for n in sorted(revisions))
            raise NotFound(f"deployment {name!r} has no revision {number}; its revisions: {known}")
        if number == current.revision:
            raise Invalid(
                f"revision {number} is the current one; give an earlier revision (revisions: {', '.join(map(str, sorted(revisions)))})"
            )
        target = revisions[number]
        if target.forgotten:
            raise Invalid(
                f"revision {number} used env values that were forgotten since ({', '.join(sorted(target.forgotten))}); "
                "roll back to a later revision, or update the deployment with the env it needs"
            )
        plane.sandbox.code.check(target.source, target.options)  # the operator may have closed its folder since
        record = plane.store.update_deployment(
            name, source=target.source, options=target.options, env=target.env, note=f"rollback to revision {number}"
        )
        if record.revision == current.revision:  # same content as now: nothing to roll
            raise Invalid(f"revision {number} runs the same source, options and env as the current revision {current.revision}")
        plane.store.audit(who.name, "deployment.rollback", name, {"to_revision": number, "new_revision": record.revision})
        plane.wake()
        return view(request, record)

    @api.post(f"{PREFIX}/deployments/{{name}}/forget-unused-env", response_model=ForgottenEnv, tags=["deployments"])
    def forget_unused_env(name: str, who: Deployer) -> dict[str, Any]:
        """Erase the env values the current revision no longer uses (each value is kept once and referred to by
        revisions); the revisions that used them can no longer be rolled back to."""
        count = plane.store.forget_unused_env(name)
        lost = [rev.number for rev in plane.store.list_revisions(name) if rev.forgotten]
        plane.store.audit(who.name, "deployment.forget_env", name, {"values": count, "revisions": lost})
        return {"forgotten": count, "revisions": lost}

    @api.get(f"{PREFIX}/deployments/{{name}}/replicas", tags=["deployments"])
    def list_replicas(name: str, _who: Deployer) -> dict[str, list[ReplicaView]]:
        """The replicas running now: starting or ready, with their revision and address."""
        plane.store.get_deployment(name)
        views = plane.reconciler.replica_views(name)
        return {"replicas": [ReplicaView(**{**r, "started_at": iso(r.get("started_at"))}) for r in views]}

    @api.get(f"{PREFIX}/deployments/{{name}}/events", tags=["events"])
    def deployment_events(
        name: str, _who: Deployer, after: EventId = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, list[EventView]]:
        """A deployment's events, oldest first; poll with `after` = the last id seen."""
        names = {d.name for d in plane.store.list_deployments()}
        events = plane.store.list_events(name, after_id=after, limit=limit)
        if name not in names and not events:
            raise NotFound.named("deployment", name, names)
        return {"events": [EventView(**e.to_public_dict()) for e in events]}

    @api.get(f"{PREFIX}/deployments/{{name}}/logs", tags=["deployments"], response_model=None)
    def deployment_logs(
        name: str, _who: Deployer, lines: Annotated[int, Query(ge=1, le=10000)] = 100, follow: bool = False
    ) -> dict[str, list[LogLine]] | StreamingResponse:
        """The replicas' last log lines; `follow=true` streams new lines as NDJSON until the client leaves."""
        plane.store.get_deployment(name)
        tail = plane.reconciler.logs(name, lines)
        if not follow:
            return {"lines": [LogLine(replica=rid, line=line) for rid, line in tail]}
        return StreamingResponse(_follow_logs(plane, name, tail), media_type="application/x-ndjson")

    @api.get(f"{PREFIX}/events", tags=["events"])
    def all_events(
        who: NarrowableDeployer,
        deployment: str | None = None,
        after: EventId = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, list[EventView]]:
        """Events of every deployment (or one), oldest first; a narrowed token must name one of its deployments."""
        if who.narrowed and deployment is None:
            raise Forbidden(f"token {who.name!r} is narrowed to {narrowed_to(who)}; ask for the events of one: ?deployment=NAME")
        reach(who, deployment, "reading events")
        return {
            "events": [EventView(**e.to_public_dict()) for e in plane.store.list_events(deployment, after_id=after, limit=limit)]
        }


async def _follow_logs(plane: ControlPlane, name: str, first: list[tuple[str, str]]) -> AsyncIterator[bytes]:
    """The lines we have, then new ones as they come (polled twice a second), as NDJSON."""
    for replica, line in first:
        yield orjson.dumps({"replica": replica, "line": line}) + b"\n"
    seen = _by_replica(first)
    last_beat = time.monotonic()
    while True:
        await asyncio.sleep(0.5)
        tail = await asyncio.to_thread(plane.reconciler.logs, name, 500)
        current = _by_replica(tail)
        fresh = []
        for replica, lines in current.items():
            fresh += [(replica, line) for line in _new_lines(seen.get(replica, []), lines)]
        seen = current
        for replica, line in fresh:
            yield orjson.dumps({"replica": replica, "line": line}) + b"\n"
        if not fresh and time.monotonic() - last_beat > 15:
            last_beat = time.monotonic()
            yield b"\n"  # a blank line keeps proxies from closing a quiet stream; clients skip it
        elif fresh:
            last_beat = time.monotonic()


def _by_replica(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for replica, line in lines:
        grouped.setdefault(replica, []).append(line)
    return grouped


def _new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of the tail `now` that follow the tail `before` (the longest overlap wins)."""
    for k in range(min(len(before), len(now)), 0, -1):
        if before[-k:] == now[:k]:
            return now[k:]
    return now
