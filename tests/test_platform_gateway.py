"""The gateway over real replicas: routing, retries, access, streams, cold starts, metrics and the client through it."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, free_port, running_servers
from support import serve_asgi as serve

from fermion import Client
from fermion.platform.gateway.admission import ADMITTED, Admission
from fermion.platform.gateway.metrics import METRICS, GatewayMetrics
from fermion.platform.gateway.proxy import Gateway
from fermion.platform.gateway.routes import RouteTable

APP = ROOT / "tests" / "apps" / "behaviour.py"
DASHBOARD = ROOT / "deploy" / "grafana" / "fermion-dashboard.json"
TOKEN = "fmn_good"


async def admit(name: str, public: bool, token: str | None) -> Admission:
    if public:
        return ADMITTED
    if token is None:
        return Admission((401, f"deployment {name!r} is private: send a token (Authorization: Bearer ...)"))
    if token != TOKEN:
        return Admission((403, f"this token may not call {name!r}"))
    return ADMITTED


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with running_servers({"a": (str(APP),), "b": (str(APP),)}, tmp_dir=tmp_path_factory.mktemp("gw")) as servers:
        yield [servers["a"].url, servers["b"].url]


@dataclass
class Running:
    url: str
    table: RouteTable
    app: Gateway

    def __iter__(self) -> Iterator[Any]:  # `url, table = gateway`
        return iter((self.url, self.table))


@pytest.fixture(scope="module")
def gateway(replicas: list[str]) -> Iterator[Running]:
    table = RouteTable()
    table.set("echo", replicas, public=True)
    table.set("secret", replicas[:1], public=False)
    table.set("empty", [], public=True)
    app = Gateway(table, admit)
    with serve(app) as url:
        yield Running(url, table, app)


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.02)


def test_requests_reach_every_ready_replica(gateway):
    url, _ = gateway
    with httpx.Client() as http:
        pids = {http.get(url + "/run/echo/whoami").json() for _ in range(10)}
        assert len(pids) == 2
        assert http.post(url + "/run/echo/predict", json={"text": "ab", "times": 2}).json() == {"output": "abab"}


def test_errors_from_replicas_pass_through_unchanged(gateway):
    url, _ = gateway
    answer = httpx.post(url + "/run/echo/predict", json={})
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "text"


def test_an_unknown_deployment_names_none_and_says_how_to_find_them(gateway):
    url, _ = gateway
    answer = httpx.get(url + "/run/nope/whoami")
    assert answer.status_code == 404 and answer.headers["www-authenticate"].startswith("Bearer")
    message = answer.json()["message"]
    assert "fermion ls" in message and not any(f"'{name}'" in message for name in ("echo", "empty", "secret"))


def test_private_deployments_need_a_token(gateway):
    url, _ = gateway
    missing = httpx.get(url + "/run/secret/whoami")  # without a token, as if there were no such deployment
    unknown = httpx.get(url + "/run/terces/whoami")
    assert (missing.status_code, missing.headers["www-authenticate"]) == (404, unknown.headers["www-authenticate"])
    assert missing.json()["message"] == unknown.json()["message"].replace("'terces'", "'secret'")
    wrong = httpx.get(url + "/run/secret/whoami", headers={"authorization": "Bearer fmn_bad"})
    assert wrong.status_code == 403
    right = httpx.get(url + "/run/secret/whoami", headers={"authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200


def test_an_unreachable_replica_is_skipped_before_anything_is_sent(gateway, replicas):
    url, table = gateway
    dead = f"http://127.0.0.1:{free_port()}"
    table.set("flaky", [dead, replicas[0]], public=True)
    assert all(httpx.get(url + "/run/flaky/whoami").status_code == 200 for _ in range(6))
    table.set("gone", [dead], public=True)
    assert httpx.get(url + "/run/gone/whoami").status_code == 502


async def _shared_proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Stands in for Ray Serve's proxy: `/route/lost` is its bare 500 for a replica that died under a call."""
    if scope["type"] != "http":
        return
    lost = scope["path"] == "/route/lost"
    kind, body = (b"text/plain; charset=utf-8", b"Internal Server Error") if lost else (b"application/json", b'{"e": 1}')
    await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


def test_a_replica_lost_behind_ray_serves_proxy_is_a_502_that_says_so_and_is_not_run_again(gateway):
    url, table = gateway
    calls = []

    async def counting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await _shared_proxy(scope, receive, send)

    with serve(counting) as proxy:
        table.set("onray", [proxy + "/route"], public=True)
        lost = httpx.post(url + "/run/onray/lost", json={})
        assert lost.status_code == 502 and "died before it answered" in lost.json()["message"]
        assert calls == ["/route/lost"]  # once: it may have run
        own = httpx.post(url + "/run/onray/error", json={})  # the replica's own error passes through unchanged
        assert own.status_code == 500 and own.json() == {"e": 1}


def test_no_ready_replica_is_503_with_retry_after(gateway):
    url, _ = gateway
    answer = httpx.get(url + "/run/empty/whoami")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


def test_streams_pass_through_as_they_come(gateway):
    url, _ = gateway
    with httpx.stream("POST", url + "/run/echo/count", json={"n": 3}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in answer.iter_lines() if line]
    assert lines == ["data: 0", "data: 1", "data: 2", "event: end", "data: {}"]


def test_the_python_client_and_docs_work_through_the_gateway(gateway):
    url, _ = gateway
    with Client(url + "/run/echo") as client:
        assert client.predict(text="hi") == {"output": "hi"}
        assert list(client.count(n=2)) == [0, 1]
    docs = httpx.get(url + "/run/echo/docs").text
    assert 'data-openapi-url="/run/echo/openapi.json"' in docs and 'src="/run/echo/docs/init.js"' in docs


def test_a_client_leaving_a_stream_stops_it_on_the_replica(gateway):
    url, _ = gateway
    with httpx.Client() as http:
        with http.stream(
            "POST", url + "/run/secret/ticker", json={"tag": "gw-gone"}, headers={"authorization": f"Bearer {TOKEN}"}
        ) as answer:
            lines = answer.iter_lines()
            assert next(lines) == "data: 0"

        def calls() -> int:
            params, headers = {"tag": "gw-gone"}, {"authorization": f"Bearer {TOKEN}"}
            return http.get(url + "/run/secret/calls_of", params=params, headers=headers).json()

        deadline = time.monotonic() + 10
        before = calls()
        while time.monotonic() < deadline:  # the replica notices within a few ticks
            time.sleep(0.2)
            after = calls()
            if after == before:
                break
            before = after
        time.sleep(0.3)  # the ticker yields every 10 ms: a running one would have moved on
        assert calls() == before


# Scale to zero: requests wait for the first replica.


def _in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:  # handed to the test's thread
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_cold_start_waits_for_the_first_replica(gateway, replicas):
    url, table = gateway
    table.set("cold", [], public=True, cold_start=True)
    route = table.get("cold")
    thread, result = _in_thread(lambda: httpx.post(url + "/run/cold/predict", json={"text": "hi"}, timeout=60))
    eventually(lambda: route.waiting == 1)
    assert route.load() == 1  # what the autoscaler sees
    time.sleep(0.2)
    assert thread.is_alive()
    table.set("cold", replicas[:1], public=True, cold_start=True)  # as the reconciler would, from its thread
    thread.join(30)
    assert result[0].status_code == 200 and result[0].json() == {"output": "hi"}
    assert route.waiting == 0
    assert gateway.app.metrics.cold_starts["cold"] == 1


def test_a_cold_start_that_takes_too_long_is_503_with_retry_after(gateway):
    url, table = gateway
    table.set("never", [], public=True, cold_start=True)
    gateway.app.cold_start_timeout = 0.3
    try:
        answer = httpx.get(url + "/run/never/whoami", timeout=30)
    finally:
        gateway.app.cold_start_timeout = 120.0
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert "scaled to zero and no replica started within 0.3 s" in answer.json()["message"]
    assert table.get("never").waiting == 0


def test_a_client_leaving_during_a_cold_start_stops_the_wait(gateway):
    url, table = gateway
    table.set("abandoned", [], public=True, cold_start=True)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url + "/run/abandoned/whoami", timeout=0.5)
    eventually(lambda: table.get("abandoned").waiting == 0)
    eventually(lambda: gateway.app.metrics.requests.get(("abandoned", 499)) == 1)


def test_a_deployment_deleted_during_a_cold_start_is_404(gateway):
    url, table = gateway
    table.set("doomed", [], public=True, cold_start=True)
    thread, result = _in_thread(lambda: httpx.get(url + "/run/doomed/whoami", timeout=30))
    eventually(lambda: table.get("doomed") is not None and table.get("doomed").waiting == 1)
    table.remove("doomed")
    thread.join(30)
    assert result[0].status_code == 404 and "deleted" in result[0].json()["message"]


# Metrics and the dashboard.


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    found = [
        s.value for s in families[family].samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (sample, labels, found)
    return found[0]


def test_metrics_count_what_went_through_a_real_gateway(replicas):
    table = RouteTable()
    table.set("echo", replicas, public=True)
    table.set("secret", replicas[:1], public=False)
    table.set("empty", [], public=True)
    app = Gateway(table, admit)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(3):
            assert http.get("/run/echo/whoami").status_code == 200
        assert http.post("/run/echo/predict", json={}).status_code == 422
        assert http.get("/run/nope/whoami").status_code == 404
        assert http.get("/elsewhere").status_code == 404
        assert http.get("/run/secret/whoami").status_code == 404  # no token: as an unknown name, counted as one
        assert http.get("/run/secret/whoami", headers={"authorization": "Bearer fmn_bad"}).status_code == 403
        assert http.get("/run/secret/whoami", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert http.get("/run/empty/whoami").status_code == 503
        with http.stream("POST", "/run/echo/count", json={"n": 2}) as stream:
            assert len(list(stream.iter_lines())) > 2
        eventually(lambda: sum(app.metrics.in_flight.values()) == 0)  # the gateway counts after the last byte is sent
        text = app.metrics.render({"echo": {"desired": 2, "ready": 2, "starting": 0, "crashes": 0}, "idle": {"ready": 0}})

    families = _families(text)
    total = "fermion_gateway_requests_total"
    assert families["fermion_gateway_requests"].type == "counter"  # the parser drops "_total" from the family
    assert _value(families, "fermion_gateway_requests", total, deployment="echo", code="200", **{"class": "2xx"}) == 4
    assert _value(families, "fermion_gateway_requests", total, deployment="echo", code="422", **{"class": "4xx"}) == 1
    assert _value(families, "fermion_gateway_requests", total, deployment="", code="404") == 3
    assert not [s for s in families["fermion_gateway_requests"].samples if s.labels.get("code") == "401"]
    assert _value(families, "fermion_gateway_requests", total, deployment="secret", code="403") == 1
    assert _value(families, "fermion_gateway_requests", total, deployment="secret", code="200") == 1
    assert _value(families, "fermion_gateway_requests", total, deployment="empty", code="503", **{"class": "5xx"}) == 1

    histogram = "fermion_gateway_request_duration_seconds"
    assert families[histogram].type == "histogram"
    assert _value(families, histogram, histogram + "_count", deployment="echo") == 5
    assert 0 < _value(families, histogram, histogram + "_sum", deployment="echo") < 30
    buckets = [s for s in families[histogram].samples if s.name.endswith("_bucket") and s.labels["deployment"] == "echo"]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf" and buckets[-1].value == 5
    assert all(a.value <= b.value for a, b in zip(buckets, buckets[1:], strict=False))

    assert _value(families, "fermion_gateway_in_flight", "fermion_gateway_in_flight", deployment="echo") == 0
    assert _value(families, "fermion_gateway_in_flight", "fermion_gateway_in_flight", deployment="idle") == 0
    replicas_family = "fermion_deployment_replicas"
    assert _value(families, replicas_family, replicas_family, deployment="echo", state="desired") == 2
    assert _value(families, replicas_family, replicas_family, deployment="echo", state="ready") == 2
    assert _value(families, replicas_family, replicas_family, deployment="idle", state="ready") == 0
    assert not [
        s for s in families[replicas_family].samples if s.labels["deployment"] == "idle" and s.labels["state"] == "desired"
    ]


def test_metrics_render_cleanly_with_nothing_counted_and_escape_labels():
    metrics = GatewayMetrics()
    assert set(_families(metrics.render({}))) == {name.removesuffix("_total") for name in METRICS}
    metrics.begin('we"ird\\name')
    metrics.end('we"ird\\name', 200, 0.002)
    families = _families(metrics.render({}))
    assert _value(families, "fermion_gateway_requests", "fermion_gateway_requests_total", deployment='we"ird\\name') == 1
    assert (
        _value(
            families,
            "fermion_gateway_request_duration_seconds",
            "fermion_gateway_request_duration_seconds_bucket",
            deployment='we"ird\\name',
            le="0.005",
        )
        == 1
    )


def _rendered_sample_names() -> set[str]:
    metrics = GatewayMetrics()
    metrics.begin("a")
    metrics.end("a", 500, 0.1)
    metrics.cold_start("a")
    text = metrics.render({"a": {"desired": 1, "ready": 1, "starting": 0}})
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_the_grafana_dashboard_is_valid_and_queries_only_metrics_the_gateway_renders():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36 and dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert "label_values(fermion_gateway_requests_total, deployment)" in json.dumps(variables["deployment"]["query"])

    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}" and panel["targets"], panel["title"]
    used = {name for expr in exprs for name in re.findall(r"\bfermion_[a-z_]+\b", expr)}
    rendered = _rendered_sample_names()
    assert used and used <= rendered, used - rendered
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({quantile}," in e and "fermion_gateway_request_duration_seconds_bucket" in e for e in exprs
        )
    assert any('class="5xx"' in e for e in exprs)
    replica_queries = [e for e in exprs if "fermion_deployment_replicas" in e]
    assert any('state="ready"' in e for e in replica_queries) and any('state="desired"' in e for e in replica_queries)


def test_the_pool_closes_idle_connections_to_retired_replicas(replicas):
    import asyncio

    from fermion.platform.gateway.upstream import UpstreamPool

    async def scenario() -> tuple[int, int, list[str]]:
        pool = UpstreamPool()
        for url in replicas:
            response = await pool.request(url, "GET", "/healthz", [], b"")
            async for _ in response.body:
                pass
        idle_before = sum(len(conns) for conns in pool._idle.values())
        closed = pool.prune({replicas[0]})  # replicas[1] was retired
        left = list(pool._idle)
        await pool.aclose()
        return idle_before, closed, left

    idle_before, closed, left = asyncio.run(scenario())
    assert idle_before == 2 and closed == 1 and left == [replicas[0]]


def test_haproxys_log_lines_are_read_as_deployment_status_and_seconds():
    from fermion.platform.gateway.haproxy_config import parse_log

    assert parse_log(b"echo 200 12\n") == ("echo", 200, 0.012)
    assert parse_log(b"<134>my-model 503 0") == ("my-model", 503, 0.0)  # a syslog header before it
    assert parse_log(b"<134>Dec  7 03:40:00 haproxy[1]: echo 404 7") == ("echo", 404, 0.007)
    for other in (b"", b"echo 200", b"echo 200 -1", b"Echo 200 5", b"echo 2000 5", b"- 200 5", b"haproxy started"):
        assert parse_log(other) is None, other
