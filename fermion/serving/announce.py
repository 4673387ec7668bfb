"""How a replica says where it serves: a banner line for people, a port file for programs.

`fermion serve --port-file PATH` writes the port file as soon as its socket listens, before
`setup()` has run: it says where the replica is, not that it is ready (`/readyz` says that). With
`--workers N` the parent process writes it, once: it owns the socket the workers share. The file is
written to a temporary file in the same folder and renamed over PATH, so a reader sees either no
file or a whole one; the replica removes it when it exits.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

#: The port file's format; a reader refuses another version rather than guess at its fields.
PORT_FILE_VERSION = 1


def connect_host(host: str) -> str:
    """The host to connect to a server listening on `host` (any-address → loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return "[::1]" if host == "::" else host


def announce_line(base_url: str) -> str:
    """The banner line, for people, that says where `fermion serve` (or `fermion up`) listens."""
    return f"  API     {base_url}"


@dataclass(frozen=True)
class PortFile:
    """What a port file says: where a replica listens, and which process listens there."""

    url: str
    scheme: str
    port: int
    pid: int
    version: int = PORT_FILE_VERSION
    #: The Unix socket it also listens on (`--unix-socket`), else None.
    unix_socket: str | None = None


def write_port_file(path: str | os.PathLike[str], record: PortFile) -> None:
    """Write `record` to `path` as JSON, atomically: a temporary file in its folder, renamed over it."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(record), fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_port_file(path: str | os.PathLike[str]) -> PortFile | None:
    """The port file at `path`; None while there is none. A file in another format raises ValueError."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
        if doc["version"] != PORT_FILE_VERSION:
            raise ValueError(f"{path} is a version {doc['version']!r} port file; this Fermion reads version {PORT_FILE_VERSION}")
        return PortFile(
            url=doc["url"], scheme=doc["scheme"], port=doc["port"], pid=doc["pid"], unix_socket=doc.get("unix_socket")
        )
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a Fermion port file") from None


def remove_port_file(path: str | os.PathLike[str], pid: int) -> None:
    """Delete the port file at `path` if process `pid` wrote it (a newer server may have replaced it)."""
    try:
        record = read_port_file(path)
    except (OSError, ValueError):
        return
    if record is not None and record.pid == pid:
        Path(path).unlink(missing_ok=True)
