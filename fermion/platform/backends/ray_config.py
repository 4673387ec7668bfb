"""Fermion deployments as Ray Serve application configs (no Ray import here).

One function writes the application config that both the Ray backend sends to a cluster's
dashboard and `fermion export kuberay` puts in a RayService's `serveConfigV2`, so the two never
drift apart. Per-deployment resources (`--cpus`, `--gpus`, `--memory`) live in the deployment's
options under "resources"; they become the Serve replica's `ray_actor_options`.

A deployment's own env (its secrets) never goes into `runtime_env`, which the dashboard shows:
the Ray backend passes it sealed (`fermion.replica.sealed_env`), and a KubeRay export references
a Kubernetes Secret from the pods instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fermion.platform.resources import Resources, source_options
from fermion.replica.sealed_env import SEALED_ENV_ARG
from fermion.serving.on_ray import DEPLOYMENT_NAME

#: What Ray imports to build an application: `fermion.replica.on_ray:build`.
IMPORT_PATH = "fermion.replica.on_ray:build"
#: Variables a replica needs to find what the control plane sees, passed on when they are set (none is secret).
PASSED_ENV = ("FERMION_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


def passed_env() -> dict[str, str]:
    """The variables that tell a replica where Fermion's data lives (plain in `runtime_env`: no secret)."""
    return {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}


def application(
    name: str,
    source: str,
    options: Mapping[str, Any],
    *,
    route_prefix: str,
    env: Mapping[str, str] | None = None,
    num_replicas: int | None = None,
    autoscaling: Mapping[str, Any] | None = None,
    grace: float = 30.0,
    max_ongoing_requests: int | None = None,
    labels: Mapping[str, Any] | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    sealed_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One entry of a Serve config's `applications`: Fermion's builder, the source, scaling and resources.

    `env` lands in `runtime_env` as it is, for anyone who reads the dashboard to see: only what
    `passed_env` gives belongs there. The deployment's own env comes `sealed_env`.
    """
    resources = Resources.from_options(options)
    args: dict[str, Any] = {"source": source, "options": source_options(options)}
    args["config"] = {"compute_threads": resources.compute_threads(), "graceful_timeout": grace}
    if sealed_env:
        args[SEALED_ENV_ARG] = dict(sealed_env)
    if labels:
        args["fermion"] = dict(labels)  # ignored by the builder; lets a control plane find its applications again
    deployment: dict[str, Any] = {"name": DEPLOYMENT_NAME, "ray_actor_options": resources.actor_options()}
    if autoscaling is not None:
        deployment["autoscaling_config"] = dict(autoscaling)
    else:
        deployment["num_replicas"] = 1 if num_replicas is None else num_replicas
    if max_ongoing_requests:
        deployment["max_ongoing_requests"] = max_ongoing_requests
    deployment["graceful_shutdown_timeout_s"] = grace
    env_vars = dict(env or {})
    full_runtime_env = {**(runtime_env or {})}
    if env_vars:
        full_runtime_env["env_vars"] = env_vars
    app: dict[str, Any] = {"name": name, "route_prefix": route_prefix, "import_path": IMPORT_PATH, "args": args}
    if full_runtime_env:
        app["runtime_env"] = full_runtime_env
    app["deployments"] = [deployment]
    return app


def autoscaling_config(min_replicas: int, max_replicas: int, target_in_flight: float) -> dict[str, Any] | None:
    """Serve's autoscaling for a Fermion deployment (None when min = max: a fixed count)."""
    if min_replicas == max_replicas:
        return None
    return {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target_ongoing_requests": target_in_flight,
    }
