"""The two Open Inference Protocol clients the v2 tests drive: Triton's `tritonclient.http` and KServe's
`InferenceRESTClient`, each pointed at a base URL (a replica, or `/run/<deployment>` on the gateway)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np

MINILM = "all-MiniLM-L6-v2"
TEXTS = ["A man is eating food.", "A man eats a meal.", "The stock market fell today."]
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


# -- the calls both test files make: each model through both clients, against its native endpoint -----------------


def assert_same(answers: list[dict], expected: dict) -> None:
    """Every client's answer (JSON and binary) holds exactly the expected outputs."""
    for answer in answers:
        assert sorted(answer) == sorted(expected)
        for name, value in expected.items():
            if np.asarray(value).dtype.kind == "f":
                np.testing.assert_allclose(answer[name].astype(float), value, rtol=1e-5, atol=1e-6)
            else:
                assert answer[name].tolist() == list(value), name


def onnx_calls(url: str, rows: np.ndarray, token: str | None = None) -> None:
    """The iris ONNX model: one FP32 [-1, 4] input, its label (the probability map is no tensor, so left out)."""
    native = [httpx.post(url + "/predict", json={"X": row.tolist()}, headers=_auth(token)).json()["output_label"] for row in rows]
    assert_same(both_clients(url, "predict", {"X": ("FP32", rows)}, token), {"output_label": native})


def sklearn_calls(url: str, frame, token: str | None = None) -> None:
    """The iris pipeline: one tensor per column (four FP64, `colour` BYTES); predict and predict_proba."""
    fields = [i["name"] for i in httpx.get(url + "/v2/models/predict", headers=_auth(token)).json()["inputs"]]
    tensors = {
        field: ("BYTES", frame[column].to_numpy(dtype=object)) if column == "colour" else ("FP64", frame[column].to_numpy())
        for field, column in zip(fields, frame.columns, strict=True)
    }
    bodies = [dict(zip(fields, row, strict=True)) for row in frame.itertuples(index=False)]
    labels = [httpx.post(url + "/predict", json=b, headers=_auth(token)).json() for b in bodies]
    assert_same(both_clients(url, "predict", tensors, token), {"output": labels})
    probabilities = [httpx.post(url + "/predict_proba", json=b, headers=_auth(token)).json() for b in bodies]
    expected = {label: [p[label] for p in probabilities] for label in probabilities[0]}
    assert_same(both_clients(url, "predict_proba", tensors, token), expected)


def text_calls(url: str, token: str | None = None) -> None:
    """MiniLM: texts in as BYTES, 384-dim vectors out; a two-input similarity."""
    native = [httpx.post(url + "/embed", json={"text": t}, headers=_auth(token)).json() for t in TEXTS]
    texts = np.array(TEXTS, dtype=object)
    assert_same(both_clients(url, "embed", {"text": ("BYTES", texts)}, token), {"output": np.array(native)})
    pairs = {"a": ("BYTES", texts[:2]), "b": ("BYTES", texts[1:])}
    native = [
        httpx.post(url + "/similarity", json={"a": a, "b": b}, headers=_auth(token)).json()
        for a, b in zip(TEXTS[:2], TEXTS[1:], strict=True)
    ]
    assert_same(both_clients(url, "similarity", pairs, token), {"output": np.array(native)})


def _auth(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}
