"""BentoML services for the benchmark: `bentoml serve bentoml_app:Echo` (or :Embed).

BentoML validates the body against the API's signature (a text field), like every peer. Its
batchable API takes a list per request, so MiniLM requests here send {"text": ["..."]}.
"""

from __future__ import annotations

import bentoml
from _common import load_minilm


@bentoml.service(workers=1)
class Echo:
    """{"text": ...} → {"output": text}."""

    @bentoml.api
    async def echo(self, text: str) -> dict[str, str]:
        return {"output": text}


@bentoml.service(workers=1)
class Embed:
    """{"text": [...]} → one vector per sentence; BentoML batches adaptively, at most 32 sentences per call."""

    def __init__(self) -> None:
        self.model = load_minilm()

    # max_latency_ms is BentoML's give-up time (503 past it), not a batching wait: keep it out of the way.
    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def embed(self, text: list[str]) -> list[list[float]]:
        return self.model.encode(text, batch_size=len(text), normalize_embeddings=True, convert_to_numpy=True).tolist()
