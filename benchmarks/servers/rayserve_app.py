"""Ray Serve: deploys echo or MiniLM (serve.batch 32 / 10 ms) on a running local Ray head, then waits.

The suite starts the head (`ray start --head --block` on 127.0.0.1, free ports) and this driver,
and stops both process trees by PID. max_ongoing_requests=100 (the default 5 caps throughput).
"""

from __future__ import annotations

import os
import time
from typing import Any

from _common import EchoIn, arguments, load_minilm
from ray import serve
from starlette.requests import Request


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 1})
class Echo:
    """{"text": ...} → {"output": text}."""

    async def __call__(self, request: Request) -> dict[str, str]:
        return {"output": EchoIn.model_validate_json(await request.body()).text}


@serve.deployment(max_ongoing_requests=100, ray_actor_options={"num_cpus": 1})
class Embed:
    """{"text": ...} → the 384 floats, batched by serve.batch."""

    def __init__(self) -> None:
        self.model = load_minilm()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def embed(self, texts: list[str]) -> list[Any]:
        vectors = self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)
        return [v.tolist() for v in vectors]

    async def __call__(self, request: Request) -> list[float]:
        return await self.embed(EchoIn.model_validate_json(await request.body()).text)


if __name__ == "__main__":
    import ray

    args = arguments("Ray Serve")
    ray.init(address=os.environ["FERMION_BENCH_RAY_ADDRESS"], log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    if args.bench == "echo":
        serve.run(Echo.bind(), name="echo", route_prefix="/echo")
    else:
        serve.run(Embed.bind(), name="embed", route_prefix="/embed")
    print("deployed", flush=True)
    while True:
        time.sleep(3600)
