"""`hf:` causal language models (task `text-generation`): native endpoints and an OpenAI-compatible API.

    fermion serve hf:./my-llm
    curl localhost:8000/generate -H 'content-type: application/json' -d '{"prompt": "Once upon a time"}'
    OpenAI(base_url="http://localhost:8000/v1", api_key="unused").chat.completions.create(...)

Generation is batched continuously (see `llm_batch`): a request joins the running batch at the
next step and leaves it when done, streamed answers arrive piece by piece, and a request that
times out or whose client leaves stops generating.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import Field

from fermion.models.hf.llm_batch import EngineLimits
from fermion.models.hf.llm_chunks import chat_chunks, completion_chunks
from fermion.models.hf.llm_engine import Generation, Sampling, TextGenerator
from fermion.models.hf.llm_logprobs import CompletionLogprobCount, TopLogprobs, chat_logprobs, completion_logprobs
from fermion.models.hf.llm_schema import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatMessage,
    Completion,
    CompletionChoice,
    GenerateResult,
    ModelCard,
    ModelList,
    Penalty,
    ResponseFormat,
    Seed,
    Stop,
    StreamOptions,
    Temperature,
    TopP,
    Usage,
    chat_messages,
    refuse_unserved,
    usage_of,
)
from fermion.responses import EventStream, InvalidInput
from fermion.service import Service, endpoint

_OPENAI_END = b"data: [DONE]\n\n"
_OPENAI = ("openai",)
_Started = TypeVar("_Started", Generation, tuple[Generation, str])

Prompt = Annotated[str, Field(description="The text to continue.", examples=["Once upon a time"])]
MaxNewTokens = Annotated[
    int, Field(ge=1, description="Most tokens to generate (the model's context may cut it shorter).", examples=[64])
]
MaxTokens = Annotated[
    int | None, Field(ge=1, description="Most tokens to generate; default 512 or what the context allows.", examples=[64])
]
ModelName = Annotated[
    str | None,
    Field(description="Accepted for compatibility: this server serves one model (see GET /v1/models).", examples=["my-llm"]),
]
#: Most choices one request may ask for (each is a sequence of the batch).
MAX_CHOICES = 16
N = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_CHOICES,
        description="How many answers to generate for the prompt (each sampled on its own; with a seed, choice i "
        "uses seed + i). More than 1 is not served with stream.",
        examples=[1],
    ),
]
LogitBias = Annotated[
    dict[str, float] | None, Field(description="Token id (as a string) → bias added to its logit (-100 to 100).")
]


class TextGenerationService(Service):
    """Text generation with a causal language model."""

    name: ClassVar[str | None] = "text-generation"

    def __init__(self, model_dir: str, model_id: str, limits: EngineLimits | None = None, device: str | None = None) -> None:
        self.model_dir = model_dir
        self.model_id = model_id
        self.limits = limits
        self.device = device

    def setup(self) -> None:
        self.engine = TextGenerator(self.model_dir, self.limits, self.device)
        self.loaded_at = int(time.time())

    def extra_metrics(self) -> list[Any]:
        """The engine's numbers in /metrics: TTFT, inter-token latency, tokens, running and waiting sequences, cache use."""
        engine = getattr(self, "engine", None)
        return [] if engine is None else engine.batcher.stats.families(engine.batcher.cache_tokens)

    def teardown(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()

    # -- native ---------------------------------------------------------------------------------

    @endpoint()
    async def generate(
        self,
        prompt: Prompt,
        max_new_tokens: MaxNewTokens = 128,
        temperature: Temperature = None,
        top_p: TopP = None,
        stop: Stop = None,
        seed: Seed = None,
    ) -> GenerateResult:
        """Continue a text: the generated text, why it stopped and the token counts."""
        sampling = Sampling(max_new_tokens, temperature, top_p, _stops(stop), seed)
        generation = await _started(self._start, prompt, sampling)
        text = await generation.text()
        return GenerateResult(text=text, finish_reason=generation.finish_reason, usage=_usage([generation]))  # type: ignore[arg-type]

    @endpoint()
    async def generate_stream(
        self,
        prompt: Prompt,
        max_new_tokens: MaxNewTokens = 128,
        temperature: Temperature = None,
        top_p: TopP = None,
        stop: Stop = None,
        seed: Seed = None,
    ) -> AsyncIterator[str]:
        """Continue a text, streamed: one server-sent event per new piece of text."""
        sampling = Sampling(max_new_tokens, temperature, top_p, _stops(stop), seed)
        generation = await _started(self._start, prompt, sampling)
        async for piece in generation:  # leaving early (the client left) cancels the generation
            yield piece

    # -- OpenAI-compatible ------------------------------------------------------------------------

    @endpoint(path="/v1/chat/completions", tags=_OPENAI, extra="ignore", error_style="openai")
    async def chat_completions(
        self,
        messages: Annotated[
            list[ChatMessage],
            Field(
                min_length=1,
                description="The conversation so far.",
                examples=[[{"role": "user", "content": "Write a haiku about the sea."}]],
            ),
        ],
        model: ModelName = None,
        max_tokens: MaxTokens = None,
        max_completion_tokens: MaxTokens = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        n: N = 1,
        stop: Stop = None,
        stream: bool = False,
        stream_options: StreamOptions | None = None,
        seed: Seed = None,
        presence_penalty: Penalty = 0.0,
        frequency_penalty: Penalty = 0.0,
        logit_bias: LogitBias = None,
        logprobs: Annotated[bool | None, Field(description="Return each answer token's log probability.")] = None,
        top_logprobs: TopLogprobs = None,
        response_format: ResponseFormat | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatCompletion | EventStream:
        """OpenAI chat completions: messages through the model's chat template, one answer (or a stream of chunks).

        Unsupported options are refused with 422 rather than ignored: `n` above 1 with `stream`,
        `tools`, and a `response_format` other than text.
        """
        refuse_unserved(n=n, stream=stream, tools=bool(tools), response_format=response_format)
        if top_logprobs is not None and not logprobs:
            raise InvalidInput("top_logprobs needs logprobs: true; send both, or leave out top_logprobs")
        sampling = self._sampling(
            max_completion_tokens or max_tokens, temperature, top_p, stop, seed, presence_penalty, frequency_penalty, logit_bias
        )
        sampling = replace(sampling, logprobs=(top_logprobs or 0) if logprobs else None)
        decode = self.engine.decode if logprobs else None
        generation = await _started(self._start_chat, chat_messages(messages), sampling)
        ident, created = "chatcmpl-" + os.urandom(12).hex(), int(time.time())
        if stream:
            include_usage = bool(stream_options and stream_options.include_usage)
            return EventStream(chat_chunks(generation, self.model_id, ident, created, include_usage, decode), end=_OPENAI_END)
        generations = self._choices(generation, sampling, n)
        texts = await asyncio.gather(*(g.text() for g in generations))
        choices = [
            ChatChoice(
                index=i,
                message=AssistantMessage(content=text),
                logprobs=chat_logprobs(decode, g.logprobs) if decode else None,
                finish_reason=g.finish_reason,  # type: ignore[arg-type]
            )
            for i, (g, text) in enumerate(zip(generations, texts, strict=True))
        ]
        return ChatCompletion(id=ident, created=created, model=self.model_id, choices=choices, usage=_usage(generations))

    @endpoint(path="/v1/completions", tags=_OPENAI, extra="ignore", error_style="openai")
    async def completions(
        self,
        prompt: Annotated[
            str | list[str] | list[int],
            Field(description="The text to continue (or its token ids).", examples=["Once upon a time"]),
        ],
        model: ModelName = None,
        max_tokens: MaxTokens = 16,
        temperature: Temperature = None,
        top_p: TopP = None,
        n: N = 1,
        stop: Stop = None,
        stream: bool = False,
        stream_options: StreamOptions | None = None,
        echo: Annotated[bool, Field(description="Put the prompt before the generated text.")] = False,
        seed: Seed = None,
        presence_penalty: Penalty = 0.0,
        frequency_penalty: Penalty = 0.0,
        logit_bias: LogitBias = None,
        logprobs: CompletionLogprobCount = None,
        best_of: Annotated[int | None, Field(description="Only 1 is served.")] = None,
        suffix: Annotated[str | None, Field(description="Not served (insertion needs a fill-in-the-middle model).")] = None,
    ) -> Completion | EventStream:
        """OpenAI (legacy) completions: continue a text, as one answer or a stream of chunks."""
        refuse_unserved(n=n, stream=stream, best_of=best_of, suffix=suffix)
        if logprobs is not None and echo:
            raise InvalidInput(
                "logprobs with echo would need the prompt's log probabilities, which are not served; leave out one"
            )
        sampling = self._sampling(max_tokens, temperature, top_p, stop, seed, presence_penalty, frequency_penalty, logit_bias)
        sampling = replace(sampling, logprobs=logprobs)
        decode = self.engine.decode if logprobs is not None else None
        generation, prompt_text = await _started(self._start_completion, prompt, sampling)
        ident, created = "cmpl-" + os.urandom(12).hex(), int(time.time())
        prefix = prompt_text if echo else ""
        if stream:
            include_usage = bool(stream_options and stream_options.include_usage)
            return EventStream(
                completion_chunks(generation, self.model_id, ident, created, prefix, include_usage, decode), end=_OPENAI_END
            )
        generations = self._choices(generation, sampling, n)
        texts = await asyncio.gather(*(g.text() for g in generations))
        choices = [
            CompletionChoice(
                index=i,
                text=prefix + text,
                logprobs=completion_logprobs(decode, g.logprobs) if decode else None,
                finish_reason=g.finish_reason,  # type: ignore[arg-type]
            )
            for i, (g, text) in enumerate(zip(generations, texts, strict=True))
        ]
        return Completion(id=ident, created=created, model=self.model_id, choices=choices, usage=_usage(generations))

    @endpoint(method="GET", path="/v1/models", tags=_OPENAI, error_style="openai")
    def models(self) -> ModelList:
        """OpenAI model list: the one model this server serves."""
        return ModelList(data=[ModelCard(id=self.model_id, created=self.loaded_at)])

    # -- helpers (the _start* ones tokenize, so async endpoints run them off the event loop) ------

    def _start(self, prompt: str, sampling: Sampling) -> Generation:
        return self.engine.start(self.engine.encode(prompt), sampling)

    def _start_chat(self, messages: list[dict[str, str]], sampling: Sampling) -> Generation:
        prompt = self.engine.render_chat(messages)
        return self.engine.start(self.engine.encode(prompt, special_tokens=False), sampling)  # the template adds them

    def _choices(self, first: Generation, sampling: Sampling, n: int) -> list[Generation]:
        """`first` and n - 1 more generations of its prompt (choice i sampled with seed + i when a seed is given)."""
        generations = [first]
        try:
            for i in range(1, n):
                seed = None if sampling.seed is None else sampling.seed + i
                generations.append(self.engine.start(list(first.prompt_ids), replace(sampling, seed=seed)))
        except BaseException:  # e.g. 429: the waiting line filled up part way; no choice runs on alone
            for generation in generations:
                generation.cancel()
            raise
        return generations

    def _sampling(
        self,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stop: str | list[str] | None,
        seed: int | None,
        presence_penalty: float,
        frequency_penalty: float,
        logit_bias: dict[str, float] | None,
    ) -> Sampling:
        bias: dict[int, float] = {}
        for key, value in (logit_bias or {}).items():
            if not key.strip().isdigit() or not -100 <= value <= 100:
                raise InvalidInput(
                    f"logit_bias maps token ids (strings of digits) to numbers from -100 to 100; got {key!r}: {value}"
                )
            bias[int(key)] = float(value)
        return Sampling(max_tokens, temperature, top_p, _stops(stop), seed, presence_penalty, frequency_penalty, bias)

    def _start_completion(self, prompt: str | list[str] | list[int], sampling: Sampling) -> tuple[Generation, str]:
        """The generation for a completions prompt (a string, one string in a list, or token ids) and the prompt's text."""
        if isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
            ids = [int(p) for p in prompt]
            self.engine.check_token_ids(ids, "prompt")
            return self.engine.start(ids, sampling), self.engine.decode(ids)
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidInput(f"prompt holds {len(prompt)} texts; this server completes one prompt per request")
            prompt = str(prompt[0])
        return self._start(prompt, sampling), prompt


async def _started(start: Callable[..., _Started], *args: Any) -> _Started:
    """`start(*args)` (tokenising, then queueing a generation) off the event loop.

    The thread cannot be interrupted, so a caller cancelled meanwhile (timeout, client gone) would
    leave a generation nobody reads running to its token limit: it is cancelled as soon as it exists.
    """
    task = asyncio.ensure_future(asyncio.to_thread(start, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_cancel_orphan)
        raise


def _cancel_orphan(task: asyncio.Future[Any]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    started = task.result()
    (started[0] if isinstance(started, tuple) else started).cancel()


def _usage(generations: list[Generation]) -> Usage:
    """Tokens of a request: its prompt once, and every choice's completion."""
    return Usage(**usage_of(generations[0].prompt_tokens, sum(g.completion_tokens for g in generations)))


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)
