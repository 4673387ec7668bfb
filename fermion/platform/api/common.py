"""What every router of the REST API shares: the prefix, the error answers and who may call.

Every error the API answers has one shape, `{"error": <code>, "status": <int>, "message": <for
people>}` (`PlatformError.to_dict`); the dependencies `Invoker`, `Deployer` and `Admin` let a
request through only with a token holding that scope, as `fermion.platform.auth` decides, and a token
narrowed to deployments only to routes about one of them (`Narrowable*`: routes that filter for it).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from fermion.platform.auth import Scope, reach
from fermion.platform.errors import PlatformError, error_body
from fermion.platform.store.records import TokenRecord

PREFIX = "/api/v1"
#: An event id to read after: the store's ids are 64-bit integers, so larger numbers are refused (422), not a 500;
#: the bound is the largest integer every JSON client reads exactly (2**53 - 1).
EventId = Annotated[int | None, Query(ge=0, le=2**53 - 1)]


def error_response(error: PlatformError) -> JSONResponse:
    headers = error.headers()
    if error.status == 401:
        headers["www-authenticate"] = 'Bearer realm="fermion"'
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers or None)


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _needs(scope: Scope, narrowable: bool = False) -> Any:
    """A dependency that lets the request through only with a valid token holding `scope`.

    A token narrowed to deployments passes only where the path names one of them (`{name}`), or where the
    route is `narrowable`: it keeps such a token to its deployments itself (lists only those, say)."""

    def check(request: Request) -> TokenRecord:
        what = f"{request.method} {request.url.path}"  # the 403 names what was asked: "GET /api/v1/events needs 'deploy'"
        record = request.app.state.plane.tokens.require(request.headers.get("authorization"), scope, what)
        request.state.token = record  # a 404 then lists only the deployments it reaches
        return record if narrowable else reach(record, request.path_params.get("name"), what)

    return Depends(check)


Invoker = Annotated[TokenRecord, _needs(Scope.INVOKE)]
Deployer = Annotated[TokenRecord, _needs(Scope.DEPLOY)]
Admin = Annotated[TokenRecord, _needs(Scope.ADMIN)]
#: A token of the scope, narrowed or not: the route itself keeps a narrowed one to its deployments.
NarrowableInvoker = Annotated[TokenRecord, _needs(Scope.INVOKE, narrowable=True)]
NarrowableDeployer = Annotated[TokenRecord, _needs(Scope.DEPLOY, narrowable=True)]


def not_installed(path: str, error: ModuleNotFoundError) -> JSONResponse:
    """501 for a route whose package is missing where the platform runs (datasets need pandas and
    scikit-learn, say, which `fermion[platform]` alone does not bring), naming the extra to install."""
    from fermion.extras import install_hint

    preferred = "data" if path.startswith(f"{PREFIX}/datasets") else "train"
    hint = install_hint(error, preferred)
    missing = hint[0] if hint else (error.name or "a package")
    what = f"{hint[1]} where `fermion up` runs, then restart it" if hint else "install it where `fermion up` runs"
    body = error_body(501, f"this needs {missing}, which is not installed: {what}")
    return JSONResponse(body, status_code=501)
