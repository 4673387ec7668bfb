"""Text generation with a transformers causal LM: the model, its tokenizer, sampling, and per-request state.

Each request is a `Generation`: the scheduler of `llm_batch` advances it one token per step,
batched with every other running request, and turns its tokens into text pieces (holding back
incomplete characters and possible stop texts). Callers read the pieces as they come (`async for`,
or `for` from a thread) or wait for the whole text; both give the same text for the same request.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fermion.models.hf.llm_batch import ContinuousBatcher, EngineLimits, EngineStats
from fermion.models.hf.llm_logprobs import TokenLogprob, token_logprob
from fermion.models.hf.llm_text import Detokenizer, StopMatcher
from fermion.responses import InvalidInput

#: Tokens generated when a request does not say how many (the model's context may cut it shorter).
DEFAULT_MAX_NEW_TOKENS = 512
#: Prompt tokens decoded together with the first new tokens, so word boundaries come out right.
_DETOKENIZE_CONTEXT = 5
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: `temperature` 0 is greedy; `None` takes the model's own default."""

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    #: None: no log probabilities; N: each token's log probability and its N likeliest alternatives.
    logprobs: int | None = None


class TextGenerator:
    """A causal LM and its tokenizer, loaded from a local folder (CUDA when available, else CPU)."""

    def __init__(self, model_dir: str, limits: EngineLimits | None = None, device: str | None = None) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        # `device` was checked when the source loaded (fermion.models.device); None: a GPU if torch sees one
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(model_dir, **{dtype_key: "auto"})
        if self.device == "cpu" and model.dtype == torch.float16:
            model = model.float()  # half precision is slow or unsupported on many CPUs
        self.model = model.to(self.device).eval()
        forward = inspect.signature(type(self.model).forward).parameters
        # transformers 5 renamed `past_key_values` to `cache` (argument and output field)
        self.cache_key = "cache" if "cache" in forward else "past_key_values"
        self.keep_last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.read_model_facts(self.model.config, self.model.generation_config)
        limits = limits or EngineLimits()
        cache_tokens = limits.max_cache_tokens or limits.max_sequences * (self.context_length or 2048)
        self.batcher = ContinuousBatcher(self, limits, cache_tokens)

    def read_model_facts(self, config: Any, generation_config: Any) -> None:
        """What the prompt checks and sampling defaults need from the model's configs (and `self.tokenizer`)."""
        self.context_length = _context_length(config, self.tokenizer)
        self.eos_ids = _eos_ids(generation_config, self.tokenizer)
        sampled = bool(getattr(generation_config, "do_sample", False))
        temperature, top_p = generation_config.temperature, generation_config.top_p
        self.default_temperature = float(temperature) if sampled and temperature is not None else 1.0
        self.default_top_p = float(top_p) if sampled and top_p is not None else 1.0
        self._encoding = threading.Lock()

    def close(self) -> None:
        """Stop the scheduler thread (requests still running end without a finish reason)."""
        self.batcher.close()

    # -- prompts ------------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The prompt text for chat messages, from the tokenizer's chat template."""
        if not self.has_chat_template:
            raise InvalidInput(
                "this model has no chat template, so it cannot turn messages into a prompt; "
                "send plain text to /v1/completions or /generate instead, or serve a chat model "
                "(one whose tokenizer carries a chat_template)"
            )
        try:
            return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # templates reject what they cannot render (jinja2 TemplateError, ...)
            raise InvalidInput(f"the model's chat template cannot render these messages: {exc}") from None

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; chat prompts pass `special_tokens=False` (their template adds them)."""
        with self._encoding:  # encoding may reconfigure a fast tokenizer, which another thread must not see
            return list(self.tokenizer.encode(text, add_special_tokens=special_tokens))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def check_token_ids(self, ids: Sequence[int], what: str) -> None:
        """Reject ids outside the vocabulary (they would crash the model)."""
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidInput(f"{what} holds token ids outside the vocabulary (0 to {self.vocab_size - 1}): {bad[:5]}")

    def start(self, prompt_ids: list[int], sampling: Sampling) -> Generation:
        """A generation for this prompt; the prompt and limits are checked now (InvalidInput)."""
        if not prompt_ids:
            start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
            if start is None:
                raise InvalidInput("the prompt is empty: send some text")
            prompt_ids = [start]
        budget = sampling.max_new_tokens or DEFAULT_MAX_NEW_TOKENS
        if self.context_length is not None:
            room = self.context_length - len(prompt_ids)
            if room < 1:
                raise InvalidInput(
                    f"the prompt is {len(prompt_ids)} tokens, but this model reads at most {self.context_length} "
                    "tokens (prompt and answer together): shorten the prompt"
                )
            budget = min(budget, room)
        self.check_token_ids(list(sampling.logit_bias), "logit_bias")
        cache_bound = self.batcher.cache_tokens
        if len(prompt_ids) + budget > cache_bound:
            raise InvalidInput(
                f"the prompt ({len(prompt_ids)} tokens) and max_tokens ({budget}) need more KV cache than this server "
                f"allows one request ({cache_bound} tokens, FERMION_LLM_MAX_CACHE_TOKENS): ask for fewer tokens"
            )
        generation = Generation(self, prompt_ids, sampling, budget)
        self.batcher.submit(generation)
        return generation

    # -- picking tokens -----------------------------------------------------------------------------

    def pick_rows(self, logits: Any, rows: Sequence[Generation]) -> list[int]:
        """The next token of every row of `logits` (one per generation), greedy rows in one argmax.

        Rows that asked for log probabilities get them from the model's own distribution, taken before
        logit bias, penalties and temperature change the logits.
        """
        log_softmax = self.torch.log_softmax
        asked = [(i, g, log_softmax(logits[i], dim=-1)) for i, g in enumerate(rows) if g.sampling.logprobs is not None]
        if all(g.plain_greedy for g in rows):
            tokens = [int(t) for t in self.torch.argmax(logits, dim=-1).tolist()]
        else:
            tokens = [self.pick_row(logits[i], g) for i, g in enumerate(rows)]
        for i, generation, distribution in asked:
            generation.note_logprobs(tokens[i], distribution)
        return tokens

    def pick_row(self, logits: Any, generation: Generation) -> int:
        """The next token of one generation from its last-position logits (changed in place)."""
        if generation.plain_greedy:
            return int(self.torch.argmax(logits))
        return self._pick(logits, generation.counts, generation.sampling, generation.rng)

    def _pick(self, logits: Any, counts: Counter[int], sampling: Sampling, rng: Any) -> int:
        torch = self.torch
        for token, bias in sampling.logit_bias.items():
            logits[token] += bias
        if counts and (sampling.presence_penalty or sampling.frequency_penalty):
            seen = torch.tensor(list(counts), device=logits.device)
            times = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
            logits[seen] -= sampling.frequency_penalty * times + sampling.presence_penalty
        temperature = self.default_temperature if sampling.temperature is None else sampling.temperature
        if temperature <= 1e-5:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / temperature, dim=-1)
        top_p = self.default_top_p if sampling.top_p is None else sampling.top_p
        if top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p  # keeps at least the top token
            sorted_probs[outside] = 0.0
            choice = torch.multinomial(sorted_probs, 1, generator=rng)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=rng))


class Generation:
    """One request's generation: iterate it (`async for`, or `for` in a thread) for text pieces, or await `text()`.

    The scheduler thread feeds it (`_accept`, `_finish`, `_fail`); readers on any thread or event
    loop take the pieces. Counts and the finish reason are final once the pieces end.
    """

    def __init__(self, engine: TextGenerator, prompt_ids: list[int], sampling: Sampling, budget: int) -> None:
        torch = engine.torch
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.budget = budget
        self.final_length = len(prompt_ids) + budget
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.token_ids: list[int] = []
        #: "stop" (end-of-text token or a stop sequence), "length" (token budget), None while running or if cancelled.
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.done = False
        self.cancelled = False
        temperature = engine.default_temperature if sampling.temperature is None else sampling.temperature
        penalised = sampling.presence_penalty or sampling.frequency_penalty
        self.plain_greedy = temperature <= 1e-5 and not sampling.logit_bias and not penalised
        self.rng = None
        if sampling.seed is not None:
            self.rng = torch.Generator(device=engine.device)
            self.rng.manual_seed(sampling.seed)
        self.counts: Counter[int] = Counter()
        #: Per generated token (not the end-of-text one), when the sampling asked for log probabilities.
        self.logprobs: list[TokenLogprob] = []
        self._logprobs_read = 0
        # scheduler-side state
        self.last_token = -1
        self.position = 0
        self._text = Detokenizer(engine.decode, prompt_ids[-_DETOKENIZE_CONTEXT:])
        self._stops = StopMatcher(sampling.stop)
        self._submitted = time.perf_counter()
        self._last_at = 0.0
        # the channel to readers
        self._lock = threading.Lock()
        self._pieces: deque[str] = deque()
        self._wakeups: list[Callable[[], None]] = []

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    # -- readers --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        """Text pieces as they come, blocking this thread between them."""
        while True:
            ready = threading.Event()
            piece = self._take(ready.set)
            if piece is None:
                ready.wait()
            elif piece is _END:
                return
            else:
                yield piece

    async def __aiter__(self) -> AsyncIterator[str]:
        """Text pieces as they come, without blocking the event loop; leaving early cancels the generation."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                ready = loop.create_future()
                piece = self._take(functools.partial(loop.call_soon_threadsafe, _resolve, ready))
                if piece is None:
                    await ready
                elif piece is _END:
                    return
                else:
                    yield piece
        finally:
            if not self.done:
                self.cancel()

    def new_logprobs(self) -> list[TokenLogprob]:
        """The log probabilities recorded since the last call (a stream's next chunk carries them)."""
        taken = self.logprobs[self._logprobs_read :]
        self._logprobs_read += len(taken)
        return taken

    async def text(self) -> str:
        """The whole text; a cancelled caller (timeout, disconnect) cancels the generation."""
        return "".join([piece async for piece in self])

    def cancel(self) -> None:
        """Stop generating at the next step and free the sequence's cache (safe from any thread)."""
        self.cancelled = True
        self.engine.batcher.wake()

    close = cancel

    def _take(self, wakeup: Callable[[], None]) -> str | object | None:
        """The next piece, `_END` when there is no more, or None after registering `wakeup` for the next."""
        with self._lock:
            if self._pieces:
                return self._pieces.popleft()
            if self.done:
                if self.error is not None:
                    raise self.error
                return _END
            self._wakeups.append(wakeup)
            return None

    # -- the scheduler's side -------------------------------------------------------------------

    def note_logprobs(self, token: int, distribution: Any) -> None:
        """Record the picked token's log probability and the likeliest alternatives, from `distribution` (log-softmax)."""
        if token not in self.engine.eos_ids:
            self.logprobs.append(token_logprob(self.engine.torch, token, distribution, self.sampling.logprobs or 0))

    def _accept(self, token: int, stats: EngineStats) -> None:
        """Take the token the model picked: text out, and finish on end-of-text, a stop text or the budget."""
        now = time.perf_counter()
        if self.completion_tokens == 0:
            stats.ttft.observe(now - self._submitted)
        else:
            stats.itl.observe(now - self._last_at)
        self._last_at = now
        self.completion_tokens += 1
        stats.generated_tokens += 1
        self.token_ids.append(token)
        self.last_token = token
        if token in self.engine.eos_ids:
            self._finish("stop")
            return
        self.counts[token] += 1
        piece, hit = self._stops.feed(self._text.add(token))
        if hit:
            self._finish("stop", piece, flush=False)
        elif self.completion_tokens >= self.budget:
            self._finish("length", piece)
        elif piece:
            self._send(piece)

    def _finish(self, reason: str | None, piece: str = "", *, flush: bool = True) -> None:
        """End the generation; `flush` sends the text held back (not after a stop text cut it)."""
        if flush:
            more, hit = self._stops.feed(self._text.flush())
            piece += more
            if not hit:
                piece += self._stops.flush()
            reason = "stop" if hit else reason
        self.finish_reason = reason
        self.done = True
        self.engine.batcher.stats.finished += 1
        self._send(piece)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.done = True
        self._send("")

    def _send(self, piece: str) -> None:
        with self._lock:
            if piece:
                self._pieces.append(piece)
            wakeups, self._wakeups = self._wakeups, []
        for wakeup in wakeups:
            wakeup()


_END = object()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _context_length(config: Any, tokenizer: Any) -> int | None:
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else None


def _eos_ids(generation_config: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)
