"""The serving core: a Service becomes an ASGI app (app, runtime, batching, streaming) run by uvicorn (server, worker)."""
