"""Fermion deployments as Ray Serve application configs (no Ray import here).

One function writes the application config that both the Ray backend sends to a cluster's
dashboard and `fermion export kuberay` puts in a RayService's `serveConfigV2`, so the two never
drift apart. Per-deployment resources (`--cpus`, `--gpus`, `--memory`) live in the deployment's
options under "resources"; they become the Serve replica's `ray_actor_options`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fermion.platform.errors import Invalid
from fermion.serving.on_ray import DEPLOYMENT_NAME

#: What Ray imports to build an application: `fermion.replica.on_ray:build`.
IMPORT_PATH = "fermion.replica.on_ray:build"
#: Options that are settings of the platform, not of the source (`fermion serve` never sees them).
PLATFORM_OPTIONS = ("resources",)
#: Variables a replica needs to find what the control plane sees, passed on when they are set.
PASSED_ENV = ("FERMION_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


@dataclass(frozen=True)
class Resources:
    """What one replica reserves on a Ray node: CPUs, GPUs (both may be fractional) and memory in bytes."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Resources:
        raw = options.get("resources") or {}
        return cls(float(raw.get("cpus", 1.0)), float(raw.get("gpus", 0.0)), raw.get("memory"))

    def actor_options(self) -> dict[str, Any]:
        """Ray's `ray_actor_options` for a Serve replica."""
        result: dict[str, Any] = {"num_cpus": self.cpus}
        if self.gpus:
            result["num_gpus"] = self.gpus
        if self.memory:
            result["memory"] = self.memory
        return result

    def needs(self) -> dict[str, float]:
        """In Ray's resource names, for comparing with what a node has."""
        needed = {"CPU": self.cpus, "GPU": self.gpus, "memory": float(self.memory or 0)}
        return {key: value for key, value in needed.items() if value}

    def compute_threads(self) -> int:
        """Torch/BLAS threads that match the CPUs reserved (at least one)."""
        return max(1, math.floor(self.cpus))


def check_resources(raw: object) -> dict[str, Any]:
    """Validate {"cpus": 0.5, "gpus": 1, "memory": 2147483648}; returns it with only the keys given."""
    if not isinstance(raw, Mapping):
        raise Invalid(f'resources must be a mapping like {{"cpus": 1, "gpus": 0, "memory": "2GiB"}}, got {raw!r}')
    unknown = set(raw) - {"cpus", "gpus", "memory"}
    if unknown:
        raise Invalid(f"unknown resource(s) {', '.join(sorted(unknown))}: use cpus, gpus and memory")
    result: dict[str, Any] = {}
    for key in ("cpus", "gpus"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise Invalid(f"{key} must be a number ≥ 0 (fractions share a device), got {value!r}")
            result[key] = float(value)
    if result.get("cpus") == 0 and "cpus" in raw:
        raise Invalid("cpus must be more than 0 (e.g. 0.5 to put two replicas on one CPU)")
    if "memory" in raw:
        memory = raw["memory"]
        if isinstance(memory, str):
            from fermion.serving.config import parse_size

            try:
                memory = parse_size(memory)
            except ValueError:
                raise Invalid(f"memory must be bytes or a size like 512MiB or 2GB, got {raw['memory']!r}") from None
        if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
            raise Invalid(f"memory must be a positive number of bytes or a size like 2GiB, got {raw['memory']!r}")
        result["memory"] = memory
    return result


def source_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options `fermion serve` (and so `load_service`) takes, without the platform's own."""
    return {key: value for key, value in options.items() if key not in PLATFORM_OPTIONS}


def replica_env(env: Mapping[str, str]) -> dict[str, str]:
    """The deployment's env plus the variables that tell a replica where Fermion's data lives."""
    passed = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    return {**passed, **env}


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
) -> dict[str, Any]:
    """One entry of a Serve config's `applications`: Fermion's builder, the source, scaling and resources."""
    resources = Resources.from_options(options)
    args: dict[str, Any] = {"source": source, "options": source_options(options)}
    args["config"] = {"compute_threads": resources.compute_threads(), "graceful_timeout": grace}
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
