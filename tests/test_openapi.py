"""A Service definition → its OpenAPI document and the example requests built from it, without a server."""

from typing import Any

import pytest
from text_tools import TextTools

from fermion import Service, endpoint
from fermion.schema import example_value
from fermion.serving.openapi import build_openapi

# --- OpenAPI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return build_openapi(TextTools)


def operation(doc: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    return doc["paths"][path][method]


def test_openapi_has_an_operation_per_endpoint(openapi):
    assert openapi["openapi"].startswith("3.1")
    assert openapi["info"]["title"] == "TextTools"
    assert openapi["info"]["description"] == "Small text utilities."
    ids = [op["operationId"] for path, methods in openapi["paths"].items() for op in methods.values() if "operationId" in op]
    assert ids == [e.name for e in TextTools.endpoints()]
    assert operation(openapi, "/v2/classify", "put")["tags"] == ["labels"]
    assert operation(openapi, "/predict")["tags"] == ["endpoints"]


def test_openapi_lists_the_server_paths(openapi):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert openapi["paths"][path]["get"]["tags"] == ["system"]


def test_openapi_x_fermion_metadata(openapi):
    assert operation(openapi, "/predict")["x-fermion"] == {
        "endpoint": "predict",
        "stream": False,
        "batch": None,
        "files": [],
        "params": ["text", "times"],
    }
    assert operation(openapi, "/embed")["x-fermion"]["batch"] == {"max_batch_size": 8, "max_wait_ms": 5.0}
    assert operation(openapi, "/count")["x-fermion"]["stream"] is True
    assert operation(openapi, "/size")["x-fermion"]["files"] == ["upload"]
    assert operation(openapi, "/size")["x-fermion"]["params"] == ["upload", "label"]


def test_openapi_summary_and_description(openapi):
    predict = operation(openapi, "/predict")
    assert predict["summary"] == "Repeat a text."
    assert predict["description"].startswith("The text is repeated verbatim")
    assert "description" not in operation(openapi, "/shout")


def test_openapi_multipart_only_for_file_endpoints(openapi):
    size = operation(openapi, "/size")["requestBody"]["content"]
    assert set(size) == {"application/json", "multipart/form-data"}
    multipart = size["multipart/form-data"]["schema"]
    assert multipart["properties"]["upload"] == {
        "type": "string",
        "format": "binary",
        "description": multipart["properties"]["upload"]["description"],
    }
    assert multipart["properties"]["label"]["type"] == "string"
    for path in ("/predict", "/embed", "/shout", "/count"):
        assert set(operation(openapi, path)["requestBody"]["content"]) == {"application/json"}


def test_openapi_get_endpoints_take_query_parameters(openapi):
    search = operation(openapi, "/search", "get")
    assert "requestBody" not in search
    params = {p["name"]: p for p in search["parameters"]}
    assert [p["in"] for p in search["parameters"]] == ["query", "query"]
    assert params["q"]["required"] is True
    assert params["limit"]["required"] is False
    assert params["limit"]["schema"]["default"] == 10


def test_openapi_request_body_required_only_with_required_fields(openapi):
    assert operation(openapi, "/predict")["requestBody"]["required"] is True

    class Greeter(Service):
        @endpoint
        def ping(self, greeting: str = "hi") -> str:
            return greeting

    assert operation(build_openapi(Greeter), "/ping")["requestBody"]["required"] is False


def test_openapi_components_hold_request_response_and_error(openapi):
    schemas = openapi["components"]["schemas"]
    for stem in ("Predict", "Search", "Embed", "Count", "Size", "ClassifyV2"):
        assert f"{stem}Request" in schemas
        assert f"{stem}Response" in schemas
    assert "Point" in schemas
    assert schemas["Error"]["required"] == ["error"]
    predict = operation(openapi, "/predict")
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PredictResponse"}
    for code in ("422", "429", "500", "503", "504"):
        error = predict["responses"][code]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}


def test_openapi_streams_are_server_sent_events(openapi):
    ok = operation(openapi, "/count")["responses"]["200"]
    assert set(ok["content"]) == {"text/event-stream"}
    assert openapi["components"]["schemas"]["CountResponse"]["type"] == "integer"


def test_openapi_from_an_instance_matches_the_class(openapi):
    assert build_openapi(TextTools()) == openapi


# --- Example values ---------------------------------------------------------------------------


def test_example_request_fills_required_fields_only(openapi):
    schemas = openapi["components"]["schemas"]
    assert example_value({"$ref": "#/components/schemas/PredictRequest"}, schemas) == {"text": "hello"}
    assert example_value(schemas["EmbedRequest"], schemas) == {"text": "hello"}
    assert example_value(schemas["SizeRequest"], schemas) == {"upload": "aGVsbG8="}


def test_example_uses_defaults_and_skips_null():
    assert example_value({"type": "integer", "default": 10}) == 10
    assert example_value({"anyOf": [{"type": "null"}, {"type": "number"}]}) == 1.0
    assert example_value({"type": "integer", "minimum": 5}) == 5
    assert example_value({"enum": ["small", "large"]}) == "small"
    assert example_value({"type": "array", "items": {"type": "boolean"}}) == [True]
    optional_only = {"type": "object", "properties": {"limit": {"type": "integer", "default": 10}}}
    assert example_value(optional_only) == {"limit": 10}


def test_example_nested_model(openapi):
    schemas = openapi["components"]["schemas"]
    assert example_value({"$ref": "#/components/schemas/Point"}, schemas) == {"x": 1.0, "y": 1.0}


def test_example_request_validates_against_its_endpoint(openapi):
    schemas = openapi["components"]["schemas"]
    for e in TextTools.endpoints():
        name = e.schema.request_model.__name__
        example = example_value(schemas[name], schemas)
        e.schema.validate_mapping(example)  # does not raise
