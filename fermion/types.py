"""Value types that endpoints may take: `File` (an upload, or base64 in JSON)."""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Any

FILE_SCHEMA_MARK = "x-fermion-file"


_B64 = r"(?:[A-Za-z0-9+/]\s*)"
#: What `File` decodes from JSON, for the schema (so generated clients and fuzzers send real base64): an optional
#: `data:<type>;base64,` prefix, then whole groups of four characters, padded, whitespace anywhere.
BASE64_PATTERN = rf"^(data:[^,]*;base64,)?\s*({_B64}{{4}})*({_B64}{{2}}=\s*=|{_B64}{{3}}=)?\s*$"


class File:
    """An uploaded file: its bytes, and the name and content type the client sent.

    Over HTTP a `File` parameter accepts a multipart upload, or in a JSON body a base64
    string (a `data:` URL works too: its media type becomes `content_type`).
    """

    __slots__ = ("content_type", "data", "filename")

    def __init__(self, data: bytes, filename: str | None = None, content_type: str | None = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"File data must be bytes, got {type(data).__name__}")
        self.data = bytes(data)
        self.filename = filename
        self.content_type = content_type

    @property
    def size(self) -> int:
        """Number of bytes."""
        return len(self.data)

    def read(self) -> bytes:
        """The whole content, like a file object's `read()`."""
        return self.data

    def open(self) -> io.BytesIO:
        """A binary stream over the content (for libraries that want a file object)."""
        return io.BytesIO(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"File(filename={self.filename!r}, content_type={self.content_type!r}, size={self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, File) and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> File:
        """Read a file from disk."""
        import mimetypes

        with open(path, "rb") as fh:
            data = fh.read()
        name = os.path.basename(os.fspath(path))
        return cls(data, filename=name, content_type=mimetypes.guess_type(name)[0])

    @classmethod
    def _coerce(cls, value: Any) -> File:
        if isinstance(value, File):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls(bytes(value))
        if isinstance(value, str):
            return cls._from_base64(value)
        if isinstance(value, dict) and "data" in value:
            inner = cls._from_base64(value["data"]) if isinstance(value["data"], str) else cls._coerce(value["data"])
            return cls(inner.data, value.get("filename"), value.get("content_type") or inner.content_type)
        raise ValueError("expected a file: a multipart upload, or a base64 string in JSON")

    @classmethod
    def _from_base64(cls, text: str) -> File:
        content_type = None
        if text.startswith("data:"):
            header, sep, text = text.partition(",")
            if not sep or not header.endswith(";base64"):
                raise ValueError("a data: URL must be base64 encoded ('data:<type>;base64,<data>')")
            content_type = header[5:-7] or None
        try:
            return cls(base64.b64decode("".join(text.split()), validate=True), content_type=content_type)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64: send the file's bytes base64-encoded, or upload it as multipart") from None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda f: base64.b64encode(f.data).decode("ascii"), when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return {
            "type": "string",
            "contentEncoding": "base64",
            "pattern": BASE64_PATTERN,
            "description": "A file: upload it as multipart/form-data, or send its bytes base64-encoded in JSON.",
            FILE_SCHEMA_MARK: True,
        }
