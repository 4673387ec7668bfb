"""Signature → schema: an endpoint's parameters and return annotation become pydantic models.

A batched endpoint is written over lists (`text: list[str]`) but served per item, so its
request and response schemas are built from the list's item types.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from fermion.definition import BatchOptions, DefinitionError
from fermion.types import File

_SEQUENCE_ORIGINS = {list, cabc.Sequence, cabc.MutableSequence, tuple}
_STREAM_ORIGINS = {
    cabc.Iterator,
    cabc.Iterable,
    cabc.Generator,
    cabc.AsyncIterator,
    cabc.AsyncIterable,
    cabc.AsyncGenerator,
}
_REQUEST_CONFIGS = {
    extra: ConfigDict(extra=extra, arbitrary_types_allowed=True, protected_namespaces=())  # type: ignore[typeddict-item]
    for extra in ("forbid", "ignore")
}


@dataclass(frozen=True)
class Param:
    """One request field: its per-item type and default (`inspect.Parameter.empty` when required)."""

    name: str
    annotation: Any
    default: Any
    is_file: bool

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass(frozen=True)
class EndpointSchema:
    """The wire contract of one endpoint, per item."""

    params: tuple[Param, ...]
    request_model: type[BaseModel]
    response_type: Any
    response_model: type[BaseModel]

    @property
    def file_params(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if p.is_file)

    def validate_json(self, body: bytes) -> dict[str, Any]:
        """Validate a JSON body into keyword arguments; raises pydantic.ValidationError."""
        return self.request_model.model_validate_json(body or b"{}").__dict__

    def validate_mapping(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validate already-decoded fields (query string, form) into keyword arguments."""
        return self.request_model.model_validate(data).__dict__


def camel(name: str) -> str:
    """`embed_text` → `EmbedText` (used for schema names)."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-\s]+", name) if part)


def _type_hints(func: Any, where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except NameError as exc:
        raise DefinitionError(f"{where}: cannot resolve a type annotation ({exc}); import the type in the module") from None


def _strip_annotated(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


def _item_of_sequence(tp: Any) -> Any | None:
    base = _strip_annotated(tp)
    origin = typing.get_origin(base)
    if origin in _SEQUENCE_ORIGINS:
        args = typing.get_args(base)
        if origin is tuple:
            return args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return args[0] if args else Any
    if base is list:
        return Any
    return None


def _stream_item(tp: Any) -> Any:
    base = _strip_annotated(tp)
    if typing.get_origin(base) in _STREAM_ORIGINS:
        args = typing.get_args(base)
        return args[0] if args else Any
    return Any


_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?\s*:\s*(.+)$")


def param_descriptions(doc: str) -> dict[str, str]:
    """Read `name: description` lines from a Google-style `Args:` section of a docstring."""
    match = _ARGS_SECTION.search(doc)
    if not match:
        return {}
    found: dict[str, str] = {}
    current: str | None = None
    arg_indent = 0
    for line in doc[match.end() :].splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            break
        indent = len(line) - len(line.lstrip())
        arg = _ARG_LINE.match(line)
        if arg and (current is None or indent <= arg_indent):
            current, arg_indent = arg.group(1), indent
            found[current] = arg.group(2).strip()
        elif current is not None and indent > arg_indent:  # a continuation line
            found[current] += " " + line.strip()
    return found


def alternatives(annotation: Any) -> list[Any]:
    """`Annotated[X, ...]` → [X]; `X | Y | None` → [X, Y]."""
    annotation = _strip_annotated(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) if arg is not type(None) for a in alternatives(arg)]
    return [annotation]


def accepts_collection(annotation: Any) -> bool:
    """Whether the type takes a list (so a lone query-string value must become a one-item list)."""
    return any((typing.get_origin(a) or a) in (list, tuple, set, frozenset) for a in alternatives(annotation))


def wants_json(annotation: Any) -> bool:
    """Whether a form or query value of this type should be parsed as JSON first (containers, models)."""
    for a in alternatives(annotation):
        origin = typing.get_origin(a) or a
        if isinstance(origin, type) and (issubclass(origin, (list, dict, tuple, set)) or hasattr(origin, "model_validate")):
            return True
    return False


def _is_file(tp: Any) -> bool:
    base = _strip_annotated(tp)
    if base is File:
        return True
    return any(_strip_annotated(arg) is File for arg in typing.get_args(base))


class EndpointSignature(Protocol):
    """What the schema is built from: the parts of a `fermion.service.Endpoint` this module reads."""

    name: str
    func: cabc.Callable[..., Any]
    stream: bool
    batch: BatchOptions | None
    extra: str


def build_endpoint_schema(ep: EndpointSignature) -> EndpointSchema:
    """Derive the per-item request and response models from an endpoint's signature."""
    where = f"endpoint {ep.name!r}"
    hints = _type_hints(ep.func, where)
    signature = inspect.signature(ep.func)
    descriptions = param_descriptions(inspect.getdoc(ep.func) or "")
    params: list[Param] = []
    for index, (pname, parameter) in enumerate(signature.parameters.items()):
        if index == 0 and pname in ("self", "cls"):
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise DefinitionError(f"{where}: *args and **kwargs cannot become a request schema; name each parameter")
        annotation = hints.get(pname, Any)
        if ep.batch is not None:
            item = _item_of_sequence(annotation)
            if item is None:
                raise DefinitionError(
                    f"{where} is batched (max_batch_size={ep.batch.max_batch_size}), so it receives a list per "
                    f"parameter: annotate it as `{pname}: list[...]` (got {annotation!r})"
                )
            annotation = item  # a default, if any, is each item's default: `normalize: list[bool] = True`
        params.append(Param(pname, annotation, parameter.default, _is_file(annotation)))

    fields: dict[str, Any] = {}
    for p in params:
        default = ... if p.required else p.default
        description = descriptions.get(p.name)
        fields[p.name] = (p.annotation, Field(default, description=description) if description else default)
    stem = camel(ep.name)
    try:
        request_model = create_model(f"{stem}Request", __config__=_REQUEST_CONFIGS[ep.extra], **fields)
    except Exception as exc:  # pydantic says which type it cannot handle
        raise DefinitionError(f"{where}: cannot build a request schema: {exc}") from None

    returns = hints.get("return", Any)
    if ep.stream:
        response_type = _stream_item(returns)
    elif ep.batch is not None:
        item = _item_of_sequence(returns)
        response_type = Any if item is None else item
    else:
        response_type = returns
    if response_type is type(None):
        response_type = None
    try:
        response_model = create_model(f"{stem}Response", __base__=RootModel[response_type])  # type: ignore[valid-type]
    except Exception as exc:
        raise DefinitionError(f"{where}: cannot build a response schema from {response_type!r}: {exc}") from None
    return EndpointSchema(tuple(params), request_model, response_type, response_model)


def example_value(schema: dict[str, Any], components: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A plausible value for a JSON schema, for snippets and try-it forms."""
    if depth > 6:
        return None
    if "$ref" in schema and components is not None:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example_value(components.get(name, {}), components, depth + 1)
    if "default" in schema:
        return schema["default"]
    if "examples" in schema and schema["examples"]:
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return example_value(options[0], components, depth + 1)
    kind = schema.get("type")
    if schema.get("x-fermion-file"):
        return "aGVsbG8="
    if kind == "string":
        return "hello"
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return [example_value(schema.get("items", {}), components, depth + 1)]
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: example_value(v, components, depth + 1) for k, v in props.items() if k in required}
    return None
