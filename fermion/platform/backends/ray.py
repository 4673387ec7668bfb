# Long on purpose: one backend class speaking to one Ray dashboard; its helpers are the translations of its answers.
"""The Ray backend: each deployment revision is a Ray Serve application on a Ray cluster.

The reconciler still thinks in replicas: `start` and `stop` change the replica count of the
revision's Serve application, and each Fermion replica handle is one slot of that count. Serve
places the replicas on the cluster's nodes, restarts a replica whose actor dies, and drains the
ones it removes; the gateway routes to the application's route on Serve's HTTP proxy.

The cluster is driven through its dashboard's REST API (`PUT /api/serve/applications/`, a
declarative list of every application), so the control plane needs no Ray import and no driver
connection: it only needs the dashboard's address and, with Ray's token auth on, its token (sent
on every call). Applications that Fermion did not make are kept as they are in every PUT.
Deployments' env values never enter a config in clear: each application's env is sealed with a
key of its own (`ray_env_keys`), which only the replica's node reads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from fermion.platform.backends.base import ReplicaHandle, ReplicaSpec, ReplicaState, ReplicaStatus
from fermion.platform.backends.ray_auth import auth_headers
from fermion.platform.backends.ray_config import application, passed_env
from fermion.platform.backends.ray_env_keys import EnvKeys
from fermion.platform.errors import Invalid
from fermion.platform.resources import Resources
from fermion.replica.sealed_env import SEALED_ENV_ARG, SealedEnvError, open_sealed
from fermion.serving.on_ray import DEPLOYMENT_NAME

log = logging.getLogger("fermion.platform")

_APPS = "/api/serve/applications/"
#: One GET of the Serve status answers every probe of one reconciler tick.
_STATUS_TTL_S = 0.3
_FAILED = "DEPLOY_FAILED"
#: How long the last Serve status stands in while the dashboard does not answer.
_STALE_OK_S = 60.0
#: Hosts that mean "every interface" to Serve's proxy.
_ANY_HOST = ("0.0.0.0", "::", "")


class RayUnavailable(RuntimeError):
    """The cluster's dashboard cannot be reached (the message names the address and what was tried)."""


def dashboard_url(address: str) -> str:
    """'127.0.0.1:8265' or 'http://head:8265' → 'http://…:8265' (the dashboard, as `ray job submit` takes it)."""
    address = address.strip().rstrip("/")
    if not address:
        raise RayUnavailable("empty Ray address: give the dashboard's address, e.g. http://127.0.0.1:8265")
    if address.startswith("ray://"):
        raise RayUnavailable(
            f"{address} is a Ray Client address; give the dashboard's instead (port 8265 by default), e.g. http://head:8265"
        )
    return address if "://" in address else "http://" + address


@dataclass
class _App:
    """One Serve application: a revision of a deployment, and the replica slots Fermion gave it."""

    name: str
    spec: ReplicaSpec
    slots: list[ReplicaHandle] = field(default_factory=list)
    attempt: int = 0  # raised after each failed deploy: Serve deploys a changed config afresh
    adopted: bool = False  # found running after a restart: its env stays as deployed until a start brings the record's
    runtime_env: dict[str, Any] | None = None  # as deployed, for an adopted application
    sealed: dict[str, str] | None = None  # its env, sealed once: a new token each time would make Serve redeploy it
    sealed_for: dict[str, str] | None = None  # the env `sealed` holds


class RayBackend:
    """Replicas as Ray Serve replicas, driven through a Ray dashboard at `address`."""

    name = "ray"

    def __init__(
        self,
        address: str,
        data_dir: str | Path | None = None,
        *,
        http_port: int = 8000,
        prefix: str = "fermion",
        grace: float = 30.0,
        timeout: float = 30.0,
        token: str | None = None,
        serve_host: str | None = None,
        secrets_dir: str | Path | None = None,
    ) -> None:
        self.dashboard = dashboard_url(address)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.http_port = http_port
        # Where Serve's proxy listens when this backend is the one to start Serve: this machine only unless told.
        self.serve_host = serve_host or "127.0.0.1"
        self._serve_host_given = serve_host is not None
        keys = Path(secrets_dir) if secrets_dir is not None else (self.data_dir / "ray" / "keys" if self.data_dir else None)
        self.env_keys = EnvKeys(keys) if keys is not None else None
        self.prefix = prefix
        self.grace = grace
        self._client = httpx.Client(base_url=self.dashboard, timeout=timeout, headers=auth_headers(token))
        self._lock = threading.RLock()  # one change of the desired applications (and its PUT) at a time
        self._apps: dict[str, _App] = {}
        self._status: dict[str, Any] = {}
        self._status_at = 0.0  # 0: the cached status is out of date (after a PUT)
        self._fetched_at = 0.0  # when the dashboard last answered
        self._attempts: dict[str, int] = {}  # application → its next attempt, after failed deploys
        self._exited: dict[str, str] = {}  # replica id → why its slot was given up (a failed deploy)
        self._dead_logs: dict[str, tuple[str, str]] = {}  # replica id → (node, log file) of a replica that is gone

    # -- connection ------------------------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        """Check that the dashboard answers and has Serve's API; returns the cluster's Ray version info."""
        try:
            answer = self._client.get("/api/version", timeout=10.0)
        except httpx.HTTPError as exc:
            raise RayUnavailable(
                f"no Ray dashboard answered at {self.dashboard} (tried GET /api/version: {exc or type(exc).__name__}). "
                "Start a cluster with `ray start --head` (its dashboard listens on port 8265), or pass "
                "--ray-address http://HEAD:8265 — the dashboard's address, as `ray job submit` takes it"
            ) from None
        if answer.status_code in (401, 403):
            said = "refused the token it was given" if answer.status_code == 403 else "asks for Ray's auth token"
            raise RayUnavailable(
                f"the Ray dashboard at {self.dashboard} {said} (HTTP {answer.status_code}): give the cluster's token "
                "as `ray job submit` takes it: RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN, or ~/.ray/auth_token); "
                "`ray get-auth-token` on the head prints it"
            )
        if answer.status_code != 200:
            raise RayUnavailable(
                f"{self.dashboard} answered GET /api/version with HTTP {answer.status_code}: is it a Ray dashboard? "
                "--ray-address takes the dashboard's address (port 8265 by default)"
            )
        self._check_proxy_host()
        return answer.json()

    def _check_proxy_host(self) -> None:
        """Refuse a proxy the gateway cannot reach; warn about one that anyone can reach."""
        http_options = self._serve_status(fresh=True).get("http_options") or {}
        if http_options:  # Serve runs already: its proxy's host is the cluster's, and cannot change
            if self._serve_host_given and http_options.get("host") != self.serve_host:
                log.warning(
                    "ray: --ray-serve-host %s has no effect: Serve already runs on %s with its proxy on %s; the proxy's "
                    "host is the cluster's and changes only when Serve starts again (`serve shutdown`)",
                    self.serve_host,
                    self.dashboard,
                    http_options.get("host"),
                )
            if http_options.get("host") in _ANY_HOST:
                log.warning(
                    "ray: Serve's proxy on %s listens on every interface (port %s): its applications answer anyone "
                    "who reaches that port, without a Fermion token. Firewall it to the gateway's machine (docs/security.md)",
                    self.dashboard,
                    http_options.get("port"),
                )
            return
        if self.serve_host in ("127.0.0.1", "localhost", "::1") and not _is_local(self.dashboard):
            raise RayUnavailable(
                f"Serve's proxy would listen on 127.0.0.1 of the cluster at {self.dashboard}, which this machine cannot "
                "reach: pass --ray-serve-host with the head's private address (or 0.0.0.0) and keep that port "
                "closed to everyone but this gateway (docs/security.md)"
            )

    def close(self) -> None:
        self._client.close()

    # -- the Backend interface --------------------------------------------------------------------

    def app_name(self, deployment: str, revision: int) -> str:
        return f"{self.prefix}-{deployment}-{revision}"

    def start(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Add a replica slot to the revision's application (creating it) and send the new config."""
        name = self.app_name(spec.deployment, spec.revision)
        handle = ReplicaHandle(
            spec.replica_id, self.name, spec.deployment, spec.revision, {"app": name, "started_at": time.time()}
        )
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                app = self._apps[name] = _App(name, spec, attempt=self._attempts.get(name, 0))
            app.spec, app.runtime_env, app.adopted = spec, None, False  # the newest spec is the record's
            app.slots.append(handle)
            try:
                self._apply()
            except (RayUnavailable, Invalid):
                app.slots.remove(handle)  # not started: the reconciler tries again on a later tick
                if not app.slots:
                    del self._apps[name]
                raise
        return handle

    def stop(self, handle: ReplicaHandle, grace: float = 30.0, at_once: bool = False) -> None:
        """Give up the slot; Serve drains one replica of the application (all of it with the last slot)."""
        name = handle.data["app"]
        with self._lock:
            app = self._apps.get(name)
            if app is None or handle not in app.slots:
                return
            self._remember_log(handle)
            app.slots.remove(handle)
            if not app.slots:
                del self._apps[name]
            wanted = len(app.slots)
            self._apply()
            if not app.slots and self.env_keys is not None:
                self.env_keys.forget(name)
        deadline = time.monotonic() + grace + 10.0
        while time.monotonic() < deadline:
            replicas = self._replicas(self._serve_status(fresh=True), name)
            if replicas is None or len(replicas) <= wanted:
                return
            time.sleep(0.5)
        log.warning("ray: %s still runs more than %d replica(s) %g s after a stop", name, wanted, grace + 10.0)

    def status(self, handle: ReplicaHandle) -> ReplicaStatus:
        """READY for as many slots (oldest first) as Serve has RUNNING replicas; EXITED when the deploy failed."""
        if handle.replica_id in self._exited:
            return ReplicaStatus(ReplicaState.EXITED, detail=self._exited[handle.replica_id])
        name = handle.data["app"]
        with self._lock:
            app = self._apps.get(name)
            if app is None or handle not in app.slots:
                return ReplicaStatus(ReplicaState.EXITED, detail="its Serve application is gone")
            index = app.slots.index(handle)
        try:
            serve = self._serve_status()
        except RayUnavailable as exc:
            return ReplicaStatus(ReplicaState.STARTING, detail=str(exc))
        found = (serve.get("applications") or {}).get(name)
        if found is None:
            return ReplicaStatus(ReplicaState.STARTING, detail="Serve has not taken the application yet")
        deployment = (found.get("deployments") or {}).get(DEPLOYMENT_NAME) or {}
        if found.get("status") == _FAILED or deployment.get("status") == _FAILED:
            deployed = ((found.get("deployed_app_config") or {}).get("args") or {}).get("fermion") or {}
            if deployed.get("attempt", 0) == app.attempt:  # not an earlier attempt's failure, still shown
                return self._failed(name, found, deployment)
            return ReplicaStatus(ReplicaState.STARTING, detail="Serve is deploying it again")
        running = sorted(
            (r for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING"), key=lambda r: r.get("start_time_s", 0)
        )
        url = self._proxy_url(serve) + (found.get("route_prefix") or "/" + name)  # null while Serve deploys it
        if index < len(running):
            replica = running[index]
            handle.data.update(pid=replica.get("pid"), node=replica.get("node_ip"), actor=replica.get("actor_id"))
            return ReplicaStatus(
                ReplicaState.READY, url, detail=f"Serve replica {replica.get('replica_id')} on {replica.get('node_ip')}"
            )
        message = deployment.get("message") or found.get("message") or f"Serve: {found.get('status', 'DEPLOYING').lower()}"
        return ReplicaStatus(ReplicaState.STARTING, url, detail=_first_line(message))

    def list(self) -> list[ReplicaHandle]:
        """Adopt the applications this prefix made (after a control-plane restart): one handle per replica."""
        serve = self._serve_status(fresh=True)
        handles = []
        with self._lock:
            for name, found in (serve.get("applications") or {}).items():
                config = found.get("deployed_app_config") or {}
                args = config.get("args") or {}
                labels = args.get("fermion") or {}
                if labels.get("prefix") != self.prefix or found.get("status") == "DELETING":
                    continue
                deployment, revision = str(labels["deployment"]), int(labels["revision"])
                options = {**args.get("options", {}), **labels.get("platform_options", {})}
                spec = ReplicaSpec(f"{name}-adopted", deployment, revision, str(args["source"]), options)
                # The env it was deployed with (secrets included) stays until the next start brings the record's.
                sealed = args.get(SEALED_ENV_ARG)
                app = self._apps[name] = _App(
                    name,
                    spec,
                    attempt=int(labels.get("attempt", 0)),
                    adopted=True,
                    runtime_env=config.get("runtime_env"),
                    sealed=sealed,
                    sealed_for=_opened(sealed),
                )
                count = int((config.get("deployments") or [{}])[0].get("num_replicas", 1))
                for index in range(count):
                    handle = ReplicaHandle(f"{name}-{index}", self.name, deployment, revision, {"app": name, "started_at": None})
                    app.slots.append(handle)
                    handles.append(handle)
        return handles

    def logs(self, handle: ReplicaHandle, lines: int = 100) -> list[str]:
        """The Serve replica's log (through the dashboard's log API), or the failure Serve reported."""
        where = self._log_file(handle) or self._dead_logs.get(handle.replica_id)
        found = self._read_log(where, lines) if where is not None else []
        if handle.replica_id in self._exited:  # it never started: its replica's last words, then what Serve said
            found.append(self._exited[handle.replica_id])
        return found[-lines:]

    def _read_log(self, where: tuple[str, str], lines: int) -> list[str]:
        node, filename = where
        try:
            answer = self._client.get(
                "/api/v0/logs/file", params={"node_id": node, "filename": filename.lstrip("/"), "lines": lines}, timeout=10.0
            )
        except httpx.HTTPError:
            return []
        return answer.text.splitlines()[-lines:] if answer.status_code == 200 else []

    # -- checks --------------------------------------------------------------------------------

    def check_resources(self, options: dict[str, Any]) -> None:
        """Invalid when no node of the cluster has what one replica asks for (naming the resource)."""
        needs = Resources.from_options(options).needs()
        nodes = self.node_resources()
        if not nodes or any(all(node.get(key, 0.0) >= amount for key, amount in needs.items()) for node in nodes):
            return
        for resource, amount in needs.items():
            most = max(node.get(resource, 0.0) for node in nodes)
            if amount > most:
                shown = _amount(resource, amount)
                raise Invalid(
                    f"the Ray cluster at {self.dashboard} cannot place a replica that needs {shown}: "
                    f"its largest node has {_amount(resource, most)}. Ask for less (--{_flag(resource)}), "
                    "or add a node that has it"
                )
        wanted = ", ".join(_amount(key, amount) for key, amount in needs.items())
        raise Invalid(
            f"the Ray cluster at {self.dashboard} cannot place a replica that needs {wanted}: no node has all of them at once"
        )

    def node_resources(self) -> list[dict[str, float]]:
        """The total resources of each alive node ({"CPU": 4.0, "GPU": 1.0, "memory": bytes, ...})."""
        try:
            answer = self._client.get("/nodes", params={"view": "summary"}, timeout=10.0)
            summary = answer.json()["data"]["summary"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
        return [
            {key: float(value) for key, value in (node.get("raylet") or {}).get("resourcesTotal", {}).items()}
            for node in summary
            if (node.get("raylet") or {}).get("state") == "ALIVE"
        ]

    # -- Serve's side ------------------------------------------------------------------------------

    def _serve_status(self, fresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if not fresh and now - self._status_at < _STATUS_TTL_S:
            return self._status
        try:
            answer = self._client.get(_APPS)
            answer.raise_for_status()
            status = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            # Serve keeps serving while its dashboard restarts: a short outage must not take replicas off the
            # gateway, so the last answer stands in for a while (writes still fail, and are retried).
            if self._status and not fresh and now - self._fetched_at < _STALE_OK_S:
                return self._status
            raise RayUnavailable(f"the Ray dashboard at {self.dashboard} did not answer GET {_APPS}: {exc}") from None
        self._status, self._status_at = status, time.monotonic()
        self._fetched_at = self._status_at
        return status

    def _proxy_url(self, serve: dict[str, Any]) -> str:
        """Serve's HTTP proxy on the head node: the host it listens on, or the dashboard's for every interface."""
        http_options = serve.get("http_options") or {}
        port = http_options.get("port") or self.http_port
        host = http_options.get("host") or self.serve_host
        if host in _ANY_HOST:
            host = urlsplit(self.dashboard).hostname or "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def _replicas(self, serve: dict[str, Any], name: str) -> list[dict[str, Any]] | None:
        found = (serve.get("applications") or {}).get(name)
        if found is None:
            return None
        return list(((found.get("deployments") or {}).get(DEPLOYMENT_NAME) or {}).get("replicas") or [])

    def _config(self, app: _App) -> dict[str, Any]:
        spec = app.spec
        labels = {
            "prefix": self.prefix,
            "deployment": spec.deployment,
            "revision": spec.revision,
            "attempt": app.attempt,
            "platform_options": {k: v for k, v in spec.options.items() if k == "resources"},
        }
        if not app.adopted and spec.env != app.sealed_for:
            app.sealed, app.sealed_for = self._seal(app.name, spec.env), dict(spec.env)
        config = application(
            app.name,
            spec.source,
            spec.options,
            route_prefix="/" + app.name,
            env=passed_env(),
            num_replicas=len(app.slots),
            grace=self.grace,
            labels=labels,
            sealed_env=app.sealed,
        )
        if app.adopted:
            config.pop("runtime_env", None)
            if app.runtime_env is not None:
                config["runtime_env"] = app.runtime_env
        return config

    def _seal(self, name: str, env: dict[str, str]) -> dict[str, str] | None:
        if not env:
            return None
        if self.env_keys is None:
            raise Invalid("the Ray backend keeps the keys of deployments' env in its data dir: give it one (or secrets_dir)")
        return self.env_keys.seal(name, env)

    def _apply(self) -> None:
        """PUT every application: ours as `_apps` says, the others as they are deployed now."""
        current = self._serve_status(fresh=True)
        others = [
            found["deployed_app_config"]
            for name, found in (current.get("applications") or {}).items()
            if not name.startswith(self.prefix + "-") and found.get("deployed_app_config")
        ]
        body: dict[str, Any] = {"applications": others + [self._config(app) for app in self._apps.values()]}
        if current.get("http_options"):  # Serve runs: its proxy's options cannot change
            body["http_options"] = {"host": current["http_options"].get("host"), "port": current["http_options"].get("port")}
            if current.get("proxy_location"):
                body["proxy_location"] = current["proxy_location"]
        else:  # the first to start Serve sets its proxy's host and port for the whole cluster
            body["http_options"] = {"host": self.serve_host, "port": self.http_port}
            body["proxy_location"] = "HeadOnly"
        try:
            answer = self._client.put(_APPS, json=body)
        except httpx.HTTPError as exc:
            raise RayUnavailable(f"the Ray dashboard at {self.dashboard} did not take the Serve config: {exc}") from None
        if answer.status_code != 200:
            raise RayUnavailable(
                f"the Ray dashboard at {self.dashboard} refused the Serve config (HTTP {answer.status_code}): {answer.text[:500]}"
            )
        self._status_at = 0.0

    def _failed(self, name: str, found: dict[str, Any], deployment: dict[str, Any]) -> ReplicaStatus:
        """The deploy failed: give up every slot (the reconciler backs off and starts new ones)."""
        message = deployment.get("message") or found.get("message") or "the deploy failed"
        reason = _failure_reason(message)
        with self._lock:
            app = self._apps.get(name)
            if app is not None and app.slots:
                dead = (deployment.get("recent_dead_replicas") or [None])[-1]
                for slot in app.slots:
                    self._exited[slot.replica_id] = f"Serve could not start a replica: {reason}"
                    if dead:
                        self._dead_logs[slot.replica_id] = (dead.get("node_id"), dead.get("log_file_path"))
                # The failed application leaves the cluster; a later start makes it again, as a new attempt.
                self._attempts[name] = app.attempt + 1
                del self._apps[name]
                if self.env_keys is not None:
                    self.env_keys.forget(name)
                while len(self._exited) > 1000:  # bounded: a crash loop runs for as long as nobody fixes it
                    self._exited.pop(next(iter(self._exited)))
                try:
                    self._apply()
                except RayUnavailable:
                    log.warning("ray: could not remove the failed application %s yet", name)
        return ReplicaStatus(ReplicaState.EXITED, detail=reason)

    def _log_file(self, handle: ReplicaHandle) -> tuple[str, str] | None:
        try:
            replicas = self._replicas(self._serve_status(), handle.data["app"])
        except RayUnavailable:
            return None
        for replica in replicas or []:
            if replica.get("pid") is not None and replica.get("pid") == handle.data.get("pid"):
                return replica.get("node_id"), replica.get("log_file_path")
        return None

    def _remember_log(self, handle: ReplicaHandle) -> None:
        found = self._log_file(handle)
        if found is not None:
            self._dead_logs[handle.replica_id] = found
            if len(self._dead_logs) > 1000:  # bounded: a long-running control plane stops many replicas
                self._dead_logs.pop(next(iter(self._dead_logs)))


def _is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _opened(sealed: dict[str, str] | None) -> dict[str, str] | None:
    """The env an adopted application was deployed with, when its key is here to open it (else: reseal it)."""
    try:
        return open_sealed(sealed)
    except SealedEnvError:
        return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _failure_reason(message: str) -> str:
    """The line of Serve's message that says what went wrong (the exception, not the traceback)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line.split(":")[0] or line.startswith(("ModuleNotFoundError", "ImportError", "RuntimeError")):
            if "No module named 'fermion'" in line:
                return "the cluster's nodes cannot import fermion: pip install fermion on them (or in the image)"
            return line
    return lines[0] if lines else "the deploy failed"


def _amount(resource: str, value: float) -> str:
    if resource == "memory":
        return f"{value / 2**30:.1f} GiB of memory"
    return f"{value:g} {resource}" + ("s" if value != 1 else "")


def _flag(resource: str) -> str:
    return {"CPU": "cpus", "GPU": "gpus", "memory": "memory"}.get(resource, resource)
