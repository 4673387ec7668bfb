"""The serving core: a Service becomes an ASGI app (app, runtime, batching, streaming) run by uvicorn (server).

It is handed a Service, never a source string: loading sources is `fermion.sources`, and the
processes that load one and serve it are in `fermion.replica`.
"""
