"""The web console (fermion/console/), driven in a real Chromium against a real `fermion up`.

One platform and one browser for the module; the tests run in order as a person would use the
console: sign in → deploy the echo example from the form → call it in the playground → see the
call in the metrics → scale → switch languages → tokens (revoking your own token signs you out)
→ a phone-sized screen. Each page is photographed into test-artifacts/screenshots/, and into
docs/images/console-<page>.png when that is missing or FERMION_UPDATE_DOC_IMAGES=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, RunningPlatform, start_platform, stop_process, stop_replicas

CONSOLE = ROOT / "fermion" / "console"
LANGS = ("en", "zh-CN", "es")
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOC_IMAGES = ROOT / "docs" / "images"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Sources relative to the platform's working directory (the repository root: support.start_platform), so the
# screenshots in docs/images show no machine's folders.
ECHO = "examples/echo.py"
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def catalog(lang: str) -> dict[str, str]:
    return json.loads((CONSOLE / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))


# -------------------------------------------------------------------- no browser needed


def test_the_catalogs_have_the_same_keys_and_no_empty_text() -> None:
    catalogs = {lang: catalog(lang) for lang in LANGS}
    keys = set(catalogs["en"])
    for lang, messages in catalogs.items():
        assert set(messages) == keys, f"{lang}: missing {sorted(keys - set(messages))}, extra {sorted(set(messages) - keys)}"
        empty = [key for key, text in messages.items() if not isinstance(text, str) or not text.strip()]
        assert not empty, f"{lang}: empty texts for {empty}"
        for key, text in messages.items():  # the same {placeholders} in every language
            assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", catalogs["en"][key])), (lang, key)


def test_every_text_the_console_uses_is_in_the_catalogs() -> None:
    keys = set(catalog("en"))
    script = "\n".join(path.read_text(encoding="utf-8") for path in sorted(CONSOLE.glob("*.js")))
    page = (CONSOLE / "index.html").read_text(encoding="utf-8")
    used = set(re.findall(r"""\btO?r?\(\s*"([\w.-]+)\"""", script)) | set(re.findall(r'data-i18n="([^"]+)"', page))
    assert used, "found no catalog keys in the console's files"
    assert not used - keys, f"used but not in the catalogs: {sorted(used - keys)}"
    # No third-party code or CDN: every script and stylesheet comes from the platform itself.
    assert not re.search(r"""(src|href)="https?://""", page)
    imports = re.findall(r"""^\s*import\b.*?from\s+"([^"]+)";|\bimport\(""", script, re.MULTILINE)
    assert imports and all(re.fullmatch(r"\./\w+\.js", name) and (CONSOLE / name).is_file() for name in imports), (
        f"the console imports only its own modules, got {imports}"
    )


# -------------------------------------------------------------------- in the browser

try:
    from playwright import sync_api
except ImportError:  # the dev extra installs it
    sync_api = None
browser_tests = pytest.mark.skipif(
    sync_api is None or not Path(CHROMIUM).exists(), reason="needs playwright (the dev extra) and chromium (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("console") / "data"
    # Sample the metrics history every second so a call shows up in the charts quickly.
    running = start_platform(data, env={"FERMION_METRICS_INTERVAL_S": "1"})
    try:
        yield running
    finally:
        stop_process(running.proc)
        stop_replicas(data)


@pytest.fixture(scope="module")
def browser(platform: RunningPlatform) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Console:
    """A browser tab on the console, with the JavaScript errors it raised."""

    def __init__(self, browser: Any, platform: RunningPlatform, viewport: dict[str, int], locale: str = "en-US") -> None:
        self.platform = platform
        self.context = browser.new_context(viewport=viewport, locale=locale)
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Anything the Content-Security-Policy refused (an inline script or style, a foreign host) fails the test.
        self.page.on("console", lambda msg: self.errors.append(msg.text) if "Content Security Policy" in msg.text else None)

    def open(self, route: str = "#/overview") -> None:
        self.page.goto(f"{self.platform.url}/{route}")
        self.page.wait_for_selector("body[data-ready='1']")

    def go(self, route: str) -> None:
        self.page.evaluate("(route) => { location.hash = route; }", route)

    def sign_in(self, token: str) -> None:
        self.page.get_by_label("Token", exact=True).fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_selector("main[data-page='overview']")

    def shot(self, name: str, docs: bool = True) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_timeout(300)  # let the last refresh paint
        self.page.screenshot(path=str(SHOTS / f"console-{name}.png"))
        target = DOC_IMAGES / f"console-{name}.png"
        # The README's copies are refreshed on request (FERMION_UPDATE_DOC_IMAGES=1) or when missing,
        # so that running the tests does not rewrite tracked files every time.
        if docs and (os.environ.get("FERMION_UPDATE_DOC_IMAGES") == "1" or not target.exists()):
            DOC_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHOTS / f"console-{name}.png", target)

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def console(browser: Any, platform: RunningPlatform) -> Iterator[Console]:
    tab = Console(browser, platform, WIDE)
    try:
        yield tab
    finally:
        tab.close()


@pytest.fixture(autouse=True)
def _no_script_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "console" in request.fixturenames:
        tab: Console = request.getfixturevalue("console")
        errors, tab.errors[:] = list(tab.errors), []
        assert not errors, f"the console raised: {errors}"


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.mark.slow
@browser_tests
def test_sign_in(console: Console, platform: RunningPlatform) -> None:
    page = console.page
    console.open()
    page.wait_for_selector("main[data-page='signin']")  # no token yet: the sign-in page
    assert page.evaluate("document.documentElement.lang") == "en"
    console.shot("signin")
    page.get_by_label("Token", exact=True).fill("fmn_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.get_by_role("alert")).to_contain_text(catalog("en")["signin.invalid"])
    console.sign_in(platform.token)
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(catalog("en")["overview.title"])
    sync_api.expect(page.locator("#who")).to_contain_text("admin")
    sync_api.expect(page.get_by_role("link", name="Audit log")).to_be_visible()


@pytest.mark.slow
@browser_tests
def test_a_source_that_does_not_load_shows_the_apis_message(console: Console) -> None:
    page = console.page
    console.go("#/new")
    page.wait_for_selector("main[data-page='new']")
    page.get_by_label("Source", exact=True).fill("/nonexistent/service.py")
    page.get_by_label("Name", exact=True).fill("broken")
    page.get_by_role("button", name="Deploy").click()
    alert = page.locator("main .error:not([hidden])")
    sync_api.expect(alert).to_contain_text("fermion up --code-from")  # the API's refusal, without the path
    assert page.evaluate("location.hash") == "#/new"


@pytest.mark.slow
@browser_tests
def test_deploy_the_echo_example_from_the_form(console: Console) -> None:
    page = console.page
    console.go("#/overview")
    page.wait_for_selector("main[data-page='overview']")
    page.get_by_role("link", name="New deployment").first.click()
    page.wait_for_selector("main[data-page='new']")
    page.get_by_label("Source kind").select_option("file")
    page.get_by_label("Source", exact=True).fill(ECHO)
    page.get_by_label("Name", exact=True).fill("echo")
    page.get_by_label("CPUs", exact=True).fill("1")  # what a Ray replica reserves; here, its compute threads
    console.shot("new")
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_selector("main[data-page='deployments']")
    assert page.evaluate("location.hash") == "#/deployments/echo"
    with console.platform.api() as api:
        assert api.get("/api/v1/deployments/echo").json()["options"] == {"resources": {"cpus": 1.0}}
    replicas = page.locator(".summary .replicas")
    sync_api.expect(replicas).to_have_text("1/1", timeout=90_000)
    sync_api.expect(page.locator(".replicas-table tbody tr")).to_have_count(1)
    sync_api.expect(page.locator(".replicas-table tbody")).to_contain_text("ready")


@pytest.mark.slow
@browser_tests
def test_the_playground_calls_predict(console: Console, platform: RunningPlatform) -> None:
    page = console.page
    console.go("#/playground/echo")
    page.wait_for_selector("main[data-page='playground']")
    page.get_by_label("Endpoint").select_option("predict")
    page.get_by_label("text", exact=True).fill("hello")
    times = page.get_by_label("times", exact=True)
    assert times.get_attribute("type") == "number"
    snippets = page.locator("pre.snippet")
    sync_api.expect(snippets.nth(0)).to_contain_text(f"{platform.url}/run/echo/predict")
    sync_api.expect(snippets.nth(0)).to_contain_text(platform.token)
    sync_api.expect(snippets.nth(1)).to_contain_text(f'Client("{platform.url}/run/echo", token="{platform.token}")')
    sync_api.expect(snippets.nth(1)).to_contain_text('print(client.predict(text="hello"))')
    page.get_by_role("button", name="Send").click()
    sync_api.expect(page.locator("pre.output")).to_contain_text('"output": "echo: hello"')
    console.shot("playground")


@pytest.mark.slow
@browser_tests
def test_the_playground_streams_uploads_and_gets(console: Console, platform: RunningPlatform, tmp_path: Path) -> None:
    with platform.api() as api:
        for name, source in (("stream", "streaming.py"), ("files", "upload.py")):
            made = api.post("/api/v1/deployments", json={"name": name, "source": f"examples/{source}"})
            assert made.status_code == 201, made.text
    page = console.page
    for name in ("stream", "files"):
        console.go(f"#/deployments/{name}")
        sync_api.expect(page.locator(".summary .replicas")).to_have_text("1/1", timeout=90_000)

    console.go("#/playground/stream")  # SSE: each data: line shows as it arrives
    page.wait_for_selector("main[data-page='playground'] select[name='endpoint']")
    page.get_by_label("Endpoint").select_option("count")
    page.get_by_label("n", exact=True).fill("3")
    page.get_by_label("delay", exact=True).fill("0.5")
    sync_api.expect(page.locator("pre.snippet").nth(1)).to_contain_text("for item in client.count(n=3, delay=0.5):")
    page.get_by_role("button", name="Send").click()
    output = page.locator("pre.output")
    sync_api.expect(output).to_have_text(re.compile(r"^1\n$"))  # the first item, before the others are made
    sync_api.expect(output).to_have_text("1\n2\n3\n")

    upload = tmp_path / "hello.txt"
    upload.write_text("hello, file")
    console.go("#/playground/files")  # a File parameter: a file input, sent as multipart/form-data
    page.wait_for_selector("main[data-page='playground'] select[name='endpoint']")
    page.get_by_label("Endpoint").select_option("describe")
    assert page.get_by_label("upload", exact=True).get_attribute("type") == "file"
    page.get_by_label("upload", exact=True).set_input_files(str(upload))
    sync_api.expect(page.locator("pre.snippet").nth(0)).to_contain_text("-F 'upload=@hello.txt'")
    sync_api.expect(page.locator("pre.snippet").nth(1)).to_contain_text('upload=Path("hello.txt")')
    page.get_by_role("button", name="Send").click()
    sync_api.expect(page.locator("pre.output")).to_contain_text('"preview": "hello, file"')
    sync_api.expect(page.locator("pre.output")).to_contain_text('"filename": "hello.txt"')

    console.go("#/playground/echo")  # a GET endpoint
    page.wait_for_selector("main[data-page='playground'] select[name='endpoint']")
    page.get_by_label("Endpoint").select_option("info")
    page.get_by_role("button", name="Send").click()
    sync_api.expect(page.locator("pre.output")).to_contain_text('"prefix": "echo: "')
    with platform.api() as api:
        for name in ("stream", "files"):
            assert api.delete(f"/api/v1/deployments/{name}").status_code == 202


@pytest.mark.slow
def test_the_console_and_the_api_answer_with_browser_hardening_headers(platform: RunningPlatform) -> None:
    with platform.api() as api:
        for path in ("/", "/console/app.js", "/console/i18n/en.json", "/api/v1/info", "/api/v1/nowhere"):
            headers = api.get(path).headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["referrer-policy"] == "no-referrer", path
            policy = headers["content-security-policy"]
            assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy, (path, policy)
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (path, policy)
        docs = api.get("/api/v1/docs")
        assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
        assert docs.headers["x-content-type-options"] == "nosniff"
    # No inline script or event handler anywhere in the console's page.
    page = (CONSOLE / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) and not re.search(r"\son\w+=", page)


HOSTILE_PATHS = (
    "/../../api/v1/tokens",
    "/predict/../../../api/v1/tokens",
    "//evil.example/predict",
    "/%2e%2e/%2e%2e/api/v1/info",
    "/%2E%2E%2fapi",
    "https://evil.example/predict",
    "/predict\\..\\..\\api",
    "/predict?x=1",
    "/./predict",
)


@pytest.mark.slow
@browser_tests
def test_the_playground_refuses_paths_that_leave_the_deployment(console: Console, platform: RunningPlatform) -> None:
    """A replica writes its own OpenAPI document: a path in it that would reach /api/v1 (or another host) with the
    signed-in user's token is not offered, and nothing is ever sent there."""
    page = console.page
    sent: list[str] = []
    page.on("request", lambda req: sent.append(req.url))
    keep_only_hostile = False

    def hostile_openapi(route: Any) -> None:
        doc = route.fetch().json()
        predict = doc["paths"]["/predict"]["post"]
        hostile = {
            path: {"post": {**predict, "x-fermion": {**predict["x-fermion"], "endpoint": f"evil{i}"}}}
            for i, path in enumerate(HOSTILE_PATHS)
        }
        doc["paths"] = hostile if keep_only_hostile else {**doc["paths"], **hostile}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(doc))

    page.route("**/run/echo/openapi.json", hostile_openapi)
    try:
        console.go("#/overview")
        page.wait_for_selector("main[data-page='overview']")
        console.go("#/playground/echo")
        page.wait_for_selector("main[data-page='playground'] select[name='endpoint']")
        options = page.locator("select[name='endpoint'] option").all_inner_texts()
        assert options and not any("evil" in text for text in options), options
        alert = page.locator("main .error:not([hidden])").first
        for path in HOSTILE_PATHS:
            sync_api.expect(alert).to_contain_text(json.dumps(path))
        page.get_by_label("Endpoint").select_option("predict")  # the document's good endpoints still work
        page.get_by_label("text", exact=True).fill("safe")
        page.get_by_role("button", name="Send").click()
        sync_api.expect(page.locator("pre.output")).to_contain_text('"output": "echo: safe"')

        keep_only_hostile = True
        console.go("#/overview")
        page.wait_for_selector("main[data-page='overview']")
        console.go("#/playground/echo")
        sync_api.expect(page.locator("main .error:not([hidden])").first).to_contain_text(catalog("en")["playground.no_endpoints"])
        assert page.locator("select[name='endpoint']").count() == 0
    finally:
        page.unroute("**/run/echo/openapi.json")
    leaked = [
        url for url in sent if "/run/echo/" not in url and ("evil" in url or "/api/v1/tokens" in url or "%2e" in url.lower())
    ]
    assert not leaked, leaked


@pytest.mark.slow
@browser_tests
def test_the_api_docs_page_runs_under_its_content_security_policy(console: Console, platform: RunningPlatform) -> None:
    page = console.page
    page.goto(f"{platform.url}/api/v1/docs")
    sync_api.expect(page.locator("#swagger-ui .info .title")).to_contain_text("Fermion platform")
    sync_api.expect(page.locator("#swagger-ui .opblock").first).to_be_visible()
    console.open()  # back to the console for the tests after this one


@pytest.mark.slow
@browser_tests
def test_the_call_shows_in_the_metrics(console: Console) -> None:
    page = console.page
    console.go("#/deployments/echo")
    page.wait_for_selector("main[data-page='deployments']")

    def counted() -> bool:
        peak = (
            page.locator("figure[data-chart='rps'] svg").get_attribute("data-peak")
            if page.locator("figure[data-chart='rps'] svg").count()
            else None
        )
        return peak is not None and float(peak) > 0

    wait_until(counted, 45, "the call showing in the requests chart")
    sync_api.expect(page.locator("pre.logs")).to_contain_text("[", timeout=15_000)  # log lines, with their replica id
    console.shot("deployment")
    console.go("#/overview")
    cell = page.locator("tr[data-deployment='echo'] td.rps")
    sync_api.expect(cell).not_to_have_text(catalog("en")["common.none"])
    assert float(cell.inner_text()) > 0
    sync_api.expect(page.locator("tr[data-deployment='echo'] .badge")).to_have_text("ready")
    console.shot("overview")


@pytest.mark.slow
@browser_tests
def test_scale_to_two(console: Console) -> None:
    page = console.page
    console.go("#/deployments/echo")
    page.wait_for_selector("main[data-page='deployments']")
    sync_api.expect(page.get_by_label("Minimum replicas")).to_have_value("1")
    page.get_by_label("Minimum replicas").fill("2")
    page.get_by_label("Maximum replicas").fill("2")
    page.get_by_role("button", name="Apply scale").click()
    sync_api.expect(page.locator(".summary .replicas")).to_have_text("2/2", timeout=90_000)
    sync_api.expect(page.locator(".replicas-table tbody tr")).to_have_count(2)


@pytest.mark.slow
@browser_tests
def test_update_roll_back_and_delete(console: Console, platform: RunningPlatform) -> None:
    page = console.page
    texts = catalog("en")
    with platform.api() as api:
        revision = lambda: api.get("/api/v1/deployments/echo").json()["revision"]  # noqa: E731
        answer = lambda: api.post("/run/echo/predict", json={"text": "hi"}).json()  # noqa: E731
        console.go("#/deployments/echo")
        page.wait_for_selector("main[data-page='deployments']")
        # A new source rolls out as revision 2; the gateway then answers with it.
        page.get_by_label(texts["deployment.source"], exact=True).fill("tests/apps/echo_v2.py")
        page.get_by_role("button", name=texts["deployment.update_submit"]).click()
        wait_until(lambda: revision() == 2 and answer() == {"output": "echo v2: hi"}, 120, "revision 2 to serve")
        # Roll back to revision 1 from the revisions table, through the confirmation dialog: revision 3.
        page.get_by_role("button", name=texts["revision.rollback_to"].replace("{n}", "1")).click()
        page.locator("#confirm-ok").click()
        wait_until(lambda: revision() == 3 and answer() == {"output": "echo: hi"}, 120, "the rollback to serve")
        # Delete a second deployment; cancelling the dialog first keeps it.
        assert api.post("/api/v1/deployments", json={"name": "spare", "source": ECHO, "public": True}).status_code == 201
        console.go("#/deployments/spare")
        page.wait_for_selector("main[data-page='deployments']")
        page.get_by_role("button", name=texts["deployment.delete"]).click()
        page.get_by_role("button", name=texts["common.cancel"]).click()
        assert api.get("/api/v1/deployments/spare").status_code == 200
        page.get_by_role("button", name=texts["deployment.delete"]).click()
        page.locator("#confirm-ok").click()
        page.wait_for_selector("main[data-page='overview']")
        wait_until(lambda: api.get("/api/v1/deployments/spare").status_code == 404, 60, "spare to be deleted")


@pytest.mark.slow
@browser_tests
def test_switch_languages(console: Console) -> None:
    page = console.page
    console.go("#/overview")
    page.wait_for_selector("main[data-page='overview']")
    for lang in ("zh-CN", "es", "en"):
        page.locator("#lang").select_option(lang)
        texts = catalog(lang)
        sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(texts["overview.title"])
        sync_api.expect(page.get_by_role("link", name=texts["nav.tokens"])).to_be_visible()
        sync_api.expect(page.locator("tr[data-deployment='echo'] .badge")).to_have_text(texts["status.ready"])
        assert page.evaluate("document.documentElement.lang") == lang
        assert page.evaluate("localStorage.getItem('fermion.lang')") == lang
    # Remembered across a reload.
    page.get_by_label(catalog("en")["app.language"]).select_option("es")
    page.reload()
    page.wait_for_selector("main[data-page='overview']")
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(catalog("es")["overview.title"])
    page.get_by_label(catalog("es")["app.language"]).select_option("en")
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text(catalog("en")["overview.title"])


@pytest.mark.slow
@browser_tests
def test_api_errors_and_events_are_shown_in_the_pages_language(console: Console) -> None:
    """The API's error code becomes a headline in the page's language, its message (names, values) follows; event kinds
    are translated too."""
    page = console.page
    console.go("#/overview")
    page.wait_for_selector("main[data-page='overview']")
    for lang in ("es", "zh-CN"):
        texts = catalog(lang)
        page.locator("#lang").select_option(lang)
        console.go("#/new")
        page.wait_for_selector("main[data-page='new']")
        page.get_by_label(texts["new.source"], exact=True).fill("/nonexistent/service.py")
        page.get_by_label(texts["new.name"], exact=True).fill("broken")
        page.get_by_role("button", name=texts["new.submit"], exact=True).click()
        alert = page.locator("main .error:not([hidden])")
        headline = texts["error.detail"].replace("{title}", texts["error.code.invalid"]).split("{detail}")[0]
        sync_api.expect(alert).to_contain_text(headline)
        sync_api.expect(alert).to_contain_text("fermion up --code-from")  # the server's detail is kept
        console.go("#/deployments/echo")
        created = page.locator("ol.events strong[title='Created']")
        sync_api.expect(created.first).to_have_text(texts["event.Created"])
    page.locator("#lang").select_option("en")


@pytest.mark.slow
@browser_tests
def test_tokens_and_the_audit_log(console: Console, platform: RunningPlatform) -> None:
    page = console.page
    console.go("#/tokens")
    page.wait_for_selector("main[data-page='tokens']")
    page.get_by_label("Name", exact=True).fill("my-app")
    page.get_by_label("Scope", exact=True).select_option("invoke")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("code.secret")
    sync_api.expect(secret).to_contain_text("fmn_")
    token = secret.inner_text().strip()
    sync_api.expect(page.locator("tr[data-token='my-app']")).to_contain_text("invoke")
    with platform.api(token) as api:  # the token shown works, with the scope asked for
        assert api.get("/api/v1/whoami").json()["scopes"] == ["invoke"]
    console.shot("tokens")
    console.go("#/audit")
    page.wait_for_selector("main[data-page='audit']")
    sync_api.expect(page.locator("main tbody")).to_contain_text("my-app")
    sync_api.expect(page.locator("main tbody")).to_contain_text("echo")
    console.shot("audit")


@pytest.mark.slow
@browser_tests
def test_revoking_your_own_token_signs_you_out(console: Console, platform: RunningPlatform) -> None:
    with platform.api() as api:
        made = api.post("/api/v1/tokens", json={"name": "admin-2", "scopes": ["admin"]})
        assert made.status_code == 201, made.text
    page = console.page
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("main[data-page='signin']")
    assert page.evaluate("sessionStorage.getItem('fermion.token')") is None
    console.sign_in(made.json()["token"])
    sync_api.expect(page.locator("#who")).to_contain_text("admin-2")
    console.go("#/tokens")
    page.wait_for_selector("main[data-page='tokens']")
    page.get_by_role("button", name="Revoke admin-2").click()
    dialog = page.locator("dialog#confirm")
    sync_api.expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Revoke").click()
    page.wait_for_selector("main[data-page='signin']")
    sync_api.expect(page.get_by_role("alert")).to_have_text(catalog("en")["signin.expired"])
    console.sign_in(platform.token)  # the first admin token still works


@pytest.mark.slow
@browser_tests
def test_an_invoke_token_sees_the_deployments_and_is_refused_nothing(browser: Any, platform: RunningPlatform) -> None:
    with platform.api() as api:
        made = api.post("/api/v1/tokens", json={"name": "caller", "scopes": ["invoke"]}).json()["token"]
        assert api.post("/api/v1/deployments", json={"name": "quiet", "source": ECHO, "min_replicas": 0}).status_code == 201
        tab = Console(browser, platform, WIDE)
        refused: list[str] = []
        (page := tab.page).on("response", lambda answer: refused.append(answer.url) if answer.status in (401, 403) else None)
        try:
            tab.open()
            tab.sign_in(made)
            sync_api.expect(page.locator("tr[data-deployment='quiet']")).to_be_visible()
            for hidden in ("Data", "Train", "Models", "New deployment", "Tokens"):
                sync_api.expect(page.get_by_role("link", name=hidden, exact=True)).to_be_hidden()
            tab.go("#/data")  # a page it may not read: the overview instead, no /datasets call (see `refused`)
            page.wait_for_selector("main[data-page='overview']")
            tab.go("#/deployments/quiet")
            sync_api.expect(page.locator("main dl.summary")).to_contain_text("echo.py")
            page.wait_for_timeout(3500)  # a refresh or two: still nothing refused, and no events or replicas shown
            assert refused == [] and tab.errors == [] and page.locator("main ol.events, main .replicas-table").count() == 0
        finally:
            tab.close()
            api.delete("/api/v1/deployments/quiet")


@pytest.mark.slow
@browser_tests
def test_a_phone_sized_screen(browser: Any, platform: RunningPlatform) -> None:
    tab = Console(browser, platform, PHONE, locale="zh-CN")
    try:
        tab.open()
        tab.page.wait_for_selector("main[data-page='signin']")
        assert tab.page.evaluate("document.documentElement.lang") == "zh-CN"  # the default from the browser's language
        tab.page.get_by_label(catalog("zh-CN")["signin.token"], exact=True).fill(platform.token)
        tab.page.get_by_role("button", name=catalog("zh-CN")["signin.submit"], exact=True).click()
        tab.page.wait_for_selector("main[data-page='overview']")
        sync_api.expect(tab.page.locator("tr[data-deployment='echo']")).to_be_visible()
        for route in ("#/overview", "#/deployments/echo", "#/playground/echo", "#/new", "#/tokens"):
            tab.go(route)
            tab.page.wait_for_selector(f"main[data-page='{route.split('/')[1]}']")
            tab.page.wait_for_timeout(500)
            width = tab.page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= PHONE["width"], f"{route}: the page scrolls sideways ({width} px)"
        tab.go("#/overview")
        tab.page.wait_for_selector("main[data-page='overview']")
        tab.shot("overview-phone", docs=False)
        assert not tab.errors, tab.errors
    finally:
        tab.close()
