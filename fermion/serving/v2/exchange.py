"""One inference request of the Open Inference Protocol: tensors in → an endpoint's items; its answers → tensors out.

Every size is checked before anything is built from it: a tensor's element count (the product of
its shape) against the body it came in, the batch against the endpoint's queue, the nesting of
JSON data against the tensor's rank. Each item is then validated by the endpoint's own request
model, so a v2 call accepts exactly what a native call accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from fermion.schema import EndpointSchema
from fermion.serving.http import Headers, HTTPError, validation_detail, validation_message
from fermion.serving.v2.datatypes import (
    DATATYPES,
    FLOATS,
    INTEGERS,
    bad_request,
    check_elements,
    from_binary,
    to_binary,
    to_json,
)
from fermion.serving.v2.signature import ModelSignature, TensorSpec

#: The binary tensor extension's header: how many bytes of the body are the JSON part.
HEADER_LENGTH = b"inference-header-content-length"
#: The most dimensions a tensor may have.
MAX_DIMS = 16


@dataclass(frozen=True)
class _Wanted:
    """An output the caller asked for, and whether it goes back as binary data."""

    spec: TensorSpec
    key: str | None
    binary: bool


@dataclass
class InferExchange:
    """One `POST /v2/models/{model}/infer`: `items` decodes it, `answer` encodes the endpoint's results."""

    signature: ModelSignature
    schema: EndpointSchema
    version: str
    max_items: int
    header_length: bytes | None = None
    request_id: str | None = None
    wanted: list[_Wanted] = field(default_factory=list)

    # -- request ----------------------------------------------------------------------------

    def items(self, body: bytes) -> list[dict[str, Any]]:
        """The endpoint's validated keyword arguments, one dict per item (one in all for an unbatched endpoint)."""
        request, binary = self._split(body)
        inputs = request.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise bad_request('the request has no "inputs": send a list of {"name", "shape", "datatype", "data"}')
        request_id = request.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise bad_request('"id" must be a string')
        self.request_id = request_id
        parameters = _parameters(request.get("parameters"), "the request")
        specs = {spec.name: spec for spec in self.signature.inputs}
        values: dict[str, Any] = {}
        batch: int | None = None
        offset = 0
        for tensor in inputs:
            name, datatype, shape, data, size = _tensor_fields(tensor)
            spec = specs.get(name)
            if spec is None:
                raise bad_request(f"model {self.signature.name!r} has no input {name!r}; its inputs: {self._listing()}")
            if name in values:
                raise bad_request(f"input {name!r} is sent twice")
            self._check_type(spec, datatype, shape)
            count = self._count(name, shape, len(body))
            if data is not None:
                flat = check_elements(name, datatype, _flatten(name, data, len(shape)))
                if len(flat) != count:
                    raise bad_request(f"input {name!r} has {len(flat)} elements; its shape {shape} holds {count}")
            elif size is not None:
                if offset + size > len(binary):
                    raise bad_request(
                        f"input {name!r} says binary_data_size {size}, but only {len(binary) - offset} bytes are left"
                    )
                flat = from_binary(name, datatype, binary[offset : offset + size], count)
                offset += size
            else:
                raise bad_request(f'input {name!r} has no "data" (nor binary_data_size for binary data)')
            if self.signature.batched:
                if batch is not None and shape[0] != batch:
                    raise bad_request(f"input {name!r} has {shape[0]} rows, another input {batch}; send one row per item in each")
                batch = shape[0]
            values[name] = _nest(flat, shape)
        if offset != len(binary):
            raise bad_request(
                f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size; send exactly those"
            )
        for spec in self.signature.inputs:
            if spec.name not in values and spec.shape == () and spec.name in parameters:
                value = parameters[spec.name]  # a scalar parameter may come as a request parameter, for every item
                values[spec.name] = [value] * (batch or 1) if self.signature.batched else value
        missing = [s.name for s in self.signature.inputs if s.required and s.name not in values]
        if missing:
            raise bad_request(f"input(s) {', '.join(map(repr, missing))} missing; the model takes {self._listing()}")
        self._choose_outputs(request.get("outputs"), bool(parameters.get("binary_data_output")))
        rows = (
            [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
            if self.signature.batched
            else [values]
        )
        return [self._validate(row) for row in rows]

    def _split(self, body: bytes) -> tuple[dict[str, Any], bytes]:
        """The JSON header and the binary data after it (the binary tensor extension)."""
        length = len(body)
        if self.header_length is not None:
            try:
                length = int(self.header_length)
            except ValueError:
                length = -1
            if not 0 <= length <= len(body):
                raise bad_request(
                    f"Inference-Header-Content-Length is {self.header_length.decode('latin-1')!r}; it must be the length "
                    f"of the JSON part of the body, 0 to {len(body)}"
                )
        try:
            request = orjson.loads(body[:length])
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"the request is not JSON ({exc}); send an inference request object") from None
        if not isinstance(request, dict):
            raise bad_request('the request must be a JSON object with "inputs"')
        return request, body[length:]

    def _check_type(self, spec: TensorSpec, datatype: str, shape: list[int]) -> None:
        name = spec.name
        if datatype not in DATATYPES:
            raise bad_request(f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(sorted(DATATYPES))}")
        fits = (
            datatype == spec.datatype
            or (spec.datatype in FLOATS and datatype in FLOATS | INTEGERS)
            or (spec.datatype in INTEGERS and datatype in INTEGERS)
        )
        if not fits:
            raise bad_request(f"input {name!r} is {spec.datatype}; {datatype} cannot be sent for it")
        expected = [-1, *spec.shape] if self.signature.batched else list(spec.shape)
        if len(shape) != len(expected) or any(e not in (-1, s) for e, s in zip(expected, shape, strict=True)):
            raise bad_request(f"input {name!r} has shape {shape}; the model takes {expected} (-1: any size)")
        if self.signature.batched and shape[0] > self.max_items:
            raise bad_request(f"input {name!r} has {shape[0]} rows; send at most {self.max_items} per request")

    @staticmethod
    def _count(name: str, shape: list[int], body_size: int) -> int:
        """The element count, refused before any data is read when the body cannot hold that many."""
        count = 1
        for size in shape:
            if size < 1:
                raise bad_request(f"input {name!r} has shape {shape}; every dimension must be at least 1")
            count *= size
            if count > body_size:
                raise bad_request(f"input {name!r} has shape {shape}, more elements than its {body_size}-byte body can hold")
        return count

    def _validate(self, row: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.schema.validate_mapping(row)
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise HTTPError(400, validation_message(detail), detail=detail) from None

    def _choose_outputs(self, requested: Any, binary_default: bool) -> None:
        outputs = dict(
            zip(
                (s.name for s in self.signature.outputs),
                zip(self.signature.outputs, self.signature.keys, strict=True),
                strict=True,
            )
        )
        if requested is None:
            self.wanted = [_Wanted(spec, key, binary_default) for spec, key in outputs.values()]
            return
        if not isinstance(requested, list):
            raise bad_request('"outputs" must be a list of {"name", "parameters"}')
        for item in requested:
            name = item.get("name") if isinstance(item, dict) else None
            if name not in outputs:
                raise bad_request(f"model {self.signature.name!r} has no output {name!r}; its outputs: {', '.join(outputs)}")
            binary = _parameters(item.get("parameters"), f"output {name!r}").get("binary_data", binary_default)
            self.wanted.append(_Wanted(*outputs[name], bool(binary)))

    def _listing(self) -> str:
        return ", ".join(f"{s.name} {s.datatype} {s.metadata(self.signature.batched)['shape']}" for s in self.signature.inputs)

    # -- answer -----------------------------------------------------------------------------

    def answer(self, results: list[Any]) -> tuple[Headers, bytes]:
        """The inference response for the items' results: JSON, or a JSON header and binary outputs."""
        outputs, blobs = [], []
        for wanted in self.wanted:
            spec = wanted.spec
            values = [_value(r, wanted.key) for r in results] if self.signature.batched else _value(results[0], wanted.key)
            flat, shape = _flatten_answer(self.signature.name, spec.name, values)
            output: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": shape}
            try:
                if wanted.binary:
                    blobs.append(to_binary(spec.datatype, flat))
                    output["parameters"] = {"binary_data_size": len(blobs[-1])}
                else:
                    output["data"] = to_json(spec.datatype, flat)
            except (TypeError, ValueError, OverflowError) as exc:
                raise HTTPError(
                    500,
                    f"endpoint {self.signature.name!r} answered values for output {spec.name!r} that are not {spec.datatype} ({exc})",
                ) from None
            outputs.append(output)
        response: dict[str, Any] = {"model_name": self.signature.name, "model_version": self.version, "outputs": outputs}
        if self.request_id is not None:
            response["id"] = self.request_id
        header = orjson.dumps(response)
        if not blobs:
            return [(b"content-type", b"application/json")], header
        headers = [(b"content-type", b"application/octet-stream"), (HEADER_LENGTH, str(len(header)).encode())]
        return headers, b"".join([header, *blobs])


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f'"parameters" of {where} must be a JSON object')
    return value


def _tensor_fields(tensor: Any) -> tuple[str, str, list[int], Any, int | None]:
    """name, datatype, shape, JSON data and binary size of one input, each checked for its JSON type."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise bad_request('each input must be an object with a "name", "shape", "datatype" and "data"')
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if not isinstance(datatype, str):
        raise bad_request(f'input {name!r} has no "datatype" (BYTES, BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64)')
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(type(s) is int for s in shape):
        raise bad_request(f'input {name!r}: "shape" must be a list of at most {MAX_DIMS} integers')
    data = tensor.get("data")
    if data is not None and not isinstance(data, list):
        data = [data]  # a lone scalar
    size = _parameters(tensor.get("parameters"), f"input {name!r}").get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise bad_request(f"input {name!r}: binary_data_size must be a whole number of bytes")
    if size is not None and data is not None:
        raise bad_request(f'input {name!r} has both "data" and binary_data_size; send one')
    return name, datatype, shape, data, size


def _flatten(name: str, data: list[Any], rank: int) -> list[Any]:
    """Row-major elements of JSON data sent flat or nested (no deeper than the tensor's rank)."""
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []

    def walk(value: list[Any], depth: int) -> None:
        if depth > rank:
            raise bad_request(f"input {name!r}: its data is nested deeper than its shape has dimensions")
        for item in value:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                flat.append(item)

    walk(data, 1)
    return flat


def _nest(flat: list[Any], shape: list[int]) -> Any:
    """Row-major elements → nested lists of `shape` (a scalar for shape [])."""
    if not shape:
        return flat[0]
    for size in reversed(shape[1:]):
        flat = [flat[i : i + size] for i in range(0, len(flat), size)]
    return flat


def _value(result: Any, key: str | None) -> Any:
    value = result if key is None else (result[key] if isinstance(result, dict) else getattr(result, key))
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    return tolist() if tolist is not None else value


def _flatten_answer(model: str, output: str, value: Any) -> tuple[list[Any], list[int]]:
    """An answer's nested lists → row-major elements and their shape; a 500 when they are ragged."""
    shape: list[int] = []
    probe = value
    while isinstance(probe, (list, tuple)):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat = [value]
    for size in shape:
        level: list[Any] = []
        for item in flat:
            if not isinstance(item, (list, tuple)) or len(item) != size:
                raise HTTPError(500, f"endpoint {model!r} answered ragged lists for output {output!r}; a tensor is rectangular")
            level.extend(item)
        flat = level
    if any(isinstance(item, (list, tuple, dict)) for item in flat):
        raise HTTPError(500, f"endpoint {model!r} answered ragged lists for output {output!r}; a tensor is rectangular")
    return flat, shape
