"""The OpenAI streaming answers of the text-generation Service: one chunk event per text piece.

Each ends with the finish reason (and, when asked, a usage chunk); leaving early cancels the
generation, which frees its sequence at the next step. With log probabilities asked for, each
chunk carries those of the tokens generated since the chunk before (the last one, the rest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fermion.models.hf.llm_engine import Generation
from fermion.models.hf.llm_logprobs import Decode, chat_logprobs, completion_logprobs
from fermion.models.hf.llm_schema import usage_of


async def chat_chunks(
    generation: Generation, model_id: str, ident: str, created: int, include_usage: bool, decode: Decode | None = None
) -> AsyncIterator[dict[str, Any]]:
    """`chat.completion.chunk` events: the role first, then text pieces, then the finish reason (and usage);
    with `decode`, each chunk's log probabilities."""
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model_id}
    if include_usage:
        head["usage"] = None

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        logprobs = chat_logprobs(decode, generation.new_logprobs()).model_dump() if decode else None
        return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for piece in generation:
            yield chunk({"content": piece})
        yield chunk({}, generation.finish_reason)
        if include_usage:
            yield {**head, "choices": [], "usage": usage_of(generation.prompt_tokens, generation.completion_tokens)}
    finally:
        generation.cancel()  # a no-op once it ended; frees the sequence when the client left first


async def completion_chunks(
    generation: Generation,
    model_id: str,
    ident: str,
    created: int,
    prefix: str,
    include_usage: bool,
    decode: Decode | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """`text_completion` events: text pieces (after the echoed prompt), then the finish reason (and usage);
    with `decode`, each chunk's log probabilities (text offsets counted over the whole answer)."""
    head = {"id": ident, "object": "text_completion", "created": created, "model": model_id}
    if include_usage:
        head["usage"] = None
    offset = len(prefix)

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        nonlocal offset
        logprobs = None
        if decode:
            found = completion_logprobs(decode, generation.new_logprobs(), offset)
            offset += sum(len(token) for token in found.tokens)
            logprobs = found.model_dump()
        return {**head, "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]}

    try:
        if prefix:
            yield chunk(prefix)
        async for piece in generation:
            yield chunk(piece)
        yield chunk("", generation.finish_reason)
        if include_usage:
            yield {**head, "choices": [], "usage": usage_of(generation.prompt_tokens, generation.completion_tokens)}
    finally:
        generation.cancel()
