"""Arguments → a checked, encoded request, and an answer → a value; shared by `Client` and `AsyncClient`.

Checking happens before anything is sent: argument names and count (`TypeError`), then the values
against the endpoint's JSON schema (`RequestValidationError`). File parameters are not checked
against the schema (they travel as multipart parts), only their Python type is.
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import mimetypes
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fermion.client._errors import RequestValidationError, error_from_response
from fermion.client._schema import EndpointInfo, parse_endpoints, type_name

if TYPE_CHECKING:
    import httpx

FilePart = tuple[str, tuple[str, Any, str]]


@dataclass(frozen=True)
class PreparedCall:
    """An endpoint call ready to send: exactly one of `query`, `json` or the form (`data` + `files`) is used."""

    info: EndpointInfo
    query: list[tuple[str, str]] | None = None
    json: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: list[FilePart] | None = None


class ServiceAPI:
    """The endpoints of one service and how to call them, from its OpenAPI document."""

    def __init__(self, document: dict[str, Any], url: str) -> None:
        self.document = document
        self.url = url
        self.endpoints = parse_endpoints(document)
        self._validators: dict[str, Any] = {}

    def endpoint(self, name: str) -> EndpointInfo:
        """The endpoint called `name`; `AttributeError` (with close matches) if there is none."""
        info = self.endpoints.get(name)
        if info is None:
            known = ", ".join(sorted(self.endpoints)) or "none"
            close = difflib.get_close_matches(name, self.endpoints, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AttributeError(f"the service at {self.url} has no endpoint {name!r} (it has: {known}){hint}")
        return info

    def prepare(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, validate: bool = True) -> PreparedCall:
        """Bind, check and encode the arguments of one call."""
        info = self.endpoint(name)
        values = bind(info, args, kwargs)
        plain = {k: jsonable(v) for k, v in values.items() if k not in info.files}
        if validate:
            self._check(info, plain)
        parts = [part for key in info.files if values.get(key) is not None for part in file_parts(info.name, key, values[key])]
        if info.method == "GET":
            query = [(k, form_value(item)) for k, v in plain.items() for item in _as_list(v)]
            query += [(key, _base64(content)) for key, (_, content, _) in parts]  # no body: files go as base64 text
            return PreparedCall(info, query=query)
        if parts:
            return PreparedCall(info, data={k: form_value(v) for k, v in plain.items() if v is not None}, files=parts)
        return PreparedCall(info, json=plain)

    def _check(self, info: EndpointInfo, values: dict[str, Any]) -> None:
        validator = self._validators.get(info.name)
        if validator is None:
            validator = self._validators[info.name] = self._build_validator(info)
        from jsonschema.exceptions import best_match, relevance

        detail = []
        for error in sorted(validator.iter_errors(values), key=relevance):
            if error.validator in ("anyOf", "oneOf"):
                message = f"{error.instance!r} is not a valid {type_name(error.schema)}"
            else:
                message = best_match([error]).message
            field = ".".join(str(part) for part in error.absolute_path)
            detail.append({"field": field, "message": message, "type": str(error.validator)})
        if detail:
            raise RequestValidationError(info.name, detail)

    def _build_validator(self, info: EndpointInfo) -> Any:
        from jsonschema import Draft202012Validator

        schema = {
            "type": "object",
            "properties": {k: v for k, v in info.properties.items() if k not in info.files},
            "required": [k for k in info.required if k not in info.files],
            # refs look like "#/components/schemas/X": keep them resolvable from this root
            "components": self.document.get("components", {}),
        }
        return Draft202012Validator(schema)


def bind(info: EndpointInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional and keyword arguments → values by parameter name, as Python would bind them."""
    name, params = info.name, info.params
    if len(args) > len(params):
        takes = f"at most {len(params)} positional argument{'s' if len(params) != 1 else ''}" if params else "no arguments"
        raise TypeError(f"{name}() takes {takes} ({', '.join(params) or 'none'}) but {len(args)} were given")
    values = dict(zip(params, args, strict=False))  # len(args) <= len(params), checked above
    for key, value in kwargs.items():
        if key not in params:
            close = difflib.get_close_matches(key, params, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{name}() got an unexpected argument {key!r}; it takes: {', '.join(params) or 'no arguments'}{hint}")
        if key in values:
            raise TypeError(f"{name}() got multiple values for argument {key!r}")
        values[key] = value
    missing = [p for p in info.required if p not in values]
    if missing:
        listed = ", ".join(repr(p) for p in missing)
        raise TypeError(f"{name}() missing required argument{'s' if len(missing) > 1 else ''}: {listed}")
    return values


def jsonable(value: Any) -> Any:
    """A value as plain JSON data: pydantic models, dataclasses, dates, enums, numpy arrays, bytes (base64)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, bytes_mode="base64", fallback=_fallback)


def _fallback(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        return tolist()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON; pass lists, dicts, numbers, strings or pydantic models")


def form_value(value: Any) -> str:
    """A query or form field: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def file_parts(endpoint: str, param: str, value: Any) -> list[FilePart]:
    """Multipart parts for a File parameter: bytes, a path, a binary file object or `fermion.File` (or a list)."""
    if isinstance(value, (list, tuple)):
        return [part for item in value for part in file_parts(endpoint, param, item)]
    from fermion.types import File

    if isinstance(value, File):
        filename = value.filename or param
        return [(param, (filename, value.data, value.content_type or _guess_type(filename)))]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [(param, (param, bytes(value), "application/octet-stream"))]
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        with open(path, "rb") as fh:
            data = fh.read()
        filename = os.path.basename(path)
        return [(param, (filename, data, _guess_type(filename)))]
    if isinstance(value, io.TextIOBase):
        raise TypeError(f"{endpoint}(): {param} is a file opened in text mode; open it with open(path, 'rb')")
    if callable(getattr(value, "read", None)):
        raw_name = getattr(value, "name", None)
        filename = os.path.basename(raw_name) if isinstance(raw_name, str) else param
        return [(param, (filename, value, _guess_type(filename)))]
    hint = f"; for a file on disk pass pathlib.Path({value!r})" if isinstance(value, str) else ""
    raise TypeError(
        f"{endpoint}(): {param} takes bytes, a pathlib.Path, a binary file object or fermion.File, "
        f"not {type(value).__name__}{hint}"
    )


def _base64(content: Any) -> str:
    data = content.read() if callable(getattr(content, "read", None)) else content
    return base64.b64encode(data).decode("ascii")


def _guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def decode_answer(response: httpx.Response) -> Any:
    """The value of a read, non-streaming answer by its media type: JSON, text or bytes; `APIError` for an error status."""
    if not response.is_success:
        raise error_from_response(response)
    if not response.content:
        return None
    media = response.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return json.loads(response.content)
    if media.startswith("text/"):
        return response.text
    return response.content
