"""An endpoint's signature as Open Inference Protocol tensors: its parameters are the inputs, its answer the outputs.

Numbers, booleans and strings, and rectangular lists of them, are tensors: `str` is BYTES, `bool`
BOOL, `float` FP64 (FP32 with OpenAPI's `format: float`), `int` INT64 (or the narrowest INT*/UINT* whose range its `ge`/`le` bounds name,
as the `onnx:` adapter writes them), a `Literal` the datatype of its values, and a list a dimension
(of fixed size when its `min_length` equals its `max_length`, else -1). An answer that is a record
(a TypedDict or a pydantic model) gives one output per key that is a tensor; any other answer is
one output named `output`. A batched endpoint's tensors gain a leading batch dimension (-1), one
row per item, as Triton's batched models have; other endpoints take and give their tensors whole.
Anything else (files, dicts, unions of different types, streams) is no tensor, and `reason` says why.
"""

from __future__ import annotations

import collections.abc as cabc
import types
import typing
from dataclasses import dataclass
from typing import Any

import typing_extensions
from pydantic import BaseModel

from fermion.service import Endpoint
from fermion.types import File

#: The name of the one output of an endpoint whose answer is not a record.
OUTPUT = "output"
#: OpenAPI's number formats (`Field(json_schema_extra={"format": "float"})`, as the `onnx:` adapter writes them).
_FLOAT_FORMATS = {"float": "FP32", "double": "FP64"}
_LISTS = {list, tuple, cabc.Sequence, cabc.MutableSequence}
_RANGES = {
    name: ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if name[0] == "I" else (0, (1 << bits) - 1))
    for name, bits in (
        ("INT8", 8),
        ("INT16", 16),
        ("INT32", 32),
        ("UINT8", 8),
        ("UINT16", 16),
        ("UINT32", 32),
        ("UINT64", 64),
    )
}


class NotATensor(Exception):
    """A type the protocol cannot carry; the message says which and why."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, datatype and shape per item (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    required: bool = True

    def metadata(self, batched: bool) -> dict[str, Any]:
        """`{name, datatype, shape}` as the model metadata lists it."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.shape] if batched else list(self.shape)}


@dataclass(frozen=True)
class ModelSignature:
    """An endpoint as a protocol model: its tensors, whether they are batched, or why it cannot be one."""

    name: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    batched: bool = False
    #: A record's key per output (None: the answer itself is the one output).
    keys: tuple[str | None, ...] = ()
    reason: str | None = None


def tensor_type(annotation: Any) -> tuple[str, tuple[int, ...]]:
    """The datatype and shape of a type; raises NotATensor."""
    base, bounds = _unwrap(annotation)
    origin = typing.get_origin(base)
    if base is Any:
        raise NotATensor("it is not annotated (Any); annotate it with a number, bool, str or list type")
    if origin in (typing.Union, types.UnionType):
        choices = [arg for arg in typing.get_args(base) if arg is not type(None)]
        kinds = {tensor_type(arg) for arg in choices}
        if len(kinds) != 1:
            raise NotATensor(f"{_show(base)} mixes types; a tensor holds one datatype and one shape")
        return kinds.pop()
    if origin is typing.Literal:
        values = typing.get_args(base)
        kinds = {type(v) for v in values}
        if kinds == {str}:
            return "BYTES", ()
        if kinds == {bool}:
            return "BOOL", ()
        if kinds == {int}:
            return _integer({"ge": min(values), "le": max(values)}), ()
        raise NotATensor(f"{_show(base)} mixes types; a tensor holds one datatype")
    if origin in _LISTS or base is list:
        args = typing.get_args(base)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise NotATensor(f"{_show(base)} is a fixed tuple; use list[...] for a tensor dimension")
        datatype, inner = tensor_type(args[0] if args else Any)
        low, high = bounds.get("min_length"), bounds.get("max_length")
        return datatype, (low if low is not None and low == high else -1, *inner)
    if base is bool:
        return "BOOL", ()
    if base is int:
        return _integer(bounds), ()
    if base is float:
        return _FLOAT_FORMATS.get(bounds.get("format"), "FP64"), ()
    if base is str:
        return "BYTES", ()
    if base is File or (isinstance(base, type) and issubclass(base, (bytes, bytearray))):
        raise NotATensor(f"{_show(base)} is a file; send files to the endpoint's own path")
    raise NotATensor(f"{_show(base)} is not a number, bool, str or list of them")


def _unwrap(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """`Annotated[X, Field(...)]` → X and its bounds (ge, le, min_length, max_length)."""
    bounds: dict[str, Any] = {}
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            for item in [extra, *getattr(extra, "metadata", ())]:
                for key in ("ge", "le", "min_length", "max_length"):
                    if getattr(item, key, None) is not None:
                        bounds[key] = getattr(item, key)
                extra = getattr(item, "json_schema_extra", None)
                if isinstance(extra, dict) and extra.get("format") in _FLOAT_FORMATS:
                    bounds["format"] = extra["format"]
    return annotation, bounds


def _integer(bounds: dict[str, Any]) -> str:
    """INT64, or the narrowest integer datatype whose range is exactly the given bounds."""
    for name, (low, high) in _RANGES.items():
        if bounds.get("ge") == low and bounds.get("le") == high:
            return name
    low, high = bounds.get("ge"), bounds.get("le")
    if isinstance(low, int) and low >= 0 and isinstance(high, int) and high > (1 << 63) - 1:
        return "UINT64"
    return "INT64"


def _show(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def _record_fields(annotation: Any) -> dict[str, Any] | None:
    """A record's keys and their types (TypedDict or pydantic model), else None."""
    base, _ = _unwrap(annotation)
    if typing_extensions.is_typeddict(base):
        return typing.get_type_hints(base, include_extras=True)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return {
            name: typing.Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            for name, field in base.model_fields.items()
        }
    return None


def model_signature(ep: Endpoint) -> ModelSignature:
    """The endpoint as a protocol model, or with `reason` set when its signature is not tensor-like."""
    name = ep.name
    if ep.stream:
        return ModelSignature(name, reason=f"endpoint {name!r} streams its answer; the protocol answers whole tensors")
    schema = ep.schema
    if not schema.params:
        return ModelSignature(name, reason=f"endpoint {name!r} takes no parameters, so it has no input tensors")
    inputs = []
    for param in schema.params:
        try:
            datatype, shape = tensor_type(param.annotation)
        except NotATensor as exc:
            return ModelSignature(name, reason=f"endpoint {name!r}: parameter {param.name!r} is no tensor: {exc}")
        inputs.append(TensorSpec(param.name, datatype, shape, param.required))
    outputs, keys = [], []
    record = _record_fields(schema.response_type)
    if record is None:
        try:
            datatype, shape = tensor_type(schema.response_type)
        except NotATensor as exc:
            return ModelSignature(name, reason=f"endpoint {name!r}: its answer is no tensor: {exc}")
        outputs.append(TensorSpec(OUTPUT, datatype, shape))
        keys.append(None)
    else:
        for key, annotation in record.items():
            try:
                datatype, shape = tensor_type(annotation)
            except NotATensor:
                continue  # e.g. a {label: probability} map beside the label: the other keys still are outputs
            outputs.append(TensorSpec(key, datatype, shape))
            keys.append(key)
        if not outputs:
            return ModelSignature(name, reason=f"endpoint {name!r}: no key of its answer is a tensor")
    return ModelSignature(name, tuple(inputs), tuple(outputs), ep.batch is not None, tuple(keys))
