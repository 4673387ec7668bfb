"""Service definition → request/response schemas, without a server (the OpenAPI document: test_openapi.py)."""

# No `from __future__ import annotations` here on purpose: the Services below are defined with
# real (evaluated) annotations, while tests/apps/unit_future_app.py covers string annotations.

import asyncio
import base64
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pydantic
import pytest
from text_tools import Point, TextTools

from fermion import File, Service, endpoint
from fermion.schema import param_descriptions
from fermion.service import BatchOptions, DefinitionError, Endpoint
from fermion.serving.openapi import build_openapi
from fermion.sources import load_service

APPS = Path(__file__).resolve().parent / "apps"


def ep(service: type[Service], name: str) -> Endpoint:
    """The endpoint called `name` of `service`."""
    return {e.name: e for e in service.endpoints()}[name]


def json_schema(model: type[pydantic.BaseModel], mode: str = "validation") -> dict[str, Any]:
    return model.model_json_schema(mode=mode)


# --- Service and endpoint definition ----------------------------------------------------------


def test_endpoints_are_listed_in_definition_order_with_their_routes():
    routes = [(e.name, e.method, e.path) for e in TextTools.endpoints()]
    assert routes == [
        ("predict", "POST", "/predict"),
        ("search", "GET", "/search"),
        ("shout", "POST", "/shout"),
        ("embed", "POST", "/embed"),
        ("count", "POST", "/count"),
        ("ticks", "POST", "/ticks"),
        ("size", "POST", "/size"),
        ("classify_v2", "PUT", "/v2/classify"),
        ("forget", "POST", "/forget"),
    ]
    assert TextTools.service_name() == "TextTools"


def test_docstring_becomes_summary_and_description():
    predict = ep(TextTools, "predict")
    assert predict.summary == "Repeat a text."
    assert predict.description.startswith("The text is repeated verbatim")
    # Without a docstring the summary is made from the name.
    assert ep(TextTools, "classify_v2").summary == "Classify v2"
    assert ep(TextTools, "classify_v2").description == ""


def test_endpoint_options_are_kept():
    assert ep(TextTools, "classify_v2").tags == ("labels",)
    assert ep(TextTools, "shout").is_async
    assert not ep(TextTools, "predict").is_async
    assert ep(TextTools, "embed").batch is not None
    assert ep(TextTools, "embed").batch.max_batch_size == 8
    assert ep(TextTools, "embed").batch.max_wait_ms == 5.0


def test_subclass_inherits_endpoints_and_a_plain_override_removes_one():
    class Base(Service):
        @endpoint
        def ping(self) -> str:
            return "pong"

        @endpoint
        def echo(self, text: str) -> str:
            return text

    class Child(Base):
        def echo(self, text: str) -> str:  # no longer an endpoint
            return text

    assert [e.name for e in Base.endpoints()] == ["ping", "echo"]
    assert [e.name for e in Child.endpoints()] == ["ping"]


def test_service_name_and_version_can_be_set():
    class Named(Service):
        name = "text-api"
        version = "2.1.0"

        @endpoint
        def ping(self) -> str:
            return "pong"

    doc = build_openapi(Named)
    assert doc["info"]["title"] == "text-api"
    assert doc["info"]["version"] == "2.1.0"


# --- Request models ---------------------------------------------------------------------------


def test_required_parameters_and_defaults():
    schema = ep(TextTools, "predict").schema
    assert schema.validate_json(b'{"text": "ab"}') == {"text": "ab", "times": 1}
    assert schema.validate_json(b'{"text": "ab", "times": 3}') == {"text": "ab", "times": 3}
    with pytest.raises(pydantic.ValidationError) as info:
        schema.validate_json(b'{"times": 3}')
    assert info.value.errors()[0]["loc"] == ("text",)
    assert info.value.errors()[0]["type"] == "missing"
    assert json_schema(schema.request_model)["required"] == ["text"]


def test_unknown_fields_are_rejected():
    schema = ep(TextTools, "predict").schema
    with pytest.raises(pydantic.ValidationError) as info:
        schema.validate_json(b'{"text": "ab", "tims": 3}')
    assert info.value.errors()[0]["loc"] == ("tims",)
    assert info.value.errors()[0]["type"] == "extra_forbidden"
    assert json_schema(schema.request_model)["additionalProperties"] is False


def test_values_are_coerced_or_rejected_by_type():
    schema = ep(TextTools, "predict").schema
    assert schema.validate_json(b'{"text": "ab", "times": "2"}')["times"] == 2
    with pytest.raises(pydantic.ValidationError) as info:
        schema.validate_json(b'{"text": "ab", "times": "twice"}')
    assert info.value.errors()[0]["loc"] == ("times",)
    assert info.value.errors()[0]["type"] == "int_parsing"


def test_an_empty_body_means_no_arguments():
    class NoArgs(Service):
        @endpoint
        def ping(self) -> str:
            return "pong"

    assert ep(NoArgs, "ping").schema.validate_json(b"") == {}


def test_get_parameters_are_validated_from_strings():
    schema = ep(TextTools, "search").schema
    assert schema.validate_mapping({"q": "cats", "limit": "5"}) == {"q": "cats", "limit": 5}
    assert schema.validate_mapping({"q": "cats"}) == {"q": "cats", "limit": 10}


def test_nested_models_are_validated():
    class Geometry(Service):
        @endpoint
        def area(self, corners: list[Point]) -> float:
            return 0.0

    schema = ep(Geometry, "area").schema
    kwargs = schema.validate_json(b'{"corners": [{"x": 1, "y": 2}]}')
    assert kwargs["corners"] == [Point(x=1, y=2)]
    with pytest.raises(pydantic.ValidationError):
        schema.validate_json(b'{"corners": [{"x": 1}]}')


def test_args_section_becomes_field_descriptions():
    properties = json_schema(ep(TextTools, "predict").schema.request_model)["properties"]
    assert properties["text"]["description"] == "What to repeat."
    assert properties["times"]["description"] == "How many times."
    assert properties["times"]["default"] == 1


def test_param_descriptions_stop_at_the_next_section():
    doc = "Do it.\n\nArgs:\n    a: First.\n    b (int): Second.\n\nReturns:\n    c: not a parameter.\n"
    assert param_descriptions(doc) == {"a": "First.", "b": "Second."}
    assert param_descriptions("No sections at all.") == {}


def test_multi_line_arg_description_is_kept_whole():
    doc = "Do it.\n\nArgs:\n    text: The text to embed,\n        at most 512 tokens.\n"
    assert param_descriptions(doc) == {"text": "The text to embed, at most 512 tokens."}


# --- Response models --------------------------------------------------------------------------


def test_return_annotation_becomes_response_model():
    assert json_schema(ep(TextTools, "predict").schema.response_model, "serialization")["type"] == "string"
    classify = ep(TextTools, "classify_v2").schema
    assert classify.response_type is Point
    dumped = classify.response_model(Point(x=4, y=0)).model_dump(mode="json")
    assert dumped == {"x": 4.0, "y": 0.0}


def test_none_return_means_a_null_response():
    schema = ep(TextTools, "forget").schema
    assert schema.response_type is None
    assert schema.response_model(None).model_dump_json() == "null"


def test_missing_annotations_mean_any():
    class Loose(Service):
        @endpoint
        def anything(self, value):  # type: ignore[no-untyped-def]
            return value

    schema = ep(Loose, "anything").schema
    assert schema.validate_json(b'{"value": [1, "two"]}') == {"value": [1, "two"]}
    assert schema.response_type is Any


def test_async_endpoint_schema_is_the_same_as_sync():
    shout = ep(TextTools, "shout")
    assert shout.is_async and not shout.stream
    assert shout.schema.validate_json(b'{"text": "hi"}') == {"text": "hi"}
    assert shout.schema.response_type is str
    assert asyncio.run(shout.func(TextTools(), "hi")) == "HI"


# --- Streaming --------------------------------------------------------------------------------


def test_generators_stream_their_item_type():
    count = ep(TextTools, "count")
    assert count.stream
    assert count.schema.response_type is int
    ticks = ep(TextTools, "ticks")
    assert ticks.stream and ticks.is_async
    assert ticks.schema.response_type is str


def test_stream_can_be_forced_off_for_a_generator_and_on_for_a_function():
    class Explicit(Service):
        @endpoint(stream=False)
        def collected(self, n: int) -> Iterator[int]:
            yield from range(n)

        @endpoint(stream=True)
        def handmade(self, n: int) -> Iterator[int]:
            return iter(range(n))

    assert not ep(Explicit, "collected").stream
    assert ep(Explicit, "handmade").stream
    assert ep(Explicit, "handmade").schema.response_type is int


# --- Batching ---------------------------------------------------------------------------------


def test_batched_endpoint_is_described_per_item():
    schema = ep(TextTools, "embed").schema
    request = json_schema(schema.request_model)
    assert request["properties"]["text"]["type"] == "string"
    assert schema.validate_json(b'{"text": "one item"}') == {"text": "one item"}
    with pytest.raises(pydantic.ValidationError):
        schema.validate_json(b'{"text": ["a", "list"]}')
    assert schema.response_type == list[float]
    assert json_schema(schema.response_model, "serialization") == {
        "items": {"type": "number"},
        "title": "EmbedResponse",
        "type": "array",
    }


def test_batched_endpoint_accepts_sequences_and_homogeneous_tuples():
    class Batched(Service):
        @endpoint(max_batch_size=4)
        def score(self, a: Sequence[int], b: tuple[str, ...]) -> Sequence[bool]:
            return [True] * len(a)

    schema = ep(Batched, "score").schema
    assert [(p.name, p.annotation) for p in schema.params] == [("a", int), ("b", str)]
    assert schema.response_type is bool


def test_adaptive_wait_is_an_opt_in_batching_option():
    class Svc(Service):
        @endpoint(max_batch_size=8, max_wait_ms=3, adaptive_wait=True)
        def fast(self, x: list[int]) -> list[int]:
            return x

        @endpoint(max_batch_size=8)
        def steady(self, x: list[int]) -> list[int]:
            return x

    assert ep(Svc, "fast").batch == BatchOptions(max_batch_size=8, max_wait_ms=3.0, adaptive=True)
    assert ep(Svc, "steady").batch.adaptive is False


# --- Files ------------------------------------------------------------------------------------


def test_file_accepts_base64_in_json():
    schema = ep(TextTools, "size").schema
    assert schema.file_params == ("upload",)
    upload = schema.validate_json(b'{"upload": "aGVsbG8="}')["upload"]
    assert isinstance(upload, File)
    assert upload.read() == b"hello"
    assert upload.size == 5


def test_file_accepts_a_data_url_and_keeps_its_media_type():
    schema = ep(TextTools, "size").schema
    body = b'{"upload": "data:image/png;base64,' + base64.b64encode(b"\x89PNG") + b'"}'
    upload = schema.validate_json(body)["upload"]
    assert upload.data == b"\x89PNG"
    assert upload.content_type == "image/png"


def test_file_accepts_an_object_with_a_filename():
    schema = ep(TextTools, "size").schema
    upload = schema.validate_json(b'{"upload": {"data": "aGk=", "filename": "hi.txt", "content_type": "text/plain"}}')["upload"]
    assert (upload.data, upload.filename, upload.content_type) == (b"hi", "hi.txt", "text/plain")


def test_bad_base64_is_rejected_with_a_clear_message():
    schema = ep(TextTools, "size").schema
    with pytest.raises(pydantic.ValidationError) as info:
        schema.validate_json(b'{"upload": "this is not base64!"}')
    assert info.value.errors()[0]["loc"] == ("upload",)
    assert "not valid base64" in str(info.value)
    assert "multipart" in str(info.value)


def test_data_url_that_is_not_base64_is_rejected():
    schema = ep(TextTools, "size").schema
    with pytest.raises(pydantic.ValidationError) as info:
        schema.validate_json(b'{"upload": "data:text/plain,hello"}')
    assert "data:<type>;base64,<data>" in str(info.value)


def test_file_json_schema_says_base64():
    prop = json_schema(ep(TextTools, "size").schema.request_model)["properties"]["upload"]
    assert prop["type"] == "string"
    assert prop["contentEncoding"] == "base64"


def test_file_response_is_sent_as_base64():
    class Returns(Service):
        @endpoint
        def thumbnail(self) -> File:
            return File(b"hi")

    model = ep(Returns, "thumbnail").schema.response_model
    assert model(File(b"hi")).model_dump_json() == '"aGk="'


def test_file_helpers(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"some notes")
    upload = File.from_path(path)
    assert (upload.filename, upload.content_type, len(upload)) == ("notes.txt", "text/plain", 10)
    assert upload.open().read() == b"some notes"
    assert upload == File(b"some notes")
    with pytest.raises(TypeError, match="must be bytes"):
        File("text")  # type: ignore[arg-type]


# --- Definition errors ------------------------------------------------------------------------


def test_batched_parameter_must_be_a_list():
    class Bad(Service):
        @endpoint(max_batch_size=8)
        def embed(self, text: str) -> list[float]:
            return []

    with pytest.raises(DefinitionError, match=r"annotate it as `text: list\[\.\.\.\]`"):
        ep(Bad, "embed").schema


def test_batched_parameter_default_is_each_items_default():
    class Good(Service):
        @endpoint(max_batch_size=8)
        def embed(self, text: list[str], normalize: list[bool] = True) -> list[float]:  # type: ignore[assignment]
            return []

    schema = ep(Good, "embed").schema
    assert schema.validate_json(b'{"text": "a"}') == {"text": "a", "normalize": True}
    assert schema.request_model.model_json_schema()["properties"]["normalize"] == {
        "default": True,
        "title": "Normalize",
        "type": "boolean",
    }


@pytest.mark.parametrize("signature", ["*texts", "**options"])
def test_star_args_cannot_become_a_schema(signature):
    namespace: dict[str, Any] = {}
    exec(f"def run(self, {signature}) -> str:\n    return ''", namespace)
    Bad = type("Bad", (Service,), {"run": endpoint(namespace["run"])})

    with pytest.raises(DefinitionError, match=r"\*args and \*\*kwargs cannot become a request schema"):
        ep(Bad, "run").schema


def test_two_endpoints_cannot_share_a_route():
    with pytest.raises(DefinitionError, match=r"'first' and 'second' both serve POST /same"):

        class Bad(Service):
            @endpoint(path="/same")
            def first(self) -> str:
                return ""

            @endpoint(path="/same")
            def second(self) -> str:
                return ""


def test_same_path_with_different_methods_is_fine():
    class Items(Service):
        @endpoint(path="/item", method="GET")
        def read(self, key: str) -> str:
            return key

        @endpoint(path="/item", method="DELETE")
        def delete(self, key: str) -> None:
            pass

    assert [(e.method, e.path) for e in Items.endpoints()] == [("GET", "/item"), ("DELETE", "/item")]


def test_two_endpoints_cannot_share_a_name():
    with pytest.raises(DefinitionError):

        class Bad(Service):
            @endpoint(name="predict", path="/v1/predict")
            def predict_v1(self) -> str:
                return ""

            @endpoint(name="predict", path="/v2/predict")
            def predict_v2(self) -> str:
                return ""


@pytest.mark.parametrize("path", ["/healthz", "readyz", "/metrics", "/openapi.json", "/docs"])
def test_server_paths_are_reserved(path):
    with pytest.raises(DefinitionError, match="is reserved by the server"):

        class Bad(Service):
            @endpoint(path=path)
            def mine(self) -> str:
                return ""


def test_an_endpoint_named_like_a_server_path_is_refused():
    with pytest.raises(DefinitionError, match=r"'/metrics' is reserved"):

        class Bad(Service):
            @endpoint
            def metrics(self) -> dict:
                return {}


def test_stream_and_batch_cannot_be_combined():
    with pytest.raises(DefinitionError, match="cannot both stream and batch"):

        class Bad(Service):
            @endpoint(max_batch_size=4)
            def count(self, n: list[int]) -> Iterator[int]:
                yield from n


def test_batched_get_is_refused():
    with pytest.raises(DefinitionError, match="cannot be GET"):

        class Bad(Service):
            @endpoint(method="GET", max_batch_size=4)
            def lookup(self, key: list[str]) -> list[str]:
                return key


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "FETCH"}, r"method='FETCH'\) is not supported"),
        ({"max_batch_size": 0}, r"max_batch_size=0\) must be at least 1"),
        ({"max_batch_size": 4, "max_wait_ms": -1}, r"max_wait_ms=-1\) must be zero or more"),
        ({"timeout": 0}, r"timeout=0\) must be positive"),
        ({"max_concurrency": -2}, r"max_concurrency=-2\) must be positive"),
    ],
)
def test_invalid_endpoint_options_are_refused(options, message):
    with pytest.raises(DefinitionError, match=message):
        endpoint(**options)


def test_max_queue_zero_is_allowed():
    endpoint(max_queue=0)  # no waiting at all: reject when busy


def test_unresolvable_annotation_names_the_endpoint():
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\ndef run(self, item: NotImported) -> str:\n    return ''\n",
        namespace,
    )
    Bad = type("Bad", (Service,), {"run": endpoint(namespace["run"])})
    with pytest.raises(DefinitionError, match=r"endpoint 'run': cannot resolve a type annotation .*NotImported"):
        ep(Bad, "run").schema


def test_definition_error_is_a_type_error():
    assert issubclass(DefinitionError, TypeError)


# --- from __future__ import annotations -------------------------------------------------------


@pytest.fixture
def shapes(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading a file puts its folder on sys.path
    return type(load_service(str(APPS / "unit_future_app.py") + ":Shapes"))


def test_string_annotations_are_resolved(shapes):
    centroid = ep(shapes, "centroid").schema
    kwargs = centroid.validate_json(b'{"points": [{"x": 0, "y": 0}, {"x": 2, "y": 4}]}')
    assert [type(p).__name__ for p in kwargs["points"]] == ["Point", "Point"]
    assert kwargs["label"] is None
    assert centroid.response_type.__name__ == "Point"
    properties = json_schema(centroid.request_model)["properties"]
    assert properties["points"]["description"] == "The corners of the shape."


def test_string_annotations_for_batch_stream_and_files(shapes):
    norms = ep(shapes, "norms").schema
    assert [(p.name, p.annotation.__name__) for p in norms.params] == [("point", "Point")]
    assert norms.response_type is float
    assert ep(shapes, "walk").stream
    assert ep(shapes, "walk").schema.response_type.__name__ == "Point"
    assert ep(shapes, "ticks").schema.response_type is str
    measure = ep(shapes, "measure").schema
    assert measure.file_params == ("drawing",)
    assert measure.validate_json(b'{"drawing": "aGk="}')["drawing"].data == b"hi"
    assert measure.validate_json(b"{}")["drawing"] is None


def test_openapi_of_a_future_annotations_service(shapes):
    doc = build_openapi(shapes)
    schemas = doc["components"]["schemas"]
    assert "Point" in schemas
    assert doc["info"]["description"].startswith("Geometry endpoints")
    measure = doc["paths"]["/measure"]["post"]
    assert measure["x-fermion"]["files"] == ["drawing"]
    multipart = measure["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert multipart["properties"]["drawing"]["format"] == "binary"
