"""Shared by the `sklearn:` and `onnx:` adapters: request fields generated from a model's inputs.

A model file decides the request schema (its feature or input names, types and shapes), so
these adapters build their endpoint methods at load time: a plain function whose signature is
written from the model, which `fermion.schema` then turns into the request and response models
exactly as it does for a hand-written Service.
"""

from __future__ import annotations

import inspect
import keyword
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AliasChoices, Field
from typing_extensions import TypedDict

from fermion.service import Service, endpoint

#: Batching of tabular endpoints: rows are cheap, so wait little and take many.
MAX_BATCH_SIZE = 64
MAX_WAIT_MS = 2.0
#: Above this many values a generated example is left out of the docs.
MAX_EXAMPLE_VALUES = 64


@dataclass(frozen=True)
class RequestField:
    """One request field generated from a model input: its JSON name, the model's name and its type."""

    name: str
    source: str
    annotation: Any


def field_names(names: Sequence[str]) -> list[str]:
    """Unique Python identifiers for a model's column or input names (`sepal length (cm)` → `sepal_length_cm`).

    Names that already are identifiers are kept as they are, so a DataFrame column `age` stays `age`.
    """
    taken: set[str] = set()
    result: list[str] = []
    for raw in names:
        name = str(raw)
        if not name.isidentifier():
            name = re.sub(r"\W+", "_", name).strip("_") or "field"
            if name[0].isdigit():
                name = "f_" + name
        if keyword.iskeyword(name) or name == "self":
            name += "_"
        base, count = name, 2
        while name in taken:
            name, count = f"{base}_{count}", count + 1
        taken.add(name)
        result.append(name)
    return result


def described(annotation: Any, description: str, example: Any = None) -> Any:
    """`annotation` with a description (and an example when one is given) for the docs."""
    if example is None:
        return Annotated[annotation, Field(description=description)]
    return Annotated[annotation, Field(description=description, examples=[example])]


def record_type(title: str, fields: dict[str, Any]) -> Any:
    """A JSON object type with exactly these keys (any strings: output names, class labels)."""
    return TypedDict(title, fields)  # type: ignore[operator]


def generated_method(
    name: str,
    fields: Sequence[RequestField],
    returns: Any,
    run: Callable[[Any, dict[str, Any]], Any],
    doc: str,
    *,
    batched: bool,
) -> Callable[..., Any]:
    """A method `name(self, <field>=..., ...)` whose signature is built from `fields`.

    `run(self, values)` receives the arguments as a dict keyed by field name: one list per field
    when `batched` (the endpoint is written over lists and served per item), else one value.
    """

    def method(self: Any, **values: Any) -> Any:
        return run(self, values)

    def wrap(tp: Any) -> Any:
        return list[tp] if batched else tp

    fields = [_with_alias(f) for f in fields]

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=wrap(f.annotation)) for f in fields]
    method.__signature__ = inspect.Signature(parameters, return_annotation=wrap(returns))  # type: ignore[attr-defined]
    method.__annotations__ = {**{f.name: wrap(f.annotation) for f in fields}, "return": wrap(returns)}
    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return method


def _with_alias(field: RequestField) -> RequestField:
    """The field also under the model's own name (`"sepal length (cm)"` as well as `sepal_length_cm`), in the OpenAPI
    document as `x-aliases`: requests written with the names the model was trained with validate too."""
    if field.source == field.name:
        return field
    alias = Field(
        validation_alias=AliasChoices(field.name, field.source),
        json_schema_extra={"x-aliases": [field.source]},
    )
    return RequestField(field.name, field.source, Annotated[field.annotation, alias])


def service_class(
    base: type[Service],
    title: str,
    doc: str,
    methods: dict[str, Callable[..., Any]],
    *,
    batched: bool = True,
) -> type[Service]:
    """A subclass of `base` named `title` in the docs, with `methods` as (batched) POST endpoints."""
    mark = endpoint(max_batch_size=MAX_BATCH_SIZE, max_wait_ms=MAX_WAIT_MS) if batched else endpoint
    namespace: dict[str, Any] = {"name": title, "__doc__": doc, "__module__": base.__module__}
    namespace.update({attr: mark(func) for attr, func in methods.items()})
    class_name = re.sub(r"\W+", "", title.title()) or base.__name__
    if not class_name[0].isalpha():
        class_name = base.__name__ + class_name
    return type(class_name, (base,), namespace)


def probabilities_type(keys: list[str], max_keys: int = 100) -> Any:
    """`predict_proba`'s answer per row: an object with one probability per class (or a plain mapping for many or
    clashing class names)."""
    probability = Annotated[float, Field(ge=0, le=1)]
    if len(keys) > max_keys or len(set(keys)) != len(keys):
        return dict[str, float]
    return record_type("ClassProbabilities", dict.fromkeys(keys, probability))


def listing(names: Sequence[str], limit: int = 12) -> str:
    """`a, b, c` or `a, b, ... (30 in all)` for messages and docs."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
