"""The docs pages' Swagger UI: no inline script, a Content-Security-Policy, and CDN assets pinned by Subresource
Integrity (docs/security.md, "Browser hardening"). The console's own headers are checked in tests/test_console.py."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import httpx
import pytest
from support import serve_asgi

from fermion.serving.openapi import (
    DOCS_INIT_JS,
    SWAGGER_CDN,
    SWAGGER_SRI,
    SWAGGER_UI_VERSION,
    docs_csp,
    docs_page,
    swagger_assets_dir,
)

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>")


def test_without_the_docs_extra_swagger_ui_comes_from_a_pinned_version_with_integrity() -> None:
    page = docs_page("/openapi.json", "Echo", None, "/docs/init.js")
    assert SWAGGER_CDN.endswith(f"swagger-ui-dist@{SWAGGER_UI_VERSION}") and re.fullmatch(r"\d+\.\d+\.\d+", SWAGGER_UI_VERSION)
    for name, sri in SWAGGER_SRI.items():
        tag = re.search(rf'<[^>]*"{re.escape(SWAGGER_CDN)}/{re.escape(name)}"[^>]*>', page)
        assert tag, f"{name} is not loaded from {SWAGGER_CDN}"
        assert f'integrity="{sri}"' in tag.group(0) and 'crossorigin="anonymous"' in tag.group(0)
    assert not INLINE_SCRIPT.search(page), "the docs page has an inline script"
    assert '<script src="/docs/init.js">' in page and 'data-openapi-url="/openapi.json"' in page
    assert "https://cdn.jsdelivr.net" in docs_csp(local_assets=False)
    assert "cdn" not in docs_csp(local_assets=True) and "frame-ancestors 'none'" in docs_csp(local_assets=True)


def test_the_integrity_hashes_are_those_of_the_pinned_files() -> None:
    """swagger-ui-bundle-v2 ships the npm package swagger-ui-dist's files unchanged, the ones jsDelivr serves."""
    folder = swagger_assets_dir()
    if folder is None or Path(folder).name != f"swagger-ui-{SWAGGER_UI_VERSION}":
        pytest.skip(f"needs swagger-ui-bundle-v2 {SWAGGER_UI_VERSION} (the dev extra) to compare the files")
    for name, sri in SWAGGER_SRI.items():
        digest = base64.b64encode(hashlib.sha384((Path(folder) / name).read_bytes()).digest()).decode()
        assert sri == f"sha384-{digest}", f"{name}: SWAGGER_SRI is out of date for {SWAGGER_UI_VERSION}"


def test_with_the_docs_extra_the_assets_are_local_and_need_no_integrity() -> None:
    page = docs_page("/run/echo/openapi.json", "Echo", "/run/echo/docs/static", "/run/echo/docs/init.js")
    assert "cdn" not in page and "integrity=" not in page
    assert 'src="/run/echo/docs/static/swagger-ui-bundle.js"' in page and 'src="/run/echo/docs/init.js"' in page
    assert 'data-openapi-url="/run/echo/openapi.json"' in page


def test_a_replica_serves_its_docs_under_a_content_security_policy() -> None:
    from fermion.serving.app import ReplicaApp
    from fermion.serving.config import ServeConfig
    from fermion.sources import load_service

    app = ReplicaApp(load_service(str(Path(__file__).resolve().parent.parent / "examples" / "echo.py")), ServeConfig())
    with serve_asgi(app) as url:
        page = httpx.get(f"{url}/docs")
        assert page.status_code == 200 and not INLINE_SCRIPT.search(page.text)
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        init = httpx.get(f"{url}/docs/init.js")
        assert init.status_code == 200 and init.content == DOCS_INIT_JS
        assert init.headers["content-type"].startswith("text/javascript")
        # A replica's system routes take GET (and HEAD) only.
        refused = httpx.post(f"{url}/healthz")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert httpx.get(f"{url}/healthz", headers={"x-big": "a" * 40_000}).status_code == 431
