"""Continuous batching for a causal LM: every request joins the running batch at the next step.

One scheduler thread owns the model. Each step it admits waiting sequences (first come, first
served, while the sequence and KV-cache bounds allow), runs each newcomer's prompt alone
(prefill: its first token), then runs one decode step for every running sequence together. A
sequence leaves the batch as soon as it finishes or is cancelled; the others go on.

The KV cache is one transformers `DynamicCache` for the whole batch, its rows left-padded to the
longest sequence, with an attention mask that hides the padding and explicit position ids per
row: the layout `generate` itself uses for a left-padded batch, so each row computes what it
would compute alone (up to float rounding). Padding columns no row needs any more are trimmed
whenever a sequence leaves. (No paged cache was built or measured against it.)
"""

from __future__ import annotations

import logging
import re
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
        ):
            out.append(CounterMetricFamily(name, text, value=value))
        for name, text, value in (
            ("fermion_llm_sequences_running", "Sequences in the running batch.", self.running),
            ("fermion_llm_sequences_waiting", "Requests waiting to join the batch.", self.waiting),
            ("fermion_llm_cache_tokens", "KV-cache positions held (rows × padded length).", self.cache_tokens),
            ("fermion_llm_cache_tokens_limit", "KV-cache positions the batch may hold.", cache_limit),
            ("fermion_llm_cache_bytes", "Bytes of the batch's KV cache.", self.cache_bytes),
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
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"{DEVICE_ENV}={device!r}: use cpu, cuda or cuda:N")
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
        self.engine = engine
        self.limits = limits
        self.cache_tokens = cache_tokens
        self.stats = EngineStats()
        self._condition = threading.Condition()
        self._waiting: deque[Generation] = deque()
        self._closed = False
        # owned by the scheduler thread:
        self._running: list[Generation] = []
        self._cache: Any = None
        self._mask: Any = None  # [rows, cache length]: 1 where a row has a real token
        self._batchable = True  # False when the model's cache or forward cannot take a padded batch
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
                    for generation in admitted:
                        self._prefill(generation)
                    self._drop_finished()
                    if self._running:
                        self._decode()
                        self._drop_finished()
            except Exception as exc:  # a failure of the model itself: every running request gets it
                log.exception("generation step failed")
                for generation in [*admitted, *self._running]:
                    generation._fail(exc)
                self._running, self._cache, self._mask = [], None, None
            self.stats.steps += 1
        for generation in [*self._running, *self._waiting]:
            generation._fail(RuntimeError("the model is shutting down"))

    def _admit(self) -> list[Generation]:
        """Waiting generations that fit now, in arrival order (a cancelled one is dropped)."""
        admitted: list[Generation] = []
        prompt_tokens = 0
        while self._waiting:
            head = self._waiting[0]
            if head.cancelled:
                self._waiting.popleft()._finish(None, flush=False)
                continue
            rows = len(self._running) + len(admitted)
            most = self.limits.max_sequences if self._batchable else 1
            if rows >= most or (admitted and prompt_tokens + len(head.prompt_ids) > PREFILL_TOKENS_PER_STEP):
                break
            longest = max([g.final_length for g in (*self._running, *admitted, head)])
            if rows and (rows + 1) * longest > self.cache_tokens:
                break
            admitted.append(self._waiting.popleft())
            prompt_tokens += len(head.prompt_ids)
        self.stats.waiting = len(self._waiting)
        return admitted

    def _prefill(self, generation: Generation) -> None:
        """Run one prompt alone (exactly as serial generation would), pick its first token, join the batch."""
        torch, engine = self.engine.torch, self.engine
        inputs = torch.tensor([generation.prompt_ids], device=engine.device)
        out = engine.model(input_ids=inputs, use_cache=True, **engine.keep_last_logits)
        cache = out[engine.cache_key]
        if self._batchable and not _plain_layers(cache):
            log.warning("this model's KV cache is not a plain DynamicCache: generating one request at a time")
            self._batchable = False
        self.stats.prompt_tokens += len(generation.prompt_ids)
        generation._accept(engine.pick_row(out.logits[0, -1].float(), generation), self.stats)
        if generation.done:
            return
        self._join(generation, cache)

    def _join(self, generation: Generation, cache: Any) -> None:
        torch = self.engine.torch
        length = len(generation.prompt_ids)
        row_mask = torch.ones((1, length), dtype=torch.long, device=self.engine.device)
        generation.position = length
        if self._cache is None:
            self._cache, self._mask, self._running = cache, row_mask, [generation]
            self._measure_cache()
            return
        width = self._mask.shape[1]
        size = max(width, length)
        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, size), _pad_left(theirs.keys, size)])
            mine.values = torch.cat([_pad_left(mine.values, size), _pad_left(theirs.values, size)])
        self._mask = torch.cat([_pad_left(self._mask, size), _pad_left(row_mask, size)])
        self._running.append(generation)
        self._measure_cache()

    def _decode(self) -> None:
        """One token for every running sequence, in one forward pass."""
        torch, engine = self.engine.torch, self.engine
        device = engine.device
        rows = self._running
        inputs = torch.tensor([[g.last_token] for g in rows], device=device)
        positions = torch.tensor([[g.position] for g in rows], device=device)
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=self._mask.dtype, device=device)], dim=1)
        out = engine.model(
            input_ids=inputs,
            position_ids=positions,
            attention_mask=mask,
            use_cache=True,
            **{engine.cache_key: self._cache},
            **engine.keep_last_logits,
        )
        self._cache, self._mask = out[engine.cache_key], mask
        for generation, token in zip(rows, engine.pick_rows(out.logits[:, -1].float(), rows), strict=True):
            generation.position += 1
            generation._accept(token, self.stats)
        self._measure_cache()

    def _drop_finished(self) -> None:
        """Take finished and cancelled rows out of the batch, and padding no row needs any more."""
        keep = [i for i, g in enumerate(self._running) if not g.done and not g.cancelled]
        for generation in self._running:
            if generation.cancelled and not generation.done:
                generation._finish(None, flush=False)
        if len(keep) == len(self._running):
            return
        if not keep:
            self._running, self._cache, self._mask = [], None, None
            self._measure_cache()
            return
        torch = self.engine.torch
        index = torch.tensor(keep, device=self.engine.device)
        mask = self._mask.index_select(0, index)
        first = int(mask.any(dim=0).nonzero()[0])  # leading columns that are padding in every kept row
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self._mask = mask[:, first:]
        self._running = [self._running[i] for i in keep]
        self._measure_cache()

    def _measure_cache(self) -> None:
        stats = self.stats
        stats.running = len(self._running)
        if self._cache is None:
            stats.cache_tokens = stats.cache_bytes = 0
            return
        stats.cache_tokens = int(self._mask.numel())
        stats.cache_bytes = sum(t.numel() * t.element_size() for layer in self._cache.layers for t in (layer.keys, layer.values))


def _pad_left(tensor: Any, size: int) -> Any:
    """`tensor` with zeros added before its sequence axis (dim 2 of keys/values, dim 1 of a mask) up to `size`."""
    import torch

    axis = 2 if tensor.dim() == 4 else 1
    missing = size - tensor.shape[axis]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _plain_layers(cache: Any) -> bool:
    """Whether every layer of `cache` is a plain growing key/value layer (no sliding window, no state)."""
    layers: Seq[Any] = getattr(cache, "layers", ())
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)
