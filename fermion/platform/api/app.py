"""The control plane's REST API, `/api/v1` (docs/platform-api.md), as a FastAPI app.

FastAPI earns its place here (typed bodies, OpenAPI, docs); the gateway's hot path does not go
through it. Handlers are plain functions: FastAPI runs them in its thread pool, so the store's
blocking calls never hold up the event loop that also carries the gateway's traffic.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route

from fermion._version import __version__
from fermion.platform.api.headers import SecurityHeaders
from fermion.platform.api.schemas import (
    AuditView,
    DeploymentCreate,
    DeploymentList,
    DeploymentPatch,
    DeploymentView,
    ErrorBody,
    EventView,
    Info,
    LogLine,
    NewToken,
    ReplicaView,
    RevisionView,
    Rollback,
    TokenCreate,
    TokenView,
)
from fermion.platform.auth import Scope, allows
from fermion.platform.errors import Conflict, Forbidden, Invalid, NotFound, PlatformError, Unauthorized
from fermion.platform.store.records import (
    DeploymentRecord,
    TokenRecord,
    check_env,
    check_name,
    check_options,
    check_scaling,
    check_source,
)

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane

PREFIX = "/api/v1"
#: An event id to read after: the store's ids are 64-bit integers, so larger numbers are refused (422), not a 500;
#: the bound is the largest integer every JSON client reads exactly (2**53 - 1).
EventId = Annotated[int | None, Query(ge=0, le=2**53 - 1)]
#: What the front door (HAProxy, the gateway) answers a malformed request with, before the API sees it.
MALFORMED = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
#: How long `fermion serve --check` may take to load a source before the API gives up on it.
SOURCE_CHECK_TIMEOUT_S = 120.0


def _error_response(error: PlatformError) -> JSONResponse:
    headers = error.headers()
    if error.status == 401:
        headers["www-authenticate"] = 'Bearer realm="fermion"'
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers or None)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def check_source_loads(source: str, options: dict[str, Any], env: dict[str, str]) -> None:
    """Run `fermion serve SOURCE --check` as a replica would (same options and env); Invalid if it fails."""
    command = [sys.executable, "-m", "fermion", "serve", source, "--check"]
    if options.get("task"):
        command += ["--task", str(options["task"])]
    if options.get("trust_pickle"):
        command.append("--trust-pickle")
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=SOURCE_CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env, "COLUMNS": "500", "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired:
        raise Invalid(f"source {source!r} did not load within {SOURCE_CHECK_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        message = next((line.strip() for line in lines if line.startswith("error:")), lines[-1] if lines else "")
        message = message.removeprefix("error:").strip() or f"exited with code {done.returncode}"
        raise Invalid(f"source {source!r} does not load: {message}")


def _needs(scope: Scope) -> Callable[[Request], TokenRecord]:
    """A dependency that lets the request through only with a valid token holding `scope`."""

    def check(request: Request) -> TokenRecord:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized(f"send a token: Authorization: Bearer fmn_... (a token with the {scope.value!r} scope)")
        record = request.app.state.plane.tokens.verify(token.strip())
        if record is None:
            raise Unauthorized("unknown, revoked or expired token; ask an admin for a new one (fermion token create)")
        if not allows(record.scopes, scope):
            have = ", ".join(sorted(s.value for s in record.scopes))
            raise Forbidden(f"token {record.name!r} has scope {have}; this needs {scope.value!r}")
        return record

    return check


Invoker = Annotated[TokenRecord, Depends(_needs(Scope.INVOKE))]
Deployer = Annotated[TokenRecord, Depends(_needs(Scope.DEPLOY))]
Admin = Annotated[TokenRecord, Depends(_needs(Scope.ADMIN))]


def not_installed(path: str, error: ModuleNotFoundError) -> JSONResponse:
    """501 for a route whose package is missing where the platform runs (datasets need pandas and
    scikit-learn, say, which `fermion[platform]` alone does not bring), naming the extra to install."""
    from fermion.extras import install_hint

    preferred = "data" if path.startswith(f"{PREFIX}/datasets") else "train"
    hint = install_hint(error, preferred)
    missing = hint[0] if hint else (error.name or "a package")
    what = f"{hint[1]} where `fermion up` runs, then restart it" if hint else "install it where `fermion up` runs"
    body = {"error": "not_installed", "status": 501, "message": f"this needs {missing}, which is not installed: {what}"}
    return JSONResponse(body, status_code=501)


def build_api(plane: ControlPlane) -> FastAPI:
    """The REST API over one control plane."""
    api = FastAPI(
        title="Fermion platform",
        version=__version__,
        description="Deployments, replicas, events, logs, tokens, the audit log, datasets, training jobs and models of a `fermion up` platform.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses={
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            400: {
                "description": "A malformed request (control characters in the path, say)",
                "content": {"application/json": {"schema": MALFORMED}},
            },
            404: {"model": ErrorBody, "description": "No such deployment, token, dataset, training job or model"},
            409: {"model": ErrorBody, "description": "A name that is taken, or a state that does not allow this"},
            422: {"model": ErrorBody},
        },
    )
    api.state.plane = plane
    api.add_middleware(SecurityHeaders)

    @api.exception_handler(PlatformError)
    async def _platform_error(_request: Request, exc: PlatformError) -> JSONResponse:
        return _error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def _invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(Invalid(_validation_message(exc)))

    @api.exception_handler(404)
    async def _no_route(request: Request, _exc: Exception) -> JSONResponse:
        return _error_response(NotFound(f"no such path {request.url.path}; the API is under {PREFIX} (see {PREFIX}/docs)"))

    @api.exception_handler(405)
    async def _bad_method(request: Request, _exc: Exception) -> JSONResponse:
        error = PlatformError(f"{request.url.path} does not take {request.method}; see {PREFIX}/docs")
        body = {**error.to_dict(), "status": 405, "error": "method_not_allowed"}
        # Allow: the methods of the routes at this path (Starlette lists only the first route's); where a literal path
        # and a template both match (/datasets/samples, /datasets/{ref}), the literal one's, as OpenAPI documents it.
        matching = [
            r for r in request.app.router.routes if isinstance(r, Route) and r.matches(request.scope)[0] == Match.PARTIAL
        ]
        fewest = min((len(r.param_convertors) for r in matching), default=0)
        allowed = {m for r in matching if len(r.param_convertors) == fewest for m in r.methods or ()}
        return JSONResponse(body, status_code=405, headers={"allow": ", ".join(sorted(allowed))} if allowed else None)

    @api.exception_handler(ModuleNotFoundError)
    async def _not_installed(request: Request, exc: ModuleNotFoundError) -> JSONResponse:
        return not_installed(request.url.path, exc)

    @api.exception_handler(400)
    async def _unreadable(_request: Request, exc: Exception) -> JSONResponse:
        detail = getattr(exc, "detail", None) or "bad request"
        body = {"error": "bad_request", "status": 400, "message": f"{detail}: send the body its Content-Type says"}
        return JSONResponse(body, status_code=400)

    def view(request: Request, record: DeploymentRecord) -> dict[str, Any]:
        public = record.to_public_dict()
        public.pop("id", None)
        base = str(request.base_url).rstrip("/")
        return {**public, "url": f"{base}/run/{record.name}", **plane.deployment_status(record)}

    # Deployments

    @api.post(f"{PREFIX}/deployments", status_code=201, response_model=DeploymentView, tags=["deployments"])
    def create_deployment(body: DeploymentCreate, request: Request, who: Deployer) -> dict[str, Any]:
        """Create a deployment from any source `fermion serve` takes; its replicas start at once."""
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
        check_source_loads(source, options, env)
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
    def list_deployments(request: Request, _who: Invoker) -> dict[str, Any]:
        """Every deployment, by name, with its status and replica counts."""
        return {"deployments": [view(request, d) for d in plane.store.list_deployments()]}

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
                check_source_loads(source, options, env)
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
    def list_revisions(name: str, _who: Invoker) -> dict[str, list[RevisionView]]:
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
        record = plane.store.update_deployment(
            name, source=target.source, options=target.options, env=target.env, note=f"rollback to revision {number}"
        )
        if record.revision == current.revision:  # same content as now: nothing to roll
            raise Invalid(f"revision {number} runs the same source, options and env as the current revision {current.revision}")
        plane.store.audit(who.name, "deployment.rollback", name, {"to_revision": number, "new_revision": record.revision})
        plane.wake()
        return view(request, record)

    @api.get(f"{PREFIX}/deployments/{{name}}/replicas", tags=["deployments"])
    def list_replicas(name: str, _who: Invoker) -> dict[str, list[ReplicaView]]:
        """The replicas running now: starting or ready, with their revision and address."""
        plane.store.get_deployment(name)
        views = plane.reconciler.replica_views(name)
        return {"replicas": [ReplicaView(**{**r, "started_at": _iso(r.get("started_at"))}) for r in views]}

    @api.get(f"{PREFIX}/deployments/{{name}}/events", tags=["events"])
    def deployment_events(
        name: str, _who: Invoker, after: EventId = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
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
        _who: Invoker, deployment: str | None = None, after: EventId = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, list[EventView]]:
        """Events of every deployment (or one), oldest first."""
        return {
            "events": [EventView(**e.to_public_dict()) for e in plane.store.list_events(deployment, after_id=after, limit=limit)]
        }

    # Tokens and audit

    @api.post(f"{PREFIX}/tokens", status_code=201, response_model=NewToken, tags=["tokens"])
    def create_token(body: TokenCreate, who: Admin) -> dict[str, Any]:
        """Make a token. The answer holds the token itself: it is never shown again."""
        expires = datetime.now(UTC) + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
        record, plaintext = plane.store.create_token(body.name, body.scopes, expires_at=expires)
        plane.store.audit(
            who.name, "token.create", body.name, {"scopes": sorted(s.value for s in record.scopes), "token_id": record.id}
        )
        plane.tokens_changed()
        return {**_token_view(record), "token": plaintext}

    @api.get(f"{PREFIX}/tokens", tags=["tokens"])
    def list_tokens(_who: Admin) -> dict[str, list[TokenView]]:
        """Every token's metadata (never the token)."""
        return {"tokens": [TokenView(**_token_view(t)) for t in plane.store.list_tokens()]}

    @api.delete(f"{PREFIX}/tokens/{{token}}", response_model=TokenView, tags=["tokens"])
    def revoke_token(token: str, who: Admin) -> dict[str, Any]:
        """Revoke a token by id or name; it stops working at once."""
        record = plane.store.revoke_token(token)
        plane.tokens_changed()
        plane.store.audit(who.name, "token.revoke", record.name, {"token_id": record.id})
        return _token_view(record)

    @api.get(f"{PREFIX}/audit", tags=["audit"])
    def audit_log(_who: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, list[AuditView]]:
        """Who changed what, newest first; secrets never appear."""
        return {"entries": [AuditView(**a.to_public_dict()) for a in plane.store.list_audit(limit)]}

    @api.get(f"{PREFIX}/info", response_model=Info, tags=["platform"])
    def info(request: Request, _who: Invoker) -> dict[str, Any]:
        """Version, backend, database (password hidden) and the number of deployments."""
        return {
            "version": __version__,
            "backend": plane.backend.name,
            "database": plane.store.url.render_as_string(hide_password=True),
            "url": str(request.base_url).rstrip("/"),
            "deployments": len(plane.store.list_deployments()),
        }

    @api.get(f"{PREFIX}/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        from fermion.serving.openapi import docs_csp, docs_page

        assets = f"{PREFIX}/docs/static" if plane.swagger_assets else None
        page = docs_page(f"{PREFIX}/openapi.json", "Fermion platform", assets, f"{PREFIX}/docs/init.js")
        return HTMLResponse(page, headers={"content-security-policy": docs_csp(bool(assets))})

    @api.get(f"{PREFIX}/docs/init.js", include_in_schema=False)
    def docs_init() -> Response:
        from fermion.serving.openapi import DOCS_INIT_JS

        return Response(DOCS_INIT_JS, media_type="text/javascript; charset=utf-8")

    if plane.swagger_assets:
        from starlette.staticfiles import StaticFiles

        api.mount(f"{PREFIX}/docs/static", StaticFiles(directory=plane.swagger_assets), name="swagger")

    from fermion.platform.api.console import register_console

    register_console(api, plane)
    from fermion.platform.api.build import register_build

    register_build(api, plane)
    return api


def _iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (None stays None)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _token_view(record: TokenRecord) -> dict[str, Any]:
    public = record.to_public_dict()
    return {key: public.get(key) for key in TokenView.model_fields}


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
