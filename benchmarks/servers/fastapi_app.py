"""Plain FastAPI, written the way its docs teach: a pydantic body model, a sync route for the model."""

from __future__ import annotations

from _common import EchoIn, arguments, load_minilm, run_uvicorn
from fastapi import FastAPI


def build(bench: str) -> FastAPI:
    """The FastAPI app for one benchmark."""
    app = FastAPI()
    if bench == "echo":

        @app.post("/echo")
        async def echo(request: EchoIn) -> dict[str, str]:
            return {"output": request.text}

    else:
        model = load_minilm()

        @app.post("/embed")
        def embed(request: EchoIn) -> list[float]:  # sync: FastAPI runs it on its thread pool
            return model.encode(request.text, normalize_embeddings=True).tolist()

    return app


if __name__ == "__main__":
    args = arguments("plain FastAPI")
    run_uvicorn(build(args.bench), args.port)
