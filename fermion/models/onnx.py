"""`onnx:PATH` — an ONNX model served with ONNX Runtime (CPU), its request schema read from the model.

    fermion serve onnx:./model.onnx

Each model input becomes a request field typed from its element type and shape. When the
inputs' first dimension is the batch (dynamic, like `float32 [None, 4]`), a request carries one
item (`list[float]` of length 4) and `predict` stacks concurrent requests into one run; inputs
with a fixed batch of 1 run item by item; other inputs are sent whole. The answer maps each
output name to its value for that item (skl2onnx classifiers: `output_label` and
`output_probability`, a {label: probability} map).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from fermion.models._tabular import (
    MAX_EXAMPLE_VALUES,
    RequestField,
    described,
    field_names,
    generated_method,
    listing,
    record_type,
    service_class,
)
from fermion.models.kinds import SourceError
from fermion.models.resolve import resolve_model_dir
from fermion.responses import InvalidInput
from fermion.service import Service

#: ONNX element type → (numpy dtype, Python type).
ELEMENT_TYPES: dict[str, tuple[str, type]] = {
    "float": ("float32", float),
    "double": ("float64", float),
    "float16": ("float16", float),
    "int8": ("int8", int),
    "int16": ("int16", int),
    "int32": ("int32", int),
    "int64": ("int64", int),
    "uint8": ("uint8", int),
    "uint16": ("uint16", int),
    "uint32": ("uint32", int),
    "uint64": ("uint64", int),
    "bool": ("bool", bool),
    "string": ("object", str),
}
#: The OpenAPI `format` of float elements.
_FLOAT_FORMATS = {"float": "float", "double": "double"}
_STACK, _ONE_BY_ONE, _WHOLE = "stack", "one-by-one", "whole"

Dim = int | str | None  # fixed size, symbolic name, unknown


@dataclass(frozen=True)
class Tensor:
    """One model input or output as the request and response see it."""

    name: str  # the model's name for it
    field: str  # its request field (inputs) or answer key (outputs)
    onnx_type: str  # "tensor(float)", "seq(map(int64,tensor(float)))", ...
    shape: tuple[Dim, ...]
    per_item: bool  # its first dimension is the batch, split off per item

    @property
    def element(self) -> str:
        return self.onnx_type[len("tensor(") : -1] if self.onnx_type.startswith("tensor(") else ""

    @property
    def item_shape(self) -> tuple[Dim, ...]:
        return self.shape[1:] if self.per_item else self.shape


class OnnxModel(Service):
    """An ONNX Runtime session; subclassed per model with a `predict` endpoint generated from it."""

    def __init__(self, session: Any, inputs: list[Tensor], outputs: list[Tensor], mode: str) -> None:
        self.session = session
        self.inputs = inputs
        self.outputs = outputs
        self.mode = mode

    def run_items(self, values: dict[str, list[Any]]) -> list[dict[str, Any]]:
        """Run one answer per item: stacked into one run per input shape, or item by item."""
        import numpy as np

        count = len(values[self.inputs[0].field]) if self.inputs else 1
        items = [{t.name: self._array(t, values[t.field][i]) for t in self.inputs} for i in range(count)]
        if self.mode != _STACK:
            return [
                self._answers(self._run({k: a[None] if self.mode == _ONE_BY_ONE else a for k, a in item.items()}), 1)[0]
                for item in items
            ]
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for index, item in enumerate(items):  # items whose dynamic dimensions differ cannot share a run
            groups[tuple(a.shape for a in item.values())].append(index)
        answers: list[dict[str, Any]] = [{} for _ in items]
        for indices in groups.values():
            feed = {t.name: np.stack([items[i][t.name] for i in indices]) for t in self.inputs}
            for index, answer in zip(indices, self._answers(self._run(feed), len(indices)), strict=True):
                answers[index] = answer
        return answers

    def _array(self, tensor: Tensor, value: Any) -> Any:
        import numpy as np

        dtype = ELEMENT_TYPES[tensor.element][0]
        try:
            array = np.asarray(value, dtype=dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInput(
                f"{tensor.field}: cannot make a {tensor.element} tensor of it ({exc}); send a rectangular nested list"
            ) from None
        if array.ndim != len(tensor.item_shape):
            raise InvalidInput(
                f"{tensor.field}: expected {len(tensor.item_shape)} dimension(s), got an array of shape {list(array.shape)}"
            )
        return array

    def _run(self, feed: dict[str, Any]) -> list[Any]:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

        try:
            return self.session.run([t.name for t in self.outputs], feed)
        except (InvalidArgument, Fail, RuntimeException) as exc:
            raise InvalidInput(f"the model cannot run on this input: {_first_line(exc)}") from None

    def _answers(self, results: list[Any], count: int) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = [{} for _ in range(count)]
        for tensor, value in zip(self.outputs, results, strict=True):
            if tensor.per_item and len(value) != count:
                raise RuntimeError(
                    f"output {tensor.name!r} has {len(value)} rows for {count} inputs; its first dimension is not the batch"
                )
            for index in range(count):
                answers[index][tensor.field] = _plain(value[index] if tensor.per_item else value)
        return answers


def _plain(value: Any) -> Any:
    """A JSON-ready value: arrays as nested lists, maps with string keys."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]


def load(name: str, **options: Any) -> Service:
    """Build the Service for `onnx:PATH`."""
    if options:
        raise SourceError(f"onnx: sources do not take {', '.join('--' + k.replace('_', '-') for k in options)}")
    path = _model_file(resolve_model_dir(name, "onnx"), name)
    import onnxruntime

    session = _session(onnxruntime, path, name)
    inputs, outputs, mode = _tensors(session, name)
    return build_service(session, inputs, outputs, mode, Path(path).name)


def _model_file(found: str, name: str) -> str:
    if os.path.isdir(found):
        candidates = sorted(p for p in os.listdir(found) if p.endswith((".onnx", ".ort")))
        if "model.onnx" in candidates:
            candidates = ["model.onnx"]
        if len(candidates) != 1:
            what = f"several .onnx files ({listing(candidates)})" if candidates else "no .onnx file"
            raise SourceError(f"onnx:{name} is a folder with {what}; point at the model file: onnx:{name.rstrip('/')}/model.onnx")
        return os.path.join(found, candidates[0])
    if not found.endswith((".onnx", ".ort")):
        raise SourceError(f"onnx:{name}: expected an .onnx file, got '{Path(found).name}'")
    return found


def _session(onnxruntime: Any, path: str, name: str) -> Any:
    options = onnxruntime.SessionOptions()
    # `fermion serve` sets OMP_NUM_THREADS to this worker's share of the cores (--compute-threads)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    options.intra_op_num_threads = int(threads) if threads.isdigit() and int(threads) > 0 else 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
    try:
        return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SourceError(f"onnx:{name}: ONNX Runtime cannot load it: {_first_line(exc)}") from None


def _dims(shape: Any) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, str) or d is None else (int(d) if int(d) > 0 else None) for d in (shape or ()))


def _tensors(session: Any, name: str) -> tuple[list[Tensor], list[Tensor], str]:
    """Inputs and outputs with their request/answer names, and how items are run."""
    raw_inputs, raw_outputs = session.get_inputs(), session.get_outputs()
    for arg in raw_inputs:
        element = arg.type[len("tensor(") : -1] if arg.type.startswith("tensor(") else None
        if element not in ELEMENT_TYPES:
            raise SourceError(
                f"onnx:{name}: input '{arg.name}' is a {arg.type}; Fermion serves tensor inputs of numeric, bool or string type"
            )
    shapes = [_dims(arg.shape) for arg in raw_inputs]
    batch_dims = {shape[0] for shape in shapes if shape}
    batchable = bool(raw_inputs) and all(
        shape and (shape[0] is None or isinstance(shape[0], str) or shape[0] == 1) for shape in shapes
    )
    dynamic = batchable and len(batch_dims) == 1 and 1 not in batch_dims
    batch_dim = next(iter(batch_dims)) if len(batch_dims) == 1 else 1

    def output_per_item(arg: Any) -> bool:
        if not batchable:
            return False
        if arg.type.startswith("seq("):
            return True  # e.g. skl2onnx's ZipMap: one {label: probability} per row
        shape = _dims(arg.shape)
        return bool(shape) and (shape[0] == batch_dim or shape[0] == 1)

    outputs_per_item = [output_per_item(arg) for arg in raw_outputs]
    mode = _STACK if dynamic and all(outputs_per_item) else (_ONE_BY_ONE if batchable else _WHOLE)
    inputs = [
        Tensor(arg.name, field, arg.type, shape, mode != _WHOLE)
        for arg, field, shape in zip(raw_inputs, field_names([a.name for a in raw_inputs]), shapes, strict=True)
    ]
    outputs = [
        Tensor(arg.name, arg.name, arg.type, _dims(arg.shape), per)
        for arg, per in zip(raw_outputs, outputs_per_item, strict=True)
    ]
    return inputs, outputs, mode


def _nested(item: Any, dims: tuple[Dim, ...], constrained: bool) -> Any:
    for dim in reversed(dims):
        item = (
            Annotated[list[item], Field(min_length=dim, max_length=dim)] if constrained and isinstance(dim, int) else list[item]
        )
    return item


def _element_annotation(element: str) -> Any:
    import numpy as np

    dtype, python = ELEMENT_TYPES[element]
    if python is int:
        info = np.iinfo(dtype)
        return Annotated[int, Field(ge=int(info.min), le=int(info.max))]
    if element in _FLOAT_FORMATS:  # OpenAPI's number formats; the Open Inference Protocol reads FP32/FP64 from them
        return Annotated[float, Field(json_schema_extra={"format": _FLOAT_FORMATS[element]})]
    return python


def _example(element: str, dims: tuple[Dim, ...]) -> Any:
    sizes = [d if isinstance(d, int) else 1 for d in dims]
    total = 1
    for size in sizes:
        total *= size
    if total > MAX_EXAMPLE_VALUES:
        return None
    value: Any = {"bool": False, "string": "hello"}.get(element, 0 if ELEMENT_TYPES[element][1] is int else 0.0)
    for size in reversed(sizes):
        value = [value] * size
    return value


def _shape_text(dims: tuple[Dim, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _output_annotation(tensor: Tensor) -> Any:
    if tensor.element in ELEMENT_TYPES:
        return _nested(_element_annotation(tensor.element), tensor.item_shape, constrained=False)
    if tensor.onnx_type.startswith("seq(map(") and tensor.onnx_type.endswith(",tensor(float)))"):
        return dict[str, float]
    return Any


def build_service(session: Any, inputs: list[Tensor], outputs: list[Tensor], mode: str, filename: str) -> Service:
    """The Service for a session: one field per input, one answer key per output."""
    fields = []
    for tensor in inputs:
        dims = tensor.item_shape
        annotation = _nested(_element_annotation(tensor.element), dims, constrained=True)
        text = f"Input '{tensor.name}': {tensor.element} {_shape_text(dims)}" + (" per item." if tensor.per_item else ".")
        fields.append(RequestField(tensor.field, tensor.name, described(annotation, text, _example(tensor.element, dims))))
    answer = record_type("Outputs", {t.field: _output_annotation(t) for t in outputs})
    batched = mode != _WHOLE

    def run(self: OnnxModel, values: dict[str, Any]) -> Any:
        if batched:
            return self.run_items(values)
        return self.run_items({k: [v] for k, v in values.items()})[0]

    described_inputs = "; ".join(f"{t.name} {t.element} {_shape_text(t.shape)}" for t in inputs)
    described_outputs = "; ".join(f"{t.name} {t.element or t.onnx_type} {_shape_text(t.shape)}" for t in outputs)
    how = {
        _STACK: "Concurrent requests are stacked into one model run.",
        _ONE_BY_ONE: "The model takes a batch of 1, so items run one by one.",
        _WHOLE: "The model's inputs have no batch dimension, so each request sends whole tensors.",
    }[mode]
    doc = f"Run the model on one item and return each output by name.\n\n{how}"
    meta = session.get_modelmeta()
    summary = (
        f"ONNX model {filename}"
        + (f" (from {meta.producer_name})" if meta.producer_name else "")
        + ", served with ONNX Runtime on CPU."
    )
    if meta.description:
        summary += " " + meta.description.strip()
    summary += f" Inputs: {described_inputs}. Outputs: {described_outputs}."
    method = generated_method("predict", fields, answer, run, doc, batched=batched)
    return service_class(OnnxModel, Path(filename).stem, summary, {"predict": method}, batched=batched)(
        session, inputs, outputs, mode
    )
