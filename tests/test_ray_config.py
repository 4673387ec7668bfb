"""The Ray backend's pure parts: resources, the Serve application config, addresses, the route prefix.

These run without a Ray cluster; tests/test_platform_ray.py runs the backend on a real one.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from support import serve_asgi

from fermion import Service, endpoint
from fermion.platform.backends.ray import RayUnavailable, _failure_reason, dashboard_url
from fermion.platform.backends.ray_config import IMPORT_PATH, application, autoscaling_config
from fermion.platform.errors import Invalid
from fermion.platform.resources import Resources, check_resources
from fermion.platform.store.records import check_options
from fermion.serving.config import ServeConfig
from fermion.serving.on_ray import UnderPrefix, ongoing_limit


def test_resources_take_fractions_and_sizes():
    assert check_resources({"cpus": 0.5, "gpus": 1, "memory": "2GiB"}) == {"cpus": 0.5, "gpus": 1.0, "memory": 2 * 2**30}
    resources = Resources.from_options({"resources": {"cpus": 2.5, "memory": 2**30}})
    assert resources.actor_options() == {"num_cpus": 2.5, "memory": 2**30}
    assert resources.compute_threads() == 2
    assert Resources.from_options({}).actor_options() == {"num_cpus": 1.0}  # Ray Serve's own default: one CPU


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"cpus": -1}, "cpus must be a number ≥ 0"),
        ({"cpus": 0}, "cpus must be more than 0"),
        ({"gpus": "one"}, "gpus must be a number"),
        ({"memory": "lots"}, "memory must be bytes or a size like 512MiB"),
        ({"memory": 0}, "memory must be a positive number of bytes"),
        ({"cpu": 1}, "unknown resource(s) cpu: use cpus, gpus and memory"),
        ([1, 2], "resources must be a mapping"),
    ],
)
def test_bad_resources_say_which_and_how(raw, says):
    with pytest.raises(Invalid) as caught:
        check_options({"resources": raw})
    assert says in str(caught.value)


def test_an_application_config_carries_the_source_scaling_resources_and_env(monkeypatch):
    monkeypatch.setenv("FERMION_HOME", "/data/fermion")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME"):  # passed on when set: not here
        monkeypatch.delenv(name, raising=False)
    from fermion.platform.backends.ray_config import passed_env

    sealed = {"key_file": "/data/fermion/ray/keys/fermion-echo-3.key", "token": "gAAAA..."}
    app = application(
        "fermion-echo-3",
        "py:/srv/echo.py:Echo",
        {"task": "fill-mask", "resources": {"cpus": 0.5}},
        route_prefix="/fermion-echo-3",
        env=passed_env(),
        num_replicas=2,
        sealed_env=sealed,
        grace=10,
    )
    assert app["import_path"] == IMPORT_PATH
    assert app["args"] == {
        "source": "py:/srv/echo.py:Echo",
        "options": {"task": "fill-mask"},  # the platform's own options never reach the source
        "config": {"compute_threads": 1, "graceful_timeout": 10},
        "sealed_env": sealed,  # the deployment's own env: only sealed, never in runtime_env
    }
    assert app["runtime_env"] == {"env_vars": {"FERMION_HOME": "/data/fermion"}}
    assert app["deployments"] == [
        {"name": "replica", "ray_actor_options": {"num_cpus": 0.5}, "num_replicas": 2, "graceful_shutdown_timeout_s": 10}
    ]


def test_fixed_counts_are_not_autoscaled():
    assert autoscaling_config(2, 2, 2.0) is None
    assert autoscaling_config(0, 3, 4.0) == {"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 4.0}


def test_dashboard_addresses():
    assert dashboard_url("127.0.0.1:8265") == "http://127.0.0.1:8265"
    assert dashboard_url("https://ray.example.com/") == "https://ray.example.com"
    with pytest.raises(RayUnavailable, match="Ray Client address; give the dashboard's instead"):
        dashboard_url("ray://head:10001")


def test_a_missing_fermion_on_the_cluster_is_named():
    message = "Traceback (most recent call last):\n  File ...\nModuleNotFoundError: No module named 'fermion'"
    assert _failure_reason(message) == "the cluster's nodes cannot import fermion: pip install fermion on them (or in the image)"
    assert _failure_reason("...\nRuntimeError: setup() failed: boom") == "RuntimeError: setup() failed: boom"


class Limits(Service):
    @endpoint(max_concurrency=4, max_queue=10)
    def small(self, x: int) -> int:
        return x

    @endpoint
    async def default_async(self, x: int) -> int:
        return x

    @endpoint(max_batch_size=16, max_wait_ms=5)
    def batched(self, x: list[int]) -> list[int]:
        return x


def test_serve_may_hand_a_replica_what_its_endpoints_can_hold():
    config = ServeConfig(max_queue=100)
    # 4 running + 10 queued; 256 async + 100 queued; one batch of 16 + 100 queued
    assert ongoing_limit(Limits, config) == 14 + 356 + 116


def test_the_route_prefix_is_taken_off_the_path():
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["path"], scope["root_path"]))

    wrapped = UnderPrefix(app)
    asyncio.run(wrapped({"type": "http", "path": "/fermion-echo-1/predict", "root_path": "/fermion-echo-1"}, None, None))
    asyncio.run(wrapped({"type": "http", "path": "/fermion-echo-1", "root_path": "/fermion-echo-1"}, None, None))
    asyncio.run(wrapped({"type": "http", "path": "/predict", "root_path": ""}, None, None))
    assert seen == [("/predict", ""), ("/", ""), ("/predict", "")]


def test_the_gateway_forwards_under_a_replica_url_with_a_path():
    from fermion.platform.gateway.upstream import UpstreamPool

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    async def call(base: str) -> str:
        pool = UpstreamPool()
        response = await pool.request(base, "POST", "/predict?x=1", [], b"{}")
        body = b"".join([chunk async for chunk in response.body])
        await pool.aclose()
        return body.decode()

    with serve_asgi(app) as url:
        assert asyncio.run(call(url + "/fermion-echo-1")) == "/fermion-echo-1/predict"
        assert asyncio.run(call(url)) == "/predict"


def test_a_replica_must_fit_on_one_node_with_everything_it_asks_for(monkeypatch):
    from fermion.platform.backends.ray import RayBackend

    backend = RayBackend("127.0.0.1:1")  # never contacted: the nodes are given below
    nodes = [{"CPU": 8.0, "memory": 16 * 2**30}, {"CPU": 2.0, "GPU": 1.0, "memory": 8 * 2**30}]
    monkeypatch.setattr(backend, "node_resources", lambda: nodes)
    backend.check_resources({"resources": {"cpus": 2, "gpus": 1}})  # the second node
    with pytest.raises(Invalid, match="needs 2 GPUs: its largest node has 1 GPU"):
        backend.check_resources({"resources": {"gpus": 2}})
    with pytest.raises(Invalid, match="needs 4 CPUs, 1 GPU: no node has all of them at once"):
        backend.check_resources({"resources": {"cpus": 4, "gpus": 1}})
    backend.close()


def test_a_deployments_env_is_sealed_with_a_key_file_of_its_own(tmp_path, monkeypatch):
    import json
    import stat

    from fermion.platform.backends.ray_env_keys import EnvKeys
    from fermion.replica.sealed_env import SealedEnvError, exposed, open_sealed

    keys = EnvKeys(tmp_path / "keys")
    sealed = keys.seal("fermion-echo-1", {"SECRET": "s3cr3t"})
    assert "s3cr3t" not in json.dumps(sealed)
    key_file = tmp_path / "keys" / "fermion-echo-1.key"
    assert sealed["key_file"] == str(key_file) and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert open_sealed(sealed) == {"SECRET": "s3cr3t"}
    monkeypatch.delenv("SECRET", raising=False)
    with exposed(sealed):
        assert os.environ["SECRET"] == "s3cr3t"
    assert "SECRET" not in os.environ  # a builder's worker may build another application next
    keys.forget("fermion-echo-1")
    with pytest.raises(SealedEnvError, match="give `fermion up --ray-secrets-dir` a folder every node mounts"):
        open_sealed(sealed)
    keys.seal("fermion-echo-1", {"OTHER": "x"})  # a new key in the same file: the old seal opens no more
    with pytest.raises(SealedEnvError, match="does not open this deployment's env"):
        open_sealed(sealed)


def test_the_backend_seals_once_so_every_put_sends_the_same_config(tmp_path):
    import json

    from fermion.platform.backends.base import ReplicaHandle, ReplicaSpec
    from fermion.platform.backends.ray import RayBackend, _App

    backend = RayBackend("127.0.0.1:1", tmp_path)  # never contacted: only the config is made
    spec = ReplicaSpec("echo-1", "echo", 1, "py:/srv/echo.py:Echo", {}, {"SECRET": "s3cr3t"})
    app = _App("fermion-echo-1", spec, slots=[ReplicaHandle("echo-1", "ray", "echo", 1, {})])
    first, again = backend._config(app), backend._config(app)
    assert first == again  # a new Fernet token on each PUT would make Serve redeploy the application
    assert "s3cr3t" not in json.dumps(first) and "SECRET" not in json.dumps(first.get("runtime_env", {}))
    app.spec = ReplicaSpec("echo-1", "echo", 1, "py:/srv/echo.py:Echo", {}, {"SECRET": "changed"})
    assert backend._config(app)["args"]["sealed_env"] != first["args"]["sealed_env"]
    backend.close()


def test_a_clusters_token_is_found_where_rays_cli_finds_it(tmp_path, monkeypatch):
    from fermion.platform.backends.ray_auth import head_token, token_from_environment

    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert token_from_environment() is None  # a cluster without token auth needs none
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert token_from_environment() == "from-home"
    (tmp_path / "token").write_text("from-file")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert token_from_environment() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-variable")
    assert token_from_environment() == "from-variable"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read RAY_AUTH_TOKEN_PATH="):
        token_from_environment()
    token = head_token(tmp_path / "head")
    assert len(token) == 64 and head_token(tmp_path / "head") == token  # made once, then kept
