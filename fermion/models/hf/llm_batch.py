"""Continuous batching for a causal LM: every request joins the running batch at the next step.

One scheduler thread owns the model. Each step it admits waiting sequences (first come, first
served, while the sequence and KV-cache bounds allow), runs the newcomers' prompts together in
one left-padded forward pass (prefill: their first tokens; a prompt alone runs exactly as serial
generation would), then runs one decode step for every running sequence together. A request that
arrives during a decode step does not wait for it to end: the step pauses before its next decoder
block (a forward pre-hook), the newcomers' prompts run, and the step goes on; they join after it.
A sequence leaves the batch as soon as it finishes or is cancelled; the others go on.

The KV cache (`llm_cache.BatchCache`) holds the batch's rows left-padded to the longest one, with
an attention mask that hides the padding and explicit position ids per row: the layout `generate`
itself uses for a left-padded batch, so each row computes what it would compute alone (up to
float rounding). Its buffers are allocated ahead and written in place: a step, a newcomer or a
leaving row copies no more than its own keys and values. (No paged cache was built or measured
against it.)
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fermion.models.device import DEVICE_PATTERN
from fermion.serving.http import HTTPError

if TYPE_CHECKING:
    from fermion.models.hf.llm_engine import Generation, TextGenerator

log = logging.getLogger("fermion.llm")

#: Prompt tokens prefilled in one scheduler step (at least one whole prompt), so a burst of new
#: requests delays the running streams by a bounded amount.
PREFILL_TOKENS_PER_STEP = 2048


@dataclass(frozen=True)
class EngineLimits:
    """Bounds of the engine: sequences generating at once, requests waiting, KV-cache tokens."""

    max_sequences: int = 16
    max_waiting: int = 64
    #: Cache positions (rows × padded length) the batch may hold; each admission reserves what the
    #: sequence could reach (prompt + token budget), so a running batch never outgrows it.
    #: None: max_sequences × the model's context length.
    max_cache_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_sequences", "max_waiting", "max_cache_tokens"):
            value, least = getattr(self, name), 0 if name == "max_waiting" else 1
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")


class EngineStats:
    """What the engine did so far: read by /metrics at scrape time (plain numbers, no locks needed)."""

    TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.finished = 0
        self.rejected = 0
        self.steps = 0
        self.paused = 0
        self.running = 0
        self.waiting = 0
        self.cache_tokens = 0
        self.cache_bytes = 0
        self.ttft = Histogram(self.TTFT_BUCKETS)
        self.itl = Histogram(self.ITL_BUCKETS)

    def families(self, cache_limit: int) -> list[Any]:
        """Prometheus metric families of these numbers (built at scrape time)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        out: list[Any] = []
        for name, text, value in (
            ("fermion_llm_prompt_tokens", "Prompt tokens prefilled.", self.prompt_tokens),
            ("fermion_llm_generated_tokens", "Tokens generated (rate() of it is tokens/s).", self.generated_tokens),
            ("fermion_llm_requests_finished", "Generations that ended (done, stopped or cancelled).", self.finished),
            ("fermion_llm_requests_rejected", "Requests answered 429 because the waiting line was full.", self.rejected),
            ("fermion_llm_steps", "Scheduler steps (prefills and one batched decode each).", self.steps),
            ("fermion_llm_steps_paused", "Decode steps paused for newcomers' prompts.", self.paused),
        ):
            out.append(CounterMetricFamily(name, text, value=value))
        for name, text, value in (
            ("fermion_llm_sequences_running", "Sequences in the running batch.", self.running),
            ("fermion_llm_sequences_waiting", "Requests waiting to join the batch.", self.waiting),
            ("fermion_llm_cache_tokens", "KV-cache positions held (rows × padded length).", self.cache_tokens),
            ("fermion_llm_cache_tokens_limit", "KV-cache positions the batch may hold.", cache_limit),
            ("fermion_llm_cache_bytes", "Bytes allocated for the batch's KV cache.", self.cache_bytes),
        ):
            out.append(GaugeMetricFamily(name, text, value=value))
        for name, text, histogram in (
            ("fermion_llm_time_to_first_token_seconds", "Time from a request's arrival to its first token.", self.ttft),
            ("fermion_llm_inter_token_latency_seconds", "Time between a sequence's consecutive tokens.", self.itl),
        ):
            out.append(HistogramMetricFamily(name, text, buckets=histogram.cumulative(), sum_value=histogram.total))
        return out


class Histogram:
    """Counts of observations under each bound (the last slot is +Inf) and their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, count at or below it) pairs, the last one "+Inf", as Prometheus wants them."""
        out, running = [], 0
        for bound, count in zip([*map(repr, map(float, self.bounds)), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


#: Environment variables that set the engine's bounds (`fermion serve`, or a deployment's --env).
LIMIT_ENV = {
    "max_sequences": "FERMION_LLM_MAX_SEQUENCES",
    "max_waiting": "FERMION_LLM_MAX_WAITING",
    "max_cache_tokens": "FERMION_LLM_MAX_CACHE_TOKENS",
}
DEVICE_ENV = "FERMION_LLM_DEVICE"


def limits_from_env(environ: Mapping[str, str]) -> EngineLimits | None:
    """The bounds set in the environment, or None for the defaults (the cache bound then follows the model)."""
    given: dict[str, int] = {}
    for name, key in LIMIT_ENV.items():
        raw = environ.get(key, "").strip()
        if not raw:
            continue
        least = 0 if name == "max_waiting" else 1
        if not raw.isdigit() or int(raw) < least:
            raise ValueError(f"{key}={raw!r} is not a whole number of at least {least}; set it to a count such as 16")
        given[name] = int(raw)
    return EngineLimits(**given) if given else None


def device_from_env(environ: Mapping[str, str]) -> str | None:
    """The torch device asked for in FERMION_LLM_DEVICE ("cpu", "cuda", "cuda:1"), None for the default."""
    device = environ.get(DEVICE_ENV, "").strip()
    if not device:
        return None
    if not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"{DEVICE_ENV}={device!r}: use cpu, cuda, cuda:N or mps")
    return device


def busy_error(limits: EngineLimits) -> HTTPError:
    return HTTPError(
        429,
        f"the model is busy: {limits.max_sequences} requests are generating and {limits.max_waiting} more are "
        "waiting; retry after a moment (or raise FERMION_LLM_MAX_WAITING)",
        headers=[(b"retry-after", b"1")],
    )


class ContinuousBatcher:
    """The scheduler thread and the batch's KV cache (the thread is the only one touching the model)."""

    def __init__(self, engine: TextGenerator, limits: EngineLimits, cache_tokens: int) -> None:
        from fermion.models.hf.llm_cache import BatchCache, SoloCache  # imports transformers

        self.engine = engine
        self.limits = limits
        self.cache_tokens = cache_tokens
        self.stats = EngineStats()
        self._condition = threading.Condition()
        self._waiting: deque[Generation] = deque()
        self._closed = False
        # owned by the scheduler thread:
        self._running: list[Generation] = []
        #: False when the model's cache is not plain keys and values (sliding windows, state): one sequence at a time
        self._batchable = _plain_cache(engine.model)
        #: Set while a decode step may pause for newcomers' prompts (see `_pause_for_newcomers`).
        self._pausable = False
        #: Newcomers prefilled while a decode step paused: (generations, their cache, prompt lengths), joining after it.
        self._pending: list[tuple[list[Generation], Any, list[int]]] = []
        if self._batchable:
            layers = engine.model.config.get_text_config().num_hidden_layers
            self._cache: BatchCache | SoloCache = BatchCache(engine.torch, layers, limits.max_sequences, cache_tokens)
            for block in _decoder_blocks(engine.model, layers):
                block.register_forward_pre_hook(self._pause_for_newcomers)
        else:
            log.warning("this model's KV cache is not a plain DynamicCache: generating one request at a time")
            self._cache = SoloCache(engine.torch, engine.device)
        self._thread = threading.Thread(target=self._loop, name="fermion-llm-batcher", daemon=True)
        self._thread.start()

    def submit(self, generation: Generation) -> None:
        """Queue a generation; 429 (with Retry-After) when the waiting line is full."""
        with self._condition:
            if self._closed:
                raise HTTPError(503, "the model is shutting down; retry on another replica")
            if len(self._waiting) >= self.limits.max_waiting and len(self._running) + len(self._waiting) >= 1:
                self.stats.rejected += 1
                raise busy_error(self.limits)
            self._waiting.append(generation)
            self.stats.waiting = len(self._waiting)
            self._condition.notify()

    def wake(self) -> None:
        """Let the scheduler notice a cancellation now, even while idle."""
        with self._condition:
            self._condition.notify()

    def close(self) -> None:
        """Stop the scheduler thread; sequences still running end with finish reason None."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout=10)

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        torch = self.engine.torch
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._closed or self._waiting or self._running)
                if self._closed:
                    break
                admitted = self._admit()
            try:
                with torch.inference_mode():
                    if admitted:
                        self._join(admitted, *self._prefill(admitted))
                    self._drop_finished()
                    if self._running:
                        self._decode()
                        self._drop_finished()
            except Exception as exc:  # a failure of the model itself: every running request gets it
                log.exception("generation step failed")
                for generation in [*admitted, *self._running, *(g for job in self._pending for g in job[0])]:
                    generation._fail(exc)
                self._running, self._pending = [], []
                self._cache.keep([])
                self._measure_cache()
            self.stats.steps += 1
        for generation in [*self._running, *self._waiting]:
            generation._fail(RuntimeError("the model is shutting down"))

    def _admit(self) -> list[Generation]:
        """Waiting generations that fit now, in arrival order (a cancelled one is dropped)."""
        admitted: list[Generation] = []
        longest_prompt = 0
        while self._waiting:
            head = self._waiting[0]
            if head.cancelled:
                self._waiting.popleft()._finish(None, flush=False)
                continue
            prompt = max(longest_prompt, len(head.prompt_ids))
            if admitted and (len(admitted) + 1) * prompt > PREFILL_TOKENS_PER_STEP:
                break
            if not self._fits(head, [*self._running, *(g for job in self._pending for g in job[0]), *admitted]):
                break
            admitted.append(self._waiting.popleft())
            longest_prompt = prompt
        self.stats.waiting = len(self._waiting)
        return admitted

    def _fits(self, generation: Generation, others: Seq[Generation]) -> bool:
        """Whether one more sequence fits the bounds beside `others` (rows, and the cache each may reach)."""
        rows = len(others)
        if rows >= (self.limits.max_sequences if self._batchable else 1):
            return False
        longest = max([generation.final_length, *(g.final_length for g in others)])
        return not rows or (rows + 1) * longest <= self.cache_tokens

    def _pause_for_newcomers(self, *_: Any) -> None:
        """Before each decoder block of a decode step: the prompts of newcomers that fit run now.

        A newcomer would otherwise wait for the whole step in progress before its prompt runs, and
        on a CPU a step of a full batch costs about as much as a short prompt. The step is paused,
        not abandoned: the prompts run in a forward pass of their own (their first tokens go out at
        once), the step goes on from this block, and the newcomers join the batch after it.
        """
        if not (self._pausable and self._waiting):
            return
        with self._condition:
            admitted = self._admit()
        if not admitted:
            return
        self._pausable = False  # the prompts' own pass goes through these blocks too; one pause per step
        try:
            self._pending.append((admitted, *self._prefill(admitted)))
        except Exception as exc:  # these prompts failed the model: they get it, the step goes on
            log.exception("prefill failed")
            for generation in admitted:
                generation._fail(exc)
        self.stats.paused += 1

    def _prefill(self, admitted: list[Generation]) -> tuple[Any, list[int]]:
        """The newcomers' prompts in one forward pass (left-padded), and their first tokens; the pass's cache back."""
        torch, engine = self.engine.torch, self.engine
        lengths = [len(g.prompt_ids) for g in admitted]
        longest = max(lengths)
        padded = [[0] * (longest - len(g.prompt_ids)) + g.prompt_ids for g in admitted]
        inputs = torch.tensor(padded, device=engine.device)
        padding: dict[str, Any] = {}
        if len(admitted) > 1:  # one prompt alone runs exactly as serial generation would
            mask = torch.tensor([[0] * (longest - n) + [1] * n for n in lengths], device=engine.device)
            padding = {"attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}
        out = engine.model(input_ids=inputs, use_cache=True, **padding, **engine.keep_last_logits)
        self.stats.prompt_tokens += sum(lengths)
        for generation, token in zip(admitted, engine.pick_rows(out.logits[:, -1].float(), admitted), strict=True):
            generation._accept(token, self.stats)
        return out[engine.cache_key], lengths

    def _join(self, admitted: list[Generation], cache: Any, lengths: list[int]) -> None:
        """Prefilled newcomers enter the batch (those already done, at their first token, do not)."""
        for row, (generation, length) in enumerate(zip(admitted, lengths, strict=True)):
            if not generation.done:
                self._cache.add(cache, row, length)
                generation.position = length
                self._running.append(generation)
        self._measure_cache()

    def _decode(self) -> None:
        """One token for every running sequence, in one forward pass (newcomers prefilled during it join after)."""
        torch, engine = self.engine.torch, self.engine
        device = engine.device
        rows = self._running
        inputs = torch.tensor([[g.last_token] for g in rows], device=device)
        positions = torch.tensor([[g.position] for g in rows], device=device)
        self._pausable = True
        try:
            out = engine.model(
                input_ids=inputs,
                position_ids=positions,
                attention_mask=self._cache.step_mask(),
                use_cache=True,
                **{engine.cache_key: self._cache.cache},
                **engine.keep_last_logits,
            )
        finally:
            self._pausable = False
        self._cache.advance()
        for generation, token in zip(rows, engine.pick_rows(out.logits[:, -1].float(), rows), strict=True):
            generation.position += 1
            generation._accept(token, self.stats)
        pending, self._pending = self._pending, []
        for job in pending:
            self._join(*job)
        self._measure_cache()

    def _drop_finished(self) -> None:
        """Take finished and cancelled rows out of the batch (and padding no row needs any more)."""
        keep = [i for i, g in enumerate(self._running) if not g.done and not g.cancelled]
        for generation in self._running:
            if generation.cancelled and not generation.done:
                generation._finish(None, flush=False)
        if len(keep) == len(self._running):
            return
        self._running = [self._running[i] for i in self._cache.keep(keep)]
        self._measure_cache()

    def _measure_cache(self) -> None:
        stats = self.stats
        stats.running = len(self._running)
        stats.cache_tokens = self._cache.rows * self._cache.width
        stats.cache_bytes = self._cache.bytes


def _decoder_blocks(model: Any, count: int) -> list[Any]:
    """The model's `count` decoder blocks, in order (the module list of that many alike modules), or [] if not found."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and len({type(m) for m in module}) == 1:
            return list(module)
    return []


def _plain_cache(model: Any) -> bool:
    """Whether the model's cache is plain growing keys and values in every layer (no sliding window, no state)."""
    from transformers import DynamicCache

    try:
        layers: Seq[Any] = DynamicCache(config=model.config).layers
    except Exception:  # a model whose config the cache cannot read: the safe path
        return False
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
