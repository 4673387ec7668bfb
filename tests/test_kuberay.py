"""`fermion export kuberay`: the RayService manifest validates against KubeRay's published CRD.

The CRD is KubeRay's own file, carried in the repository (`tests/data/kuberay/`, Apache-2.0, its
origin in the README there); $FERMION_KUBERAY_CRD names another release's. Its OpenAPI v3 schema is checked with `jsonschema`, made strict: an object
schema that lists its properties accepts no others (a misspelt field would pass Kubernetes'
pruning silently, so it must fail here). `serveConfigV2` is a string to the CRD: it is parsed and
checked against Ray Serve's own config schema.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from support import ROOT

from fermion.platform.backends.kuberay import ExportRequest, rayservice, to_yaml
from fermion.platform.backends.ray_config import IMPORT_PATH

ECHO = f"py:{ROOT / 'examples' / 'echo.py'}:Echo"


CRD = Path(__file__).resolve().parent / "data" / "kuberay" / "ray.io_rayservices.yaml"


def crd_path() -> Path:
    """$FERMION_KUBERAY_CRD when set, else the copy in tests/data/kuberay/."""
    chosen = Path(os.environ.get("FERMION_KUBERAY_CRD") or CRD)
    assert chosen.is_file(), f"KubeRay's RayService CRD is not at {chosen}: restore {CRD} from git, or set FERMION_KUBERAY_CRD"
    return chosen


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def crd_validator() -> jsonschema.Draft7Validator:
    """KubeRay's RayService v1 schema, strict."""
    crd = yaml.safe_load(crd_path().read_text())
    assert crd["spec"]["names"]["kind"] == "RayService"
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return crd_validator()


def check(validator: jsonschema.Draft7Validator, manifest: dict[str, Any]) -> dict[str, Any]:
    """Validate the manifest (through its YAML text, as kubectl would read it); the parsed Serve config."""
    parsed = yaml.safe_load(to_yaml(manifest))
    errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:10])
    assert parsed["apiVersion"] == "ray.io/v1" and parsed["kind"] == "RayService"
    serve_config = yaml.safe_load(parsed["spec"]["serveConfigV2"])
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config)  # Ray Serve's own check of a config file
    return serve_config


def test_the_echo_example_exports_to_a_valid_rayservice(validator):
    manifest, notes = rayservice(ExportRequest("echo", ECHO, {}, max_ongoing_requests=1040))
    serve = check(validator, manifest)
    app = serve["applications"][0]
    assert app["import_path"] == IMPORT_PATH and app["route_prefix"] == "/"
    assert app["args"]["source"] == ECHO
    replica = app["deployments"][0]
    assert replica["num_replicas"] == 1 and replica["max_ongoing_requests"] == 1040
    assert replica["ray_actor_options"] == {"num_cpus": 1.0}
    assert app["runtime_env"]["pip"][0].startswith("fermion==")
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (1, 1)
    assert any("must exist at that path in the image" in note for note in notes)
    assert manifest["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}  # Ray's token auth on the cluster


def test_autoscaling_resources_and_a_working_dir_map_to_serve_and_the_pods(validator):
    request = ExportRequest(
        "clip",
        "py:/home/me/app/vision.py:Clip",
        {"resources": {"cpus": 0.5, "gpus": 0.5, "memory": 3 * 2**30}},
        min_replicas=0,
        max_replicas=5,
        target_in_flight=4,
        env_names=("HF_TOKEN",),
        image="ghcr.io/me/clip:1",
        working_dir="https://example.com/app.zip",
        namespace="ml",
    )
    manifest, notes = rayservice(request)
    app = check(validator, manifest)["applications"][0]
    assert app["args"]["source"] == "py:vision.py:Clip"
    assert app["runtime_env"]["working_dir"] == "https://example.com/app.zip"
    replica = app["deployments"][0]
    assert "num_replicas" not in replica
    assert replica["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 5, "target_ongoing_requests": 4}
    assert replica["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 0.5, "memory": 3 * 2**30}
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    workers = cluster["workerGroupSpecs"][0]
    # Two replicas fit a 1-CPU pod: 0..5 replicas need 0..3 pods, each with one GPU and room for two.
    assert (workers["minReplicas"], workers["maxReplicas"]) == (0, 3)
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "7Gi", "nvidia.com/gpu": 1}
    assert manifest["metadata"]["namespace"] == "ml"
    assert (
        manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/me/clip:1"
    )
    # The env's values are nowhere in the manifest: the worker pods read each from the deployment's Secret.
    assert workers["template"]["spec"]["containers"][0]["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "fermion-clip", "key": "HF_TOKEN"}}}
    ]
    assert "env_vars" not in app["runtime_env"]
    assert any("kubectl create secret generic fermion-clip --from-literal=HF_TOKEN=... -n ml" in note for note in notes)


def test_the_secret_is_a_separate_manifest_with_the_values_given():
    from fermion.platform.backends.kuberay import secret_manifest

    request = ExportRequest("clip", ECHO, {}, env_names=("HF_TOKEN",), namespace="ml")
    secret = yaml.safe_load(to_yaml(secret_manifest(request, {"HF_TOKEN": "hf_s3cr3t"})))
    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "fermion-clip" and secret["metadata"]["namespace"] == "ml"
    assert secret["stringData"] == {"HF_TOKEN": "hf_s3cr3t"}
    manifest, _ = rayservice(request)
    assert "hf_s3cr3t" not in to_yaml(manifest)


def test_a_misspelt_field_fails_the_strict_schema(validator):
    manifest, _ = rayservice(ExportRequest("echo", ECHO, {}))
    manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert list(validator.iter_errors(yaml.safe_load(to_yaml(manifest))))
