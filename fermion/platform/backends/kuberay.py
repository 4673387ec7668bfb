"""A Fermion deployment as a KubeRay `RayService` manifest (`fermion export kuberay NAME`).

The Serve application inside (`serveConfigV2`) is the one the Ray backend deploys, written by
the same `ray_config.application`: the same builder import path, the replica's resources as
`ray_actor_options`, and Fermion's scaling as Serve's (`num_replicas`, or `autoscaling_config`
from min/max and the target of in-flight requests per replica). The Ray cluster around it has a
head that runs no replicas and one worker group whose pods are sized to hold whole replicas.

The deployment's env never appears in the manifest: the worker pods take each variable from a
Kubernetes Secret, `fermion-<deployment>` (`valueFrom.secretKeyRef`), which the user creates
(`secret_manifest` writes one when asked, from values the user supplies).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from fermion.platform.backends.ray_config import application, autoscaling_config
from fermion.platform.resources import Resources, source_options

#: The Ray version the manifest asks for when Ray is not installed here to say.
DEFAULT_RAY_VERSION = "2.60.0"
#: What a worker pod holds beyond its replicas' own memory: the raylet, the object store, Python.
POD_OVERHEAD_BYTES = 1 << 30
#: Memory a replica is given room for when it reserves none.
DEFAULT_REPLICA_BYTES = 1 << 30


@dataclass(frozen=True)
class ExportRequest:
    """What to export: a deployment's settings, and how the cluster gets Fermion and the code."""

    name: str
    source: str
    options: dict[str, Any]
    min_replicas: int = 1
    max_replicas: int = 1
    target_in_flight: float = 2.0
    env_names: tuple[str, ...] = ()
    image: str | None = None
    pip: tuple[str, ...] | None = None  # None: fermion itself, pinned to this version
    working_dir: str | None = None
    namespace: str | None = None
    max_ongoing_requests: int | None = None
    notes: list[str] = field(default_factory=list)


def ray_version() -> str:
    """The installed Ray's version (the cluster should match it), else the one Fermion is tested with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return DEFAULT_RAY_VERSION


def default_image() -> str:
    """Ray's own image for the Ray version and the Python version in use here."""
    return f"rayproject/ray:{ray_version()}-py{sys.version_info.major}{sys.version_info.minor}"


def default_pip(source: str) -> list[str]:
    """`fermion[EXTRA]==VERSION`, with the extra the source kind needs."""
    from fermion._version import __version__
    from fermion.sources import EXTRAS, split_source

    scheme, _ = split_source(source)
    extra = EXTRAS.get(scheme)
    return [f"fermion[{extra}]=={__version__}" if extra else f"fermion=={__version__}"]


def _cluster_source(request: ExportRequest) -> tuple[str, list[str]]:
    """The source as the cluster must see it, and notes on what the user still has to provide."""
    from fermion.sources import split_source

    notes = []
    scheme, rest = split_source(request.source)
    source = request.source
    if scheme == "py":
        path, sep, attr = rest.rpartition(":") if rest.count(":") else (rest, "", "")
        if request.working_dir:
            source = "py:" + path.rsplit("/", 1)[-1] + sep + attr
            notes.append(f"the Python file is read from the working_dir {request.working_dir} as {source[3:]}")
        else:
            notes.append(f"{path} must exist at that path in the image, or pass --working-dir with a zip of its folder")
    elif scheme == "model":
        notes.append(
            "model: sources read the platform's registry: copy <data dir>/models into the image and set "
            "FERMION_HOME there (or serve the model file itself, e.g. sklearn:/models/model.skops)"
        )
    return source, notes


def _quantity_bytes(amount: int) -> str:
    """Bytes as a Kubernetes quantity, rounded up to whole MiB (e.g. 3Gi, 1536Mi)."""
    mib = math.ceil(amount / 2**20)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def secret_name(deployment: str) -> str:
    """The Kubernetes Secret that holds a deployment's env: `fermion-<deployment>`."""
    return f"fermion-{deployment}"


def secret_manifest(request: ExportRequest, values: dict[str, str]) -> dict[str, Any]:
    """The Secret the exported pods read their env from, with `values` (never part of the RayService)."""
    metadata: dict[str, Any] = {
        "name": secret_name(request.name),
        "labels": {"app.kubernetes.io/managed-by": "fermion", "fermion.dev/deployment": request.name},
    }
    if request.namespace:
        metadata["namespace"] = request.namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "stringData": dict(values)}


def _secret_env(request: ExportRequest) -> list[dict[str, Any]]:
    """Each env variable from the deployment's Secret: the pods, hence every replica in them, see it."""
    name = secret_name(request.name)
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}} for key in request.env_names]


def _container(
    name: str,
    image: str,
    cpus: float,
    memory: int,
    gpus: int,
    ports: list[dict[str, Any]] | None = None,
    env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": f"{cpus:g}", "memory": _quantity_bytes(memory)}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    container: dict[str, Any] = {"name": name, "image": image, "resources": {"limits": limits, "requests": dict(limits)}}
    if ports:
        container["ports"] = ports
    if env:
        container["env"] = env
    return container


def rayservice(request: ExportRequest) -> tuple[dict[str, Any], list[str]]:
    """The RayService manifest for `request`, and notes for the user (what the cluster still needs)."""
    import yaml

    resources = Resources.from_options(request.options)
    image = request.image or default_image()
    source, notes = _cluster_source(request)
    runtime_env: dict[str, Any] = {}
    pip = list(request.pip) if request.pip is not None else default_pip(request.source)
    if pip:
        runtime_env["pip"] = pip
    if request.working_dir:
        runtime_env["working_dir"] = request.working_dir
    if request.env_names:
        literals = " ".join(f"--from-literal={key}=..." for key in request.env_names)
        notes.append(
            f"the worker pods read {', '.join(request.env_names)} from the Kubernetes Secret {secret_name(request.name)}, "
            f"which must exist first: kubectl create secret generic {secret_name(request.name)} {literals}"
            + (f" -n {request.namespace}" if request.namespace else "")
            + " (or --with-secret FILE writes it from your shell's variables)"
        )
    scaling = autoscaling_config(request.min_replicas, request.max_replicas, request.target_in_flight)
    app = application(
        request.name,
        source,
        {**source_options(request.options), "resources": request.options.get("resources", {})},
        route_prefix="/",
        num_replicas=None if scaling else request.min_replicas,
        autoscaling=scaling,
        max_ongoing_requests=request.max_ongoing_requests,
        runtime_env=runtime_env,
    )
    if not app["args"]["options"]:
        del app["args"]["options"]
    serve_config = {"applications": [app]}

    # Worker pods hold whole replicas: at least one CPU each, as many replicas as fit in it.
    pod_cpus = max(1, math.ceil(resources.cpus))
    per_pod = max(1, math.floor(pod_cpus / resources.cpus)) if resources.cpus else 1
    pod_gpus = math.ceil(resources.gpus * per_pod) if resources.gpus else 0
    pod_memory = per_pod * (resources.memory or DEFAULT_REPLICA_BYTES) + POD_OVERHEAD_BYTES
    low, high = math.ceil(request.min_replicas / per_pod), max(1, math.ceil(request.max_replicas / per_pod))
    ports = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": 8000, "name": "serve"},
    ]
    cluster: dict[str, Any] = {
        "rayVersion": ray_version(),
        # Ray's token auth (KubeRay >= 1.5.1 makes the token's Secret and gives it to every Ray container):
        # without it anyone who reaches the head's dashboard port can submit a job, i.e. run code in the cluster.
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            # The head schedules no replicas (num-cpus 0): it keeps the cluster's state and Serve's controller.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": {"spec": {"containers": [_container("ray-head", image, 1, 2 << 30, 0, ports)]}},
        },
        "workerGroupSpecs": [
            {
                "groupName": "replicas",
                "replicas": max(low, 1) if scaling is None else low,
                "minReplicas": low,
                "maxReplicas": high,
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [_container("ray-worker", image, pod_cpus, pod_memory, pod_gpus, env=_secret_env(request))]
                    }
                },
            }
        ],
    }
    if scaling is not None:
        cluster["enableInTreeAutoscaling"] = True  # Serve asks for replicas, KubeRay adds the pods they need
    metadata: dict[str, Any] = {
        "name": request.name,
        "labels": {"app.kubernetes.io/managed-by": "fermion", "fermion.dev/deployment": request.name},
    }
    if request.namespace:
        metadata["namespace"] = request.namespace
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata,
        "spec": {"serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False), "rayClusterConfig": cluster},
    }
    return manifest, notes + request.notes


def to_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML, `serveConfigV2` as a readable block (`|`)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, text)
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
