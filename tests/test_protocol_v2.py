"""The Open Inference Protocol (KServe v2 REST) on replicas: `onnx:`, `sklearn:` and `st:` models served by real
`fermion serve` processes, called by `tritonclient.http` and KServe's `InferenceRESTClient` (JSON and binary tensors)
and compared with the same models' native endpoints; then the mapping rules and errors on a hand-written Service."""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
import pytest
from protocol_clients import MINILM, onnx_calls, sklearn_calls, text_calls, triton_client
from pydantic import BaseModel, Field
from support import running_servers, serve_asgi
from tiny_models.tabular import iris_frame_pipeline, iris_onnx

from fermion import Service, endpoint
from fermion.serving.app import ReplicaApp
from fermion.types import File


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("v2")
    return {"onnx": iris_onnx(folder), "sklearn": iris_frame_pipeline(folder), "folder": folder}


@pytest.fixture(scope="module")
def servers(models):
    sources = {
        "onnx": (f"onnx:{models['onnx'].path}",),
        "sklearn": (f"sklearn:{models['sklearn'].path}",),
        "text": (f"st:{MINILM}",),
    }
    with running_servers(sources, tmp_dir=models["folder"]) as running:
        yield {name: server.url for name, server in running.items()}


def test_onnx_model_answers_both_clients_as_natively(servers, models):
    onnx_calls(servers["onnx"], models["onnx"].rows)
    metadata = triton_client(servers["onnx"]).get_model_metadata("predict")
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "output_label", "datatype": "BYTES", "shape": [-1]}]


def test_sklearn_model_answers_both_clients_as_natively(servers, models):
    sklearn_calls(servers["sklearn"], models["sklearn"].rows.iloc[:6])
    metadata = httpx.get(servers["sklearn"] + "/v2/models/predict_proba").json()
    assert [o["name"] for o in metadata["outputs"]] == ["setosa", "versicolor", "virginica"]
    assert {i["datatype"] for i in metadata["inputs"]} == {"FP64", "BYTES"}


def test_text_model_answers_both_clients_as_natively(servers):
    text_calls(servers["text"])
    assert httpx.get(servers["text"] + "/v2/models/embed").json()["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]}
    ]


def test_health_server_metadata_and_versions(servers):
    url = servers["onnx"]
    client = triton_client(url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("predict")
    assert client.is_model_ready("predict", "0.1.0") and not client.is_model_ready("predict", "9")
    assert client.get_server_metadata() == {"name": "fermion", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
    assert httpx.get(url + "/v2/models/predict/versions/0.1.0").json()["versions"] == ["0.1.0"]
    client.close()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}, 400, "is FP32; BYTES"),
        ({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "takes [-1, 4]"),
        ({"inputs": [{"name": "Y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 400, "no input 'Y'"),
        ({"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, 400, "has 4 elements"),
        ({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, "2", 3, 4]}]}, 400, "cannot hold"),
        ({"inputs": [{"name": "X", "shape": [10**9, 4], "datatype": "FP32", "data": [1]}]}, 400, "send at most 512"),
        ({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [[[1, 2, 3, 4]]]}]}, 400, "nested deeper"),
        ({"inputs": []}, 400, 'no "inputs"'),
        (
            {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "z"}]},
            400,
            "no output 'z'",
        ),
    ],
)
def test_bad_requests_get_protocol_errors(servers, body, status, message):
    answer = httpx.post(servers["onnx"] + "/v2/models/predict/infer", json=body)
    assert answer.status_code == status and message in answer.json()["error"], answer.text


def test_sizes_are_checked_before_the_data_is_read(servers):
    url = servers["onnx"] + "/v2/models/predict/infer"
    huge = httpx.post(url, json={"inputs": [{"name": "X", "shape": [500, 2**40], "datatype": "FP32", "data": [1]}]})
    assert huge.status_code == 400 and "takes [-1, 4]" in huge.json()["error"]
    wide = httpx.post(url, json={"inputs": [{"name": "X", "shape": [2**40, 4], "datatype": "FP32", "data": [1]}]})
    assert wide.status_code == 400 and "at most 512" in wide.json()["error"]
    header = httpx.post(url, content=b"{}", headers={"inference-header-content-length": "99"})
    assert header.status_code == 400 and "Inference-Header-Content-Length" in header.json()["error"]
    binary = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    short = httpx.post(
        url,
        content=httpx.Request("POST", url, json=binary).content + b"\0" * 8,
        headers={"inference-header-content-length": str(len(httpx.Request("POST", url, json=binary).content))},
    )
    assert short.status_code == 400 and "only 8 bytes are left" in short.json()["error"]


def test_unknown_and_untensored_models_say_where_to_go(servers):
    unknown = httpx.get(servers["text"] + "/v2/models/nope")
    assert unknown.status_code == 404 and "embed, similarity" in unknown.json()["error"]
    openai = httpx.post(servers["text"] + "/v2/models/embeddings/infer", json={"inputs": []})
    assert openai.status_code == 404 and "parameter 'input'" in openai.json()["error"]
    assert "POST /v1/embeddings" in openai.json()["error"]


# -- the mapping rules, on a hand-written Service served in-process ---------------------------------------------------


class Reading(BaseModel):
    """A record answer: each tensor key is an output, the dict is left out."""

    total: float
    flags: list[bool]
    notes: dict[str, str]


class Tensors(Service):
    """Endpoints that cover the datatypes and both kinds of endpoint."""

    @endpoint(max_batch_size=8, max_wait_ms=20)
    def scale(
        self, values: list[list[float]], factor: list[float] = 2.0, small: list[Annotated[int, Field(ge=-128, le=127)]] = 0
    ) -> list[Reading]:
        return [
            Reading(total=sum(v) * f + s, flags=[x > 0 for x in v], notes={})
            for v, f, s in zip(values, factor, small, strict=True)
        ]

    @endpoint
    def grid(self, cells: Annotated[list[list[int]], Field(min_length=2, max_length=2)], word: str) -> list[str]:
        return [f"{word}{sum(row)}" for row in cells]

    @endpoint
    def pick(self, choice: Literal["a", "b"]) -> bool:
        return choice == "a"

    @endpoint
    def upload(self, file: File) -> int:
        return len(file.data)


@pytest.fixture(scope="module")
def tensors_url():
    app = ReplicaApp(Tensors())
    with serve_asgi(app) as url:
        assert app.wait_ready(30)
        yield url


def infer(url: str, model: str, inputs: list[dict], **extra) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs, **extra})


def test_metadata_follows_the_signature(tensors_url):
    scale = httpx.get(tensors_url + "/v2/models/scale").json()
    assert scale["inputs"] == [
        {"name": "values", "datatype": "FP64", "shape": [-1, -1]},
        {"name": "factor", "datatype": "FP64", "shape": [-1]},
        {"name": "small", "datatype": "INT8", "shape": [-1]},
    ]
    assert scale["outputs"] == [
        {"name": "total", "datatype": "FP64", "shape": [-1]},
        {"name": "flags", "datatype": "BOOL", "shape": [-1, -1]},
    ]
    grid = httpx.get(tensors_url + "/v2/models/grid").json()  # not batched: whole tensors, no batch dimension
    assert grid["inputs"] == [
        {"name": "cells", "datatype": "INT64", "shape": [2, -1]},
        {"name": "word", "datatype": "BYTES", "shape": []},
    ]
    upload = httpx.get(tensors_url + "/v2/models/upload")
    assert upload.status_code == 404 and "parameter 'file' is no tensor" in upload.json()["error"]


def test_batched_items_nested_data_and_request_parameters(tensors_url):
    answer = infer(
        tensors_url,
        "scale",
        [
            {"name": "values", "shape": [2, 2], "datatype": "FP16", "data": [[1.5, -1], [2, 3]]},
            {"name": "small", "shape": [2], "datatype": "INT8", "data": [1, 2]},
        ],
        parameters={"factor": 10},
        id="batch-1",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "batch-1" and body["model_name"] == "scale"
    assert body["outputs"] == [
        {"name": "total", "datatype": "FP64", "shape": [2], "data": [6.0, 52.0]},
        {"name": "flags", "datatype": "BOOL", "shape": [2, 2], "data": [True, False, True, True]},
    ]
    overflow = infer(
        tensors_url,
        "scale",
        [
            {"name": "values", "shape": [1, 1], "datatype": "FP64", "data": [1]},
            {"name": "small", "shape": [1], "datatype": "INT8", "data": [300]},
        ],
    )
    assert overflow.status_code == 400 and "INT8 and cannot hold" in overflow.json()["error"]


def test_whole_tensors_literals_and_validation(tensors_url):
    grid = infer(
        tensors_url,
        "grid",
        [
            {"name": "cells", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]},
            {"name": "word", "shape": [], "datatype": "BYTES", "data": ["sum"]},
        ],
    )
    assert grid.json()["outputs"] == [{"name": "output", "datatype": "BYTES", "shape": [2], "data": ["sum6", "sum15"]}]
    assert infer(tensors_url, "pick", [{"name": "choice", "shape": [], "datatype": "BYTES", "data": "a"}]).json()["outputs"][0][
        "data"
    ] == [True]
    refused = infer(tensors_url, "pick", [{"name": "choice", "shape": [], "datatype": "BYTES", "data": ["c"]}])
    assert refused.status_code == 400 and "choice" in refused.json()["error"]
    missing = infer(tensors_url, "grid", [{"name": "word", "shape": [], "datatype": "BYTES", "data": ["x"]}])
    assert missing.status_code == 400 and "'cells' missing" in missing.json()["error"]
