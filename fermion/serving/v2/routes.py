"""The `/v2/...` paths of a replica: health, server and model metadata, model readiness and inference.

A protocol *model* is one endpoint of the Service, named as the endpoint is (`predict`,
`embed`); its one version is the Service's `version`. Behind the platform's gateway the same paths
sit under the deployment's prefix, `/run/<deployment>/v2/...`, and both protocol clients
(`tritonclient.http`, KServe's `InferenceRESTClient`) take a base URL with such a path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from fermion._version import __version__
from fermion.serving.http import JSON_TYPE, HTTPError, send_bytes, send_error
from fermion.serving.runtime import EndpointRuntime
from fermion.serving.v2.exchange import HEADER_LENGTH, InferExchange
from fermion.serving.v2.signature import ModelSignature, model_signature

PREFIX = "/v2"
MODELS = "/v2/models/"
#: What `GET /v2` lists: the binary tensor extension is served, as is inference over JSON.
EXTENSIONS = ["binary_tensor_data"]


class OpenInference:
    """Serve a replica's endpoints over the Open Inference Protocol (KServe v2 REST)."""

    def __init__(
        self,
        runtimes: list[EndpointRuntime],
        version: str,
        is_ready: Callable[[], bool],
        request_id: Callable[[dict[str, Any]], str],
    ) -> None:
        self.runtimes = {runtime.name: runtime for runtime in runtimes}
        self.version = version
        self.is_ready = is_ready
        self.request_id = request_id
        self._signatures: dict[str, ModelSignature] = {}

    def signature(self, name: str) -> ModelSignature:
        """The endpoint `name` as a protocol model (derived once, on first use)."""
        found = self._signatures.get(name)
        if found is None:
            found = self._signatures[name] = model_signature(self.runtimes[name].ep)
        return found

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        try:
            if not path.startswith(MODELS):
                await self._server(path, method, send)
                return
            name, version, action = _model_path(path[len(MODELS) :])
            wants = "POST" if action == "infer" else "GET"
            if method != wants and not (wants == "GET" and method == "HEAD"):
                raise HTTPError(405, f"{path} accepts {wants}, not {method}", headers=[(b"allow", wants.encode())])
            signature = self._model(name, version)
            if action == "infer":
                await self._infer(signature, scope, receive, send)
            elif action == "ready":
                ready = self.is_ready()
                await _json(send, 200 if ready else 503, {"name": name, "ready": ready})
            else:
                await _json(send, 200, self._metadata(signature))
        except HTTPError as exc:
            await send_error(send, exc, self.request_id(scope))

    async def _server(self, path: str, method: str, send: Any) -> None:
        if method not in ("GET", "HEAD"):
            raise HTTPError(405, f"{path} accepts GET, not {method}", headers=[(b"allow", b"GET, HEAD")])
        if path == PREFIX:
            await _json(send, 200, {"name": "fermion", "version": __version__, "extensions": EXTENSIONS})
        elif path == PREFIX + "/health/live":
            await _json(send, 200, {"live": True})
        elif path == PREFIX + "/health/ready":
            ready = self.is_ready()
            await _json(send, 200 if ready else 503, {"ready": ready})
        else:
            raise HTTPError(
                404, f"no protocol path {path}; see /v2, /v2/health/live, /v2/health/ready and /v2/models/<model>[/infer]"
            )

    def _model(self, name: str, version: str | None) -> ModelSignature:
        if name not in self.runtimes:
            raise HTTPError(404, f"no model {name!r} here; the models are this service's endpoints: {self._names()}")
        if version is not None and version != self.version:
            raise HTTPError(404, f"model {name!r} has version {self.version!r} only, not {version!r}")
        signature = self.signature(name)
        if signature.reason is not None:
            ep = self.runtimes[name].ep
            raise HTTPError(
                404,
                f"model {name!r} is not served over the Open Inference Protocol: {signature.reason}; "
                f"call it at {ep.method} {ep.path} instead",
            )
        return signature

    def _names(self) -> str:
        return ", ".join(n for n in self.runtimes if self.signature(n).reason is None) or "none (no endpoint takes tensors)"

    def _metadata(self, signature: ModelSignature) -> dict[str, Any]:
        batched = signature.batched
        return {
            "name": signature.name,
            "versions": [self.version],
            "platform": "fermion",
            "inputs": [spec.metadata(batched) for spec in signature.inputs],
            "outputs": [spec.metadata(batched) for spec in signature.outputs],
        }

    async def _infer(self, signature: ModelSignature, scope: dict[str, Any], receive: Any, send: Any) -> None:
        runtime = self.runtimes[signature.name]
        header_length = None
        for key, value in scope["headers"]:
            if key == HEADER_LENGTH:
                header_length = value
        exchange = InferExchange(signature, runtime.schema, self.version, runtime.max_items, header_length)
        await runtime(scope, receive, send, exchange)


def _model_path(rest: str) -> tuple[str, str | None, str | None]:
    """`NAME[/versions/V][/ready|/infer]` → (name, version, action)."""
    parts = rest.split("/")
    name, version = parts[0], None
    if len(parts) >= 3 and parts[1] == "versions":
        version, parts = parts[2], parts[3:]
    else:
        parts = parts[1:]
    if not name or len(parts) > 1 or (parts and parts[0] not in ("ready", "infer")):
        raise HTTPError(404, f"no protocol path /v2/models/{rest}; use /v2/models/<model>[/versions/<v>][/ready|/infer]")
    return name, version, parts[0] if parts else None


async def _json(send: Any, status: int, value: Any) -> None:
    await send_bytes(send, status, orjson.dumps(value), [JSON_TYPE])
