"""File uploads: a `File` parameter takes a multipart upload, or base64 in JSON.

fermion serve examples/upload.py
curl http://127.0.0.1:8000/describe -F upload=@README.md
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import Field

from fermion import File, Service, endpoint


class Files(Service):
    """Describes uploaded files."""

    @endpoint
    def describe(self, upload: File, preview_bytes: Annotated[int, Field(ge=0, le=1024)] = 16) -> dict[str, object]:
        """Size, SHA-256, type and the first bytes of a file.

        Args:
            upload: The file.
            preview_bytes: How many leading bytes to show.
        """
        data = upload.read()
        return {
            "filename": upload.filename,
            "content_type": upload.content_type,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "preview": data[:preview_bytes].decode("utf-8", errors="replace"),
        }

    @endpoint
    def size(self, upload: File) -> int:
        """Number of bytes in the file."""
        return upload.size
