"""The API routes the web console needs beyond the rest (docs/platform-api.md, "For the console"),
and the console's own files: `/` is its page, `/console/...` its scripts, styles and translations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, Response

from fermion.platform.api.common import PREFIX, Deployer, NarrowableDeployer, NarrowableInvoker
from fermion.platform.api.schemas import DeploymentMetrics, MetricsOverview, WhoAmI
from fermion.platform.errors import NotFound

if TYPE_CHECKING:
    from fermion.platform.controlplane import ControlPlane

#: The console's files, shipped inside the package (the wheel takes every file under fermion/).
CONSOLE_DIR = Path(__file__).resolve().parents[2] / "console"
#: Set explicitly: `mimetypes` depends on the machine's /etc/mime.types (some say application/javascript, or nothing).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}
#: The browser revalidates each time, so a new version's files show up without a hard reload.
NO_CACHE = {"cache-control": "no-cache"}
NOT_BUILT = (
    '<!doctype html><html><head><meta charset="utf-8"><title>Fermion</title></head><body>'
    f"<h1>Fermion</h1><p>The web console is not built into this installation. The REST API is at "
    f'<a href="{PREFIX}/docs">{PREFIX}/docs</a>.</p></body></html>'
)


def console_file(path: str, root: Path | None = None) -> Path | None:
    """The file at `path` under `root` (default: the console's folder), or None if there is none or the path would
    leave `root`."""
    root = CONSOLE_DIR if root is None else root
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or ".." in path.split("/"):
        return None
    try:
        base = root.resolve()
        target = (base / path).resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def register(api: FastAPI, plane: ControlPlane) -> None:
    """Add whoami, the metrics history and the console's files to the API app."""

    @api.get(f"{PREFIX}/whoami", response_model=WhoAmI, tags=["platform"])
    def whoami(who: NarrowableInvoker) -> dict[str, Any]:
        """Who the token is and what it may do (its scopes, the deployments it is narrowed to, its rate), so a
        client shows only that."""
        public = who.to_public_dict()
        return {key: public.get(key) for key in ("name", "scopes", "expires_at", "deployments", "rate")}

    @api.get(f"{PREFIX}/deployments/{{name}}/metrics", response_model=DeploymentMetrics, tags=["deployments"])
    def deployment_metrics(name: str, _who: Deployer, minutes: Annotated[int, Query(ge=1, le=60)] = 15) -> dict[str, Any]:
        """The deployment's recent requests per second, errors, latency and replicas, a point per sample, oldest first."""
        plane.store.get_deployment(name)  # an unknown name → 404 listing the known ones
        interval = plane.history.interval_s
        interval = int(interval) if float(interval).is_integer() else interval  # 5, not 5.0, as documented
        return {"interval_s": interval, "points": plane.history.points(name, minutes)}

    @api.get(f"{PREFIX}/metrics", response_model=MetricsOverview, tags=["platform"])
    def metrics_overview(who: NarrowableDeployer, minutes: Annotated[int, Query(ge=1, le=60)] = 5) -> dict[str, Any]:
        """Each deployment's requests per second, p99 latency and errors over the last `minutes` (a narrowed
        token: its deployments only)."""
        return {"deployments": {name: row for name, row in plane.history.summary(minutes).items() if who.reaches(name)}}

    @api.get("/", include_in_schema=False)
    def console_page() -> Response:
        index = console_file("index.html")
        if index is None:
            return HTMLResponse(NOT_BUILT, headers=NO_CACHE)
        return Response(index.read_bytes(), media_type=CONTENT_TYPES[".html"], headers=NO_CACHE)

    @api.get("/console/{path:path}", include_in_schema=False)
    def console_asset(path: str) -> Response:
        found = console_file(path or "index.html")
        if found is None:
            raise NotFound(f"no console file {path!r}")
        kind = CONTENT_TYPES.get(found.suffix.lower(), "application/octet-stream")
        return Response(found.read_bytes(), media_type=kind, headers=NO_CACHE)
