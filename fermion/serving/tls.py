"""TLS for a listening server: the certificate and key are checked before anything binds, and an
optional plain-HTTP port answers every request with a redirect to the HTTPS one.

`fermion serve` and `fermion up --gateway python` hand the files to uvicorn; `fermion up` with
HAProxy in front hands HAProxy one PEM file with both (see fermion/platform/gateway/haproxy.py).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fermion.serving.config import ServeConfig


class TLSFileError(ValueError):
    """The certificate or key cannot serve TLS; the message names the file and what to do."""


def check_tls_files(cert: str | Path | None, key: str | Path | None) -> None:
    """Raise `TLSFileError` unless both are None or `cert` and `key` load as a certificate and its key."""
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise TLSFileError("give both --tls-cert (the certificate) and --tls-key (its private key), or neither")
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            Path(path).open("rb").close()
        except IsADirectoryError:
            raise TLSFileError(f"{option} {path} is a folder; give a PEM file") from None
        except OSError as exc:
            raise TLSFileError(f"{option} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callback, so an encrypted key fails here instead of prompting on the terminal.
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        raise TLSFileError(f"cannot serve TLS with --tls-cert {cert} and --tls-key {key}: {_why(exc)}") from None


def _why(exc: ssl.SSLError) -> str:
    reason = (exc.reason or "").upper()
    if "MISMATCH" in reason:
        return "the key does not belong to the certificate"
    if "DECRYPT" in reason or "PASSWORD" in reason or "BAD_PASSWORD" in reason:
        return "the key is encrypted; give an unencrypted key (e.g. `openssl pkey -in KEY -out plain.key`)"
    return f"{exc.reason or exc}; give a PEM certificate (its chain after it) and the PEM private key that belongs to it"


def combined_pem(cert: str | Path, key: str | Path) -> str:
    """The certificate (chain) followed by its key, as one PEM text (the form HAProxy's `crt` takes)."""
    return Path(cert).read_text().rstrip("\n") + "\n" + Path(key).read_text().rstrip("\n") + "\n"


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


class HTTPSRedirect:
    """ASGI app that answers every plain-HTTP request with 308 to the same path and query over HTTPS."""

    def __init__(self, https_port: int, default_host: str) -> None:
        self.https_port = https_port
        self.default_host = default_host

    def location(self, host_header: str, target: bytes) -> str | None:
        """The https:// URL for a request with this Host header and target; None for a target that is no path."""
        if not target.startswith(b"/") or any(byte <= 0x20 or byte >= 0x7F for byte in target):
            return None
        found = _HOST.match(host_header)
        host = found.group(1) if found else self.default_host
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{host}{port}{target.decode('ascii')}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or [])
        target = scope.get("raw_path") or scope["path"].encode("latin-1")
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        location = self.location(headers.get(b"host", b"").decode("latin-1"), target)
        if location is None:
            status, extra, body = 400, [], b"bad request target\n"
        else:
            status, extra, body = 308, [(b"location", location.encode("ascii"))], b""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*extra, (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def redirecting_to_https(sock: socket.socket, https_port: int, default_host: str, log_level: str = "info") -> Iterator[None]:
    """Serve `HTTPSRedirect` on `sock` (already bound) in a thread for the length of the block."""
    from fermion.serving.server import uvicorn_server

    server = uvicorn_server(HTTPSRedirect(https_port, default_host), ServeConfig(graceful_timeout=1, log_level=log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="https-redirect", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()
