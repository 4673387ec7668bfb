"""`fermion call URL ENDPOINT key=value ...`: call an endpoint and print the answer as JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fermion.cli.app import app, fail, renamed_options
from fermion.cli.platform import CaCertOption


def _is_string_schema(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "string":
        return True
    return any(s.get("type") == "string" for s in schema.get("anyOf", ()))


def parse_assignments(pairs: list[str], properties: dict[str, dict[str, Any]], files: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` words → arguments: JSON where the field is not a string, `@path` for file fields."""
    from fermion.types import File

    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not key=value (use --body for a whole JSON body)")
        if key in files:
            path = raw[1:] if raw.startswith("@") else raw
            if not os.path.isfile(path):
                raise ValueError(f"{key}: no file {path!r}; give a path like {key}=@photo.jpg")
            kwargs[key] = File.from_path(Path(path))
            continue
        if _is_string_schema(properties.get(key, {})):
            kwargs[key] = raw
            continue
        try:
            kwargs[key] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[key] = raw
    return kwargs


def _print(value: Any) -> None:
    if isinstance(value, bytes):  # a raw answer (an image, audio): to a file or pipe as is
        if sys.stdout.isatty():
            print(f"({len(value)} bytes of binary data; redirect to a file to save them: > out.bin)", flush=True)
        else:
            sys.stdout.buffer.write(value)
            sys.stdout.flush()
    elif isinstance(value, str):
        print(value, flush=True)
    else:
        print(json.dumps(value, ensure_ascii=False, indent=None if _is_small(value) else 2), flush=True)


def _is_small(value: Any) -> bool:
    return len(json.dumps(value, ensure_ascii=False)) <= 100


@app.command(cls=renamed_options({"--json": "--body", "--timeout": "--request-timeout"}))
def call(
    url: Annotated[str, typer.Argument(help="Base URL of the service, e.g. http://127.0.0.1:8000.")],
    endpoint: Annotated[str, typer.Argument(help="Endpoint name, e.g. predict.")],
    assignments: Annotated[list[str] | None, typer.Argument(help="Arguments as key=value; file fields as key=@path.")] = None,
    json_body: Annotated[str | None, typer.Option("--body", help="All arguments as one JSON object.")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (default: $FERMION_TOKEN).")] = None,
    timeout: Annotated[float, typer.Option("--request-timeout", help="Seconds to wait for the answer.")] = 60.0,
    ca_cert: CaCertOption = None,
) -> None:
    """Call ENDPOINT of the service at URL and print the answer (streams print as they arrive)."""
    from fermion.client import APIError, CACertError, Client

    try:
        client = Client(url, token=token or os.environ.get("FERMION_TOKEN"), timeout=timeout, ca_cert=ca_cert)
    except APIError as exc:
        fail(str(exc))
    except CACertError as exc:
        fail(str(exc), 2)
    except ValueError as exc:
        fail(f"{url} is not a usable URL: {exc}", 2)
    with client:
        info = client.endpoints.get(endpoint)
        if info is None:
            fail(f"{client.url} has no endpoint {endpoint!r}; it has: {', '.join(client.endpoints) or 'none'}", 2)
        try:
            kwargs: dict[str, Any] = {}
            if json_body:
                loaded = json.loads(json_body)
                if not isinstance(loaded, dict):
                    raise ValueError('--body takes a JSON object, like \'{"text": "hi"}\'')
                kwargs.update(loaded)
            kwargs.update(parse_assignments(assignments or [], info.properties, info.files))
        except (ValueError, json.JSONDecodeError) as exc:
            fail(str(exc), 2)
        try:
            result = client.call(endpoint, **kwargs)
            if info.stream:
                for item in result:
                    _print(item)
            else:
                _print(result)
        except APIError as exc:
            fail(str(exc))
        except (TypeError, ValueError) as exc:
            fail(str(exc), 2)
