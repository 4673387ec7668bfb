"""A tiny real HTTP server for client tests: it records request headers and serves hand-written answers
(slow, cut-off, odd or gated streams) that a well-behaved Fermion server never produces on demand.

Everything is served under a path prefix, the way a gateway serves `http://host/run/NAME/...`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/run/demo"


def _operation(name: str, params: dict[str, dict[str, Any]], *, stream: bool = False) -> dict[str, Any]:
    return {
        "operationId": name,
        "summary": f"The {name} endpoint.",
        "x-fermion": {"endpoint": name, "stream": stream, "batch": None, "files": [], "params": list(params)},
        "requestBody": {
            "required": bool(params),
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name.title()}Request"}}},
        },
        "responses": {"200": {"description": "Success", "content": {"application/json": {"schema": {}}}}},
    }


_ENDPOINTS: dict[str, tuple[dict[str, dict[str, Any]], bool]] = {
    "whoami": ({"note": {"type": "string", "default": ""}}, False),
    "slow": ({"seconds": {"type": "number"}}, False),
    "broken": ({}, False),
    "gated": ({}, True),
    "odd": ({}, True),
    "cut": ({}, True),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Stub", "version": "0"},
    "paths": {f"/{name}": {"post": _operation(name, params, stream=stream)} for name, (params, stream) in _ENDPOINTS.items()},
    "components": {
        "schemas": {
            f"{name.title()}Request": {
                "type": "object",
                "properties": params,
                "required": [p for p, s in params.items() if "default" not in s],
                "additionalProperties": False,
            }
            for name, (params, _) in _ENDPOINTS.items()
        }
    },
}

# Comments, CRLF line ends, multi-line data, an unknown event type, then an error with its own status.
ODD_STREAM = (
    b": keep-alive\r\n\r\n"
    b'data: {"a":\r\ndata: 1}\r\n\r\n'
    b"event: progress\r\ndata: 50\r\n\r\n"
    b'data: "two"\r\n\r\n'
    b'event: error\r\ndata: {"error": "model unloaded", "request_id": "r-42", "status": 503}\r\n\r\n'
)


@dataclass
class StubServer:
    """The running stub: its base URL (with the prefix) and what it saw."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    ready: bool = False
    gate: threading.Event = field(default_factory=threading.Event)
    gate_opened_in_time: list[bool] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    stub: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _json(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-request-id", "stub-id")
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> str | None:
        self.stub.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers.items())})
        return self.path[len(PREFIX) :] if self.path.startswith(PREFIX + "/") else None

    def do_GET(self) -> None:
        route = self._route()
        if route == "/openapi.json":
            self._json(200, OPENAPI)
        elif route == "/readyz":
            self._json(200 if self.stub.ready else 503, {"status": "ready" if self.stub.ready else "starting"})
        else:
            self._json(404, {"error": f"no route {self.path}", "request_id": "stub-404"})

    def do_POST(self) -> None:
        route = self._route()
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if route == "/whoami":
            self._json(200, {"authorization": self.headers.get("authorization"), "x-team": self.headers.get("x-team"), **body})
        elif route == "/slow":
            time.sleep(body["seconds"])
            self._json(200, "late")
        elif route == "/broken":
            page = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(502)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        elif route in ("/gated", "/odd", "/cut"):
            self._stream(route)
        else:
            self._json(404, {"error": f"no route {self.path}", "request_id": "stub-404"})

    def _stream(self, route: str) -> None:
        # HTTP/1.0 without a length: the body ends when the connection closes
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if route == "/odd":
            self.wfile.write(ODD_STREAM)
        elif route == "/cut":
            self.wfile.write(b"data: 1\n\n")
        else:
            self.wfile.write(b"data: 1\n\n")
            self.wfile.flush()
            # the client must hand over item 1 (and the test open the gate) before item 2 exists
            self.stub.gate_opened_in_time.append(self.stub.gate.wait(5))
            self.wfile.write(b"data: 2\n\nevent: end\ndata: {}\n\n")


@contextmanager
def stub_server() -> Iterator[StubServer]:
    """Serve the stub on a free port in a thread; always shut down afterwards."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    stub = StubServer(f"http://127.0.0.1:{httpd.server_address[1]}{PREFIX}")
    httpd.RequestHandlerClass = type("Handler", (_Handler,), {"stub": stub})
    thread = threading.Thread(target=httpd.serve_forever, name="client-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        stub.gate.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
