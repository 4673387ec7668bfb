"""A batch's rows: which request fields an endpoint takes, each row as a request body, the results file, the output.

The results file (`results.jsonl`) is the job's checkpoint: one line per answered row, appended as the
answer comes, `{"row": i, "status": 200, "output": ...}` or `{"row": i, "status": 422, "error": "..."}`.
A resumed job reads it, cuts off a last line that a kill left half-written, and runs only the rows it
does not name: no row is written twice, none is skipped. The output dataset is built from it at the
end, in row order: the inputs, the answer's fields, and an `error` column.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fermion.platform.errors import Invalid
from fermion.serving.openapi import is_file_schema

if TYPE_CHECKING:
    from fermion.data import DatasetStore, DatasetVersion


@dataclass(frozen=True)
class RequestShape:
    """What one endpoint's request needs from a row: the fields sent, and the one that takes a file."""

    fields: list[str]
    file_field: str | None


def request_shape(document: dict[str, Any], deployment: str, endpoint: str, version: DatasetVersion) -> RequestShape:
    """Match an endpoint's request schema (the replica's OpenAPI document) to a dataset version's columns.

    A table's columns fill the fields of the same name (other columns are kept in the output, not sent);
    an image set's image fills the endpoint's one file field. A required field no column fills is refused.
    """
    paths = document.get("paths", {})
    operation = paths.get(f"/{endpoint}", {}).get("post")
    if operation is None:
        known = sorted(p.lstrip("/") for p, item in paths.items() if "post" in item and not p.startswith(("/v2", "/requests")))
        raise Invalid(f"deployment {deployment!r} has no POST endpoint {endpoint!r}; its endpoints: {', '.join(known) or 'none'}")
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = document.get("components", {}).get("schemas", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    properties: dict[str, Any] = schema.get("properties", {})
    required = [name for name in properties if name in set(schema.get("required", ()))]  # in the signature's order
    files = [name for name, prop in properties.items() if is_file_schema(prop)]
    if version.kind == "images":
        if len(files) != 1:
            raise Invalid(
                f"{version.ref} is an image set, so endpoint {endpoint!r} of {deployment!r} needs exactly one file or "
                f"image field; it has {len(files)} ({', '.join(files) or 'none'})"
            )
        fields, file_field = [], files[0]
        missing = [name for name in required if name != file_field]
    else:
        columns = [c["name"] for c in version.columns]
        fields, file_field = [name for name in properties if name in columns], None
        missing = [name for name in required if name not in fields]
    if missing:
        have = "an image per row" if version.kind == "images" else f"columns {', '.join(c['name'] for c in version.columns)}"
        raise Invalid(
            f"endpoint {endpoint!r} of {deployment!r} needs {', '.join(repr(m) for m in missing)}, which {version.ref} "
            f"does not have ({have}); add those columns to the dataset, or pick another endpoint with --endpoint"
        )
    if not fields and file_field is None:
        raise Invalid(f"no column of {version.ref} is a field of endpoint {endpoint!r} of {deployment!r}: nothing to send")
    return RequestShape(fields, file_field)


class BatchInputs:
    """A dataset version's rows as request bodies and as the input columns of the output."""

    def __init__(self, datasets: DatasetStore, version: DatasetVersion, shape: RequestShape) -> None:
        self.shape = shape
        if version.kind == "images":
            root = version.data_path
            self.images = datasets.image_files(version)
            self.records = [{"image": p.relative_to(root).as_posix(), "label": label} for p, label in self.images]
        else:
            frame = datasets.load_table(version)
            self.images = []
            # Through JSON: missing values become null and numpy numbers plain ones.
            self.records = json.loads(frame.to_json(orient="records", date_format="iso"))

    def __len__(self) -> int:
        return len(self.records)

    def body(self, row: int) -> bytes:
        """The request body for `row` (reads the image file of an image set)."""
        if self.shape.file_field is not None:
            data = self.images[row][0].read_bytes()
            return orjson.dumps({self.shape.file_field: base64.b64encode(data).decode("ascii")})
        record = self.records[row]
        return orjson.dumps({name: record[name] for name in self.shape.fields})


def result_line(row: int, status: int, answer: bytes, max_bytes: int) -> bytes:
    """The results file's line for one answered row: its output, or its error."""
    if status < 400 and len(answer) > max_bytes:
        line: dict[str, Any] = {"row": row, "status": status, "error": f"the answer is {len(answer)} bytes, over {max_bytes}"}
    elif status < 400:
        try:
            line = {"row": row, "status": status, "output": orjson.loads(answer)}
        except orjson.JSONDecodeError:
            line = {"row": row, "status": status, "output": answer.decode("utf-8", "replace")}
    else:
        line = {"row": row, "status": status, "error": _error_message(answer)}
    return orjson.dumps(line) + b"\n"


def _error_message(answer: bytes) -> str:
    try:
        body = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return answer.decode("utf-8", "replace")[:1000]
    if isinstance(body, dict):
        found = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(found, str):
            return found[:1000]
    return json.dumps(body)[:1000]


def read_results(path: Path) -> dict[int, dict[str, Any]]:
    """The rows the results file names, each once; a half-written last line (a kill mid-write) is cut off the file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as file:
            file.truncate(len(whole))
            os.fsync(file.fileno())
    results: dict[int, dict[str, Any]] = {}
    for line in whole.splitlines():
        entry = orjson.loads(line)
        results.setdefault(int(entry["row"]), entry)
    return results


def write_output(inputs: BatchInputs, results: dict[int, dict[str, Any]], target: Path) -> None:
    """The output table (JSON lines): each row's inputs, its answer's fields and its error, in row order."""
    taken = {*inputs.records[0], "error"} if inputs.records else {"error"}
    with open(target, "wb") as file:
        for row, record in enumerate(inputs.records):
            entry = results[row]
            file.write(orjson.dumps({**record, **_output_columns(entry.get("output"), taken), "error": entry.get("error")}))
            file.write(b"\n")


def _output_columns(output: Any, taken: set[str]) -> dict[str, Any]:
    """An answer as columns: an object's fields (prefixed `output.` where an input column has the name), else `output`."""
    if output is None:  # a row that failed: its output columns stay empty
        return {}
    if not isinstance(output, dict):
        return {"output": _cell(output)}
    return {(f"output.{key}" if key in taken else key): _cell(value) for key, value in output.items()}


def _cell(value: Any) -> Any:
    """A table cell: lists and objects as JSON text, so every column holds plain values."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value
