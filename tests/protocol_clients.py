"""The two Open Inference Protocol clients the v2 tests drive: Triton's `tritonclient.http` and KServe's
`InferenceRESTClient`, each pointed at a base URL (a replica, or `/run/<deployment>` on the gateway)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

#: Tensors to send: name → (datatype, array).
Tensors = dict[str, tuple[str, Any]]


def _headers(token: str | None) -> dict[str, str] | None:
    return {"authorization": f"Bearer {token}"} if token else None


def triton_client(url: str) -> Any:
    """`tritonclient.http` takes `host:port/base-path` without the scheme."""
    import tritonclient.http

    return tritonclient.http.InferenceServerClient(url.split("://", 1)[1], network_timeout=120.0)


def triton_infer(url: str, model: str, tensors: Tensors, *, binary: bool, token: str | None = None) -> dict[str, Any]:
    """Every output of one inference through tritonclient, as numpy arrays (BYTES decoded to str)."""
    import tritonclient.http

    client = triton_client(url)
    try:
        inputs = []
        for name, (datatype, array) in tensors.items():
            tensor = tritonclient.http.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        outputs = [
            tritonclient.http.InferRequestedOutput(o["name"], binary_data=binary)
            for o in client.get_model_metadata(model, headers=_headers(token))["outputs"]
        ]
        result = client.infer(model, inputs, outputs=outputs, headers=_headers(token), request_id="triton-1")
        assert result.get_response()["id"] == "triton-1" and result.get_response()["model_name"] == model
        return {o.name(): _text(result.as_numpy(o.name())) for o in outputs}
    finally:
        client.close()


def kserve_infer(url: str, model: str, tensors: Tensors, *, binary: bool, token: str | None = None) -> dict[str, Any]:
    """Every output of one inference through KServe's InferenceRESTClient, as numpy arrays."""
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> dict[str, Any]:
        inputs = []
        for name, (datatype, array) in tensors.items():
            tensor = InferInput(name=name, shape=list(array.shape), datatype=datatype)
            tensor.set_data_from_numpy(array, binary_data=binary)
            inputs.append(tensor)
        request = InferRequest(model_name=model, infer_inputs=inputs, request_id="kserve-1")
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=120)) as client:
            assert await client.is_server_live(url, headers=_headers(token))
            assert await client.is_server_ready(url, headers=_headers(token))
            assert await client.is_model_ready(url, model, headers=_headers(token))
            response = await client.infer(url, request, model_name=model, headers=_headers(token))
        assert response.id == "kserve-1" and response.model_name == model
        return {o.name: _text(o.as_numpy()) for o in response.outputs}

    return asyncio.run(run())


def both_clients(url: str, model: str, tensors: Tensors, token: str | None = None) -> list[dict[str, Any]]:
    """The answers of both clients, each with JSON tensors and with the binary tensor extension."""
    return [
        call(url, model, tensors, binary=binary, token=token) for call in (triton_infer, kserve_infer) for binary in (False, True)
    ]


def _text(array: Any) -> Any:
    """BYTES come back as bytes from one client and str from the other: compare them as str."""
    if array.dtype.kind in "OSU":
        return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else str(v), otypes=[object])(array)
    return array
