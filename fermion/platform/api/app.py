"""The control plane's REST API, `/api/v1` (docs/platform-api.md), as a FastAPI app.

FastAPI earns its place here (typed bodies, OpenAPI, docs); the gateway's hot path does not go
through it. Handlers are plain functions: FastAPI runs them in its thread pool, so the store's
blocking calls never hold up the event loop that also carries the gateway's traffic.

`build_api` makes the app (its error answers, /info and the docs page) and assembles one router
module per resource: deployments (with events and logs), tokens (with the audit log), console,
datasets, trainings, batches and models. What they share is in `common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match, Route

from fermion._version import __version__
from fermion.platform.api import batches, console, datasets, deployments, models, tokens, trainings
from fermion.platform.api.common import PREFIX, NarrowableInvoker, error_response, not_installed, validation_message
from fermion.platform.api.headers import SecurityHeaders
from fermion.platform.api.schemas import ErrorBody, Info
from fermion.platform.auth import Scope, allows
from fermion.platform.errors import Invalid, NotFound, PlatformError, error_body

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane


def build_api(plane: ControlPlane) -> FastAPI:
    """The REST API over one control plane."""
    api = FastAPI(
        title="Fermion platform",
        version=__version__,
        description="Deployments, replicas, events, logs, tokens, the audit log, datasets, training jobs, batch jobs and models of a `fermion up` platform.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses={
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            400: {"model": ErrorBody, "description": "A malformed request (control characters in the path, say)"},
            404: {"model": ErrorBody, "description": "No such deployment, token, dataset, training or batch job, or model"},
            409: {"model": ErrorBody, "description": "A name that is taken, or a state that does not allow this"},
            422: {"model": ErrorBody},
        },
    )
    api.state.plane = plane
    api.add_middleware(SecurityHeaders)

    @api.exception_handler(PlatformError)
    async def _platform_error(request: Request, exc: PlatformError) -> JSONResponse:
        caller = getattr(request.state, "token", None)
        if isinstance(exc, NotFound) and caller is not None and caller.narrowed:  # list only what it reaches
            exc = exc.seen_by(caller.reaches)
        return error_response(exc)

    @api.exception_handler(RequestValidationError)
    async def _invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(Invalid(validation_message(exc)))

    @api.exception_handler(404)
    async def _no_route(request: Request, _exc: Exception) -> JSONResponse:
        return error_response(NotFound(f"no such path {request.url.path}; the API is under {PREFIX} (see {PREFIX}/docs)"))

    @api.exception_handler(405)
    async def _bad_method(request: Request, _exc: Exception) -> JSONResponse:
        error = PlatformError(f"{request.url.path} does not take {request.method}; see {PREFIX}/docs")
        body = error_body(405, error.message)
        # Allow: the methods of the routes at this path (Starlette lists only the first route's); where a literal path
        # and a template both match (/datasets/samples, /datasets/{ref}), the literal one's, as OpenAPI documents it.
        matching = [r for r in request.app.router.routes if isinstance(r, Route) and r.matches(request.scope)[0] == Match.PARTIAL]
        fewest = min((len(r.param_convertors) for r in matching), default=0)
        allowed = {m for r in matching if len(r.param_convertors) == fewest for m in r.methods or ()}
        return JSONResponse(body, status_code=405, headers={"allow": ", ".join(sorted(allowed))} if allowed else None)

    @api.exception_handler(ModuleNotFoundError)
    async def _not_installed(request: Request, exc: ModuleNotFoundError) -> JSONResponse:
        return not_installed(request.url.path, exc)

    @api.exception_handler(400)
    async def _unreadable(_request: Request, exc: Exception) -> JSONResponse:
        detail = getattr(exc, "detail", None) or "bad request"
        body = error_body(400, f"{detail}: send the body its Content-Type says")
        return JSONResponse(body, status_code=400)

    # The routers, in the order the API's documentation lists them
    deployments.register(api, plane)
    tokens.register(api, plane)

    @api.get(f"{PREFIX}/info", response_model=Info, tags=["platform"])
    def info(request: Request, who: NarrowableInvoker) -> dict[str, Any]:
        """Version, backend, the number of deployments (that the token reaches) and how replicas are sandboxed; the database (password
        hidden) only for an admin token, since its URL names a host or the data directory's path."""
        return {
            "version": __version__,
            "backend": plane.backend.name,
            "database": plane.store.url.render_as_string(hide_password=True) if allows(who.scopes, Scope.ADMIN) else None,
            "url": str(request.base_url).rstrip("/"),
            "deployments": sum(1 for d in plane.store.list_deployments() if who.reaches(d.name)),
            "sandbox": plane.sandbox.description if plane.backend.name == "local" else f"none: the {plane.backend.name} backend",
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

    console.register(api, plane)
    datasets.register(api, plane)
    trainings.register(api, plane)
    batches.register(api, plane)
    models.register(api, plane)
    return api
