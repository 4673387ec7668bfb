"""Token-by-token text generation with a transformers causal LM, shared fairly between requests.

Each request is a `Generation`: an iterator of text pieces that runs one forward pass per step
under the model's `TurnLock`, so concurrent requests (streamed or not) take turns token by token
instead of running several forward passes at once and thrashing the CPU. The same loop serves
streamed and whole answers, so both give the same text for the same request.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


class TurnLock:
    """A lock handed over in arrival order, so that no waiting generation starves."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._condition.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._condition:
            self._serving += 1
            self._condition.notify_all()


class TextGenerator:
    """A causal LM and its tokenizer, loaded from a local folder (CUDA when available, else CPU)."""

    def __init__(self, model_dir: str) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(model_dir, **{dtype_key: "auto"})
        if self.device == "cpu" and model.dtype == torch.float16:
            model = model.float()  # half precision is slow or unsupported on many CPUs
        self.model = model.to(self.device).eval()
        forward = inspect.signature(type(self.model).forward).parameters
        # transformers 5 renamed `past_key_values` to `cache` (argument and output field)
        self._cache_key = "cache" if "cache" in forward else "past_key_values"
        self._keep_last_logits = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.context_length = _context_length(self.model.config, self.tokenizer)
        self.eos_ids = _eos_ids(self.model.generation_config, self.tokenizer)
        config = self.model.generation_config
        sampled = bool(getattr(config, "do_sample", False))
        self.default_temperature = float(config.temperature) if sampled and config.temperature is not None else 1.0
        self.default_top_p = float(config.top_p) if sampled and config.top_p is not None else 1.0
        self.lock = TurnLock()
        self._encoding = threading.Lock()

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
        return Generation(self, prompt_ids, sampling, budget)

    # -- one step -----------------------------------------------------------------------------

    def _step(self, feed: list[int], cache: Any) -> tuple[Any, Any]:
        """Last-position logits after feeding `feed`, and the updated KV cache."""
        torch = self.torch
        inputs = torch.tensor([feed], device=self.device)
        out = self.model(input_ids=inputs, use_cache=True, **{self._cache_key: cache}, **self._keep_last_logits)
        return out.logits[0, -1].float(), out[self._cache_key]

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
    """One request's generation: iterate it for text pieces; counts and finish reason fill in as it runs."""

    def __init__(self, engine: TextGenerator, prompt_ids: list[int], sampling: Sampling, budget: int) -> None:
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.sampling = sampling
        self.budget = budget
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        #: "stop" (end-of-text token or a stop sequence), "length" (token budget), None while running.
        self.finish_reason: str | None = None
        self._cancelled = threading.Event()
        self._pieces = self._run()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def text(self) -> str:
        """Run to the end and return the whole text."""
        return "".join(self._pieces)

    def cancel(self) -> None:
        """Stop after the current step (safe from any thread)."""
        self._cancelled.set()

    def close(self) -> None:
        """Stop now and free the KV cache (from the thread that iterates, or once it has stopped)."""
        self._pieces.close()

    def _run(self) -> Iterator[str]:
        engine, sampling = self.engine, self.sampling
        torch = engine.torch
        rng = None
        if sampling.seed is not None:
            rng = torch.Generator(device=engine.device)
            rng.manual_seed(sampling.seed)
        text = _Detokenizer(engine, self.prompt_ids[-_DETOKENIZE_CONTEXT:])
        stops = _StopMatcher(sampling.stop)
        counts: Counter[int] = Counter()
        feed, cache = self.prompt_ids, None
        reason = "length"
        for _ in range(self.budget):
            if self._cancelled.is_set():
                return
            # the lock and inference mode cover one step only: the next step may run on another thread
            with engine.lock, torch.inference_mode():
                logits, cache = engine._step(feed, cache)
                token = engine._pick(logits, counts, sampling, rng)
            self.completion_tokens += 1
            if token in engine.eos_ids:
                reason = "stop"
                break
            counts[token] += 1
            piece, hit = stops.feed(text.add(token))
            if piece:
                yield piece
            if hit:
                self.finish_reason = "stop"
                return
            feed = [token]
        piece, hit = stops.feed(text.flush())
        if not hit:
            piece += stops.flush()
        self.finish_reason = "stop" if hit else reason
        if piece:
            yield piece


class _Detokenizer:
    """Turns tokens into text pieces as they come, holding back incomplete characters."""

    def __init__(self, engine: TextGenerator, context: list[int]) -> None:
        self.decode = engine.decode
        self.ids = list(context)
        self.prefix = 0  # ids[prefix:read] were decoded last time: they anchor spacing for the next piece
        self.read = len(self.ids)

    def add(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True) if self.read < len(self.ids) else ""

    def _advance(self, final: bool) -> str:
        before = self.decode(self.ids[self.prefix : self.read])
        after = self.decode(self.ids[self.prefix :])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        if final:
            self.prefix = self.read = len(self.ids)
        return ""


class _StopMatcher:
    """Cuts text at the first stop sequence; holds back text that may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to send, whether a stop sequence was found)."""
        if not self.stops:
            return text, False
        buffer = self.pending + text
        found = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if found:
            self.pending = ""
            return buffer[: min(found)], True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), hold, -1):
                if buffer.endswith(stop[:size]):
                    hold = size
                    break
        cut = len(buffer) - hold
        self.pending = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        pending, self.pending = self.pending, ""
        return pending


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
