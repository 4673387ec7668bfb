"""The limit: a bare ASGI echo doing the same work as Fermion's (pydantic model_validate_json + orjson), on uvicorn."""

from __future__ import annotations

from typing import Any

import orjson
from _common import EchoIn, arguments, run_uvicorn
from pydantic import ValidationError

_JSON = [(b"content-type", b"application/json")]


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """POST /echo with {"text": ...} → {"output": text}; 422 on bad input, 404 elsewhere."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] != "/echo" or scope["method"] != "POST":
        status, payload = 404, b'{"error":"not found"}'
    else:
        try:
            request = EchoIn.model_validate_json(body)
            status, payload = 200, orjson.dumps({"output": request.text})
        except ValidationError as exc:
            status, payload = 422, orjson.dumps({"error": str(exc)})
    headers = [*_JSON, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    args = arguments("bare ASGI echo (the limit)")
    if args.bench != "echo":
        raise SystemExit("the bare ASGI app serves echo only; MiniLM's limit is the raw model")
    run_uvicorn(echo_app, args.port)
