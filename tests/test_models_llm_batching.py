"""Continuous batching of `hf:` causal LMs: the same tokens as serial generation, and the bounds users rely on.

The engine is checked in-process against transformers' own `generate` (greedy, batch 1: the
serial reference), then through a real `fermion serve` under concurrent load: many streams with
different lengths and stops, a client that leaves mid-stream, and a full waiting line (429).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time

import httpx
import openai
import pytest
from support import running_server

PROMPTS = [
    "Hello there",
    "The quick brown fox",
    "Numbers like 1, 2",
    "Fermion serves models over HTTP",
    "a",
    "Streaming sends each piece of text as soon as it is ready.",
    "Language models predict",
    "How are you today?",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    from tiny_models.llm import build_tiny_llm

    # room for long generations: the slot and queue tests keep a request running for a while
    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny-llm", n_positions=4096)


def _serial_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' own greedy generation, one request alone: the reference."""
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None)
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize(
    "limits",
    [
        {"max_sequences": 5},  # fewer rows than requests: some wait
        {"max_sequences": 3, "max_cache_tokens": 300},  # cache buffers sized to the bound, not doubled past it
    ],
)
def test_batched_greedy_tokens_equal_serial_generation_token_for_token(model_dir, limits):
    from fermion.models.hf.llm_batch import EngineLimits
    from fermion.models.hf.llm_engine import Sampling, TextGenerator

    engine = TextGenerator(str(model_dir), EngineLimits(**limits))
    try:
        lengths = [40, 7, 23, 64, 1, 33, 50, 12] * 2
        prompts = [engine.encode(p) for p in PROMPTS * 2]
        generations = [
            engine.start(ids, Sampling(max_new_tokens=n, temperature=0)) for ids, n in zip(prompts, lengths, strict=True)
        ]
        texts = [list(g) for g in generations]  # every generation runs to its end
        for ids, n, generation, pieces in zip(prompts, lengths, generations, texts, strict=True):
            expected = _serial_greedy(engine.model, ids, n)
            got = generation.token_ids
            assert got == expected[: len(got)], (engine.decode(ids), got, expected)
            if generation.finish_reason == "length":
                assert len(got) == n
            else:  # stopped early at the end-of-text token, which serial generation produced there too
                assert got[-1] in engine.eos_ids
            assert "".join(pieces) == engine.decode(got)
        assert engine.batcher.stats.running == 0 and engine.batcher.stats.cache_tokens == 0  # every row left
        if "max_cache_tokens" in limits:
            assert engine.batcher.stats.cache_bytes <= 300 * engine.model.config.n_layer * 2 * 32 * 4
    finally:
        engine.close()


def test_a_decode_step_pauses_for_newcomers_and_no_token_changes(model_dir):
    """A request that arrives during a decode step pauses it before the next block: its prompt runs
    there, then the step goes on. Here each newcomer arrives inside a step (from the first block's
    hook), so each pauses exactly one step; every answer is still serial generation's."""
    from fermion.models.hf.llm_batch import EngineLimits, _decoder_blocks
    from fermion.models.hf.llm_engine import Sampling, TextGenerator

    engine = TextGenerator(str(model_dir), EngineLimits(max_sequences=4))
    try:
        prompts = [engine.encode(p) for p in PROMPTS[:3]]
        blocks = _decoder_blocks(engine.model, engine.model.config.n_layer)
        assert len(blocks) == engine.model.config.n_layer
        late: list = []

        def arrive(*_):
            if engine.batcher._pausable and len(late) < 2 and first.completion_tokens >= 5:
                late.append(engine.start(prompts[len(late) + 1], Sampling(max_new_tokens=20, temperature=0)))

        first = engine.start(prompts[0], Sampling(max_new_tokens=40, temperature=0))
        hook = blocks[0].register_forward_pre_hook(arrive, prepend=True)  # before the engine's own check
        try:
            answers = [list(first)] + [list(g) for g in late]  # every generation runs to its end
        finally:
            hook.remove()
        assert len(late) == 2 and engine.batcher.stats.paused == 2
        for ids, generation, pieces in zip(prompts, [first, *late], answers, strict=True):
            expected = _serial_greedy(engine.model, ids, generation.budget)
            assert generation.token_ids == expected[: len(generation.token_ids)]
            assert "".join(pieces) == engine.decode(generation.token_ids)
    finally:
        engine.close()


def test_newcomers_that_end_or_leave_during_a_pause_never_hold_a_row(model_dir):
    """Prefilled in a pause, one newcomer is done at its first token (max_tokens 1) and one is cancelled
    before the step ends: neither stays in the batch, and the running request goes on unchanged."""
    from fermion.models.hf.llm_batch import EngineLimits, _decoder_blocks
    from fermion.models.hf.llm_engine import Sampling, TextGenerator

    engine = TextGenerator(str(model_dir), EngineLimits(max_sequences=4))
    try:
        prompts = [engine.encode(p) for p in PROMPTS[:3]]
        blocks = _decoder_blocks(engine.model, engine.model.config.n_layer)
        late: list = []

        def arrive(*_):
            if engine.batcher._pausable and not late and first.completion_tokens >= 5:
                late.append(engine.start(prompts[1], Sampling(max_new_tokens=1, temperature=0)))
                late.append(engine.start(prompts[2], Sampling(max_new_tokens=30, temperature=0)))

        def leave(*_):  # after the pause at the first block, while the step goes on
            if len(late) == 2 and not late[1].cancelled and late[1].completion_tokens == 1:
                late[1].cancel()

        first = engine.start(prompts[0], Sampling(max_new_tokens=30, temperature=0))
        hooks = [blocks[0].register_forward_pre_hook(arrive, prepend=True), blocks[-1].register_forward_pre_hook(leave)]
        try:
            list(first)
            short, gone = (list(g) for g in late)
        finally:
            for hook in hooks:
                hook.remove()
        assert engine.batcher.stats.paused == 1
        assert late[0].finish_reason == "length" and late[0].completion_tokens == 1
        assert late[1].finish_reason is None and late[1].completion_tokens == 1  # cancelled: no token after its first
        assert first.token_ids == _serial_greedy(engine.model, prompts[0], 30)[: len(first.token_ids)]
        deadline = time.monotonic() + 5
        while engine.batcher.stats.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.batcher.stats.running == 0 and engine.batcher.stats.cache_tokens == 0
    finally:
        engine.close()


def test_limits_come_from_the_environment_with_clear_errors():
    from fermion.models.hf.llm_batch import EngineLimits, device_from_env, limits_from_env

    assert limits_from_env({}) is None
    assert limits_from_env({"FERMION_LLM_MAX_SEQUENCES": "4"}) == EngineLimits(max_sequences=4)
    assert limits_from_env({"FERMION_LLM_MAX_WAITING": "0"}) == EngineLimits(max_waiting=0)
    with pytest.raises(ValueError, match="FERMION_LLM_MAX_WAITING='lots' is not a whole number"):
        limits_from_env({"FERMION_LLM_MAX_WAITING": "lots"})
    with pytest.raises(ValueError, match="FERMION_LLM_MAX_SEQUENCES='0' is not a whole number of at least 1"):
        limits_from_env({"FERMION_LLM_MAX_SEQUENCES": "0"})
    with pytest.raises(ValueError, match="max_cache_tokens must be at least 1"):
        EngineLimits(max_cache_tokens=0)
    assert device_from_env({"FERMION_LLM_DEVICE": "cuda:1"}) == "cuda:1"
    with pytest.raises(ValueError, match="use cpu, cuda, cuda:N or mps"):
        device_from_env({"FERMION_LLM_DEVICE": "tpu"})


def test_a_request_cancelled_while_its_prompt_is_tokenised_generates_nothing(model_dir):
    from fermion.models.hf.llm_source import build

    service = build(str(model_dir), "text-generation")
    service.setup()
    stats = service.engine.batcher.stats
    long = {"prompt": "Hello", "max_tokens": 4000, "temperature": 0, "logit_bias": {"0": -100}}  # 0: end of text

    async def leave_while_tokenising() -> None:
        with service.engine._encoding:  # the tokenizer is busy with another prompt: this request waits for it
            request = asyncio.ensure_future(service.completions(**long))
            await asyncio.sleep(0)  # the request is now waiting for its prompt's tokens
            request.cancel()  # its client leaves (or its timeout fires)
            await asyncio.wait([request])
        deadline = time.monotonic() + 60
        while stats.finished == 0:  # the prompt is tokenised after all, and its generation queued
            assert time.monotonic() < deadline, "the cancelled request's generation never ended"
            await asyncio.sleep(0.01)

    try:
        asyncio.run(leave_while_tokenising())
        assert stats.generated_tokens < 100, f"an orphaned generation ran on ({stats.generated_tokens} tokens)"
        assert stats.running == 0 and stats.cache_tokens == 0
    finally:
        service.teardown()


# -- through a real server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory: pytest.TempPathFactory):
    env = {"FERMION_LLM_MAX_SEQUENCES": "4", "FERMION_LLM_MAX_WAITING": "64"}
    with running_server(f"hf:{model_dir}", tmp_dir=tmp_path_factory.mktemp("logs"), env=env, ready_timeout=180) as srv:
        yield srv


def _metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics").text
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def _wait_for_metric(url: str, name: str, value: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _metric(url, name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.05)


@pytest.mark.slow
def test_many_concurrent_streams_with_different_lengths_and_stops_get_their_solo_answers(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as client:

        def ask(i: int, stream: bool) -> tuple[str, str | None]:
            options = {
                "model": "tiny-llm",
                "prompt": PROMPTS[i % len(PROMPTS)],
                "max_tokens": [5, 60, 17, 33, 1, 48][i % 6],
                "temperature": 0,
                "stop": [["e"], None, [" t", "x"]][i % 3],
            }
            if not stream:
                choice = client.completions.create(**options).choices[0]
                return choice.text, choice.finish_reason
            chunks = list(client.completions.create(**options, stream=True))
            return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason

        solo = [ask(i, stream=False) for i in range(18)]  # one at a time: nothing to batch with
        with concurrent.futures.ThreadPoolExecutor(18) as pool:
            together = list(pool.map(lambda i: ask(i, stream=bool(i % 2)), range(18)))
    assert together == solo
    assert {reason for _, reason in solo} == {"stop", "length"}


@pytest.mark.slow
def test_a_client_that_leaves_mid_stream_frees_its_slot(server):
    body = {"prompt": "Hello", "max_tokens": 4000, "temperature": 0, "stream": True, "logit_bias": {"0": -100}}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            assert [next(lines) for _ in range(4)]  # it is generating
            assert _metric(server.url, "fermion_llm_sequences_running") == 1
        # the connection is closed: the sequence leaves the batch long before its 4000 tokens
        _wait_for_metric(server.url, "fermion_llm_sequences_running", 0)
        assert _metric(server.url, "fermion_llm_cache_tokens") == 0


@pytest.mark.slow
def test_a_full_waiting_line_answers_429_with_retry_after(model_dir, tmp_path):
    env = {"FERMION_LLM_MAX_SEQUENCES": "1", "FERMION_LLM_MAX_WAITING": "1"}
    long = {"prompt": "Hello", "max_tokens": 4000, "temperature": 0, "stream": True, "logit_bias": {"0": -100}}
    leave = threading.Event()

    def stream_until_told(url: str) -> int:
        with httpx.stream("POST", url + "/v1/completions", json=long, timeout=60) as answer:
            leave.wait(60)
            return answer.status_code

    with running_server(f"hf:{model_dir}", tmp_dir=tmp_path, env=env, ready_timeout=180) as srv:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            try:
                first = pool.submit(stream_until_told, srv.url)
                _wait_for_metric(srv.url, "fermion_llm_sequences_running", 1)
                second = pool.submit(stream_until_told, srv.url)
                _wait_for_metric(srv.url, "fermion_llm_sequences_waiting", 1)
                refused = httpx.post(srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
                assert refused.status_code == 429
                assert refused.headers["retry-after"] == "1"
                assert "busy" in refused.json()["error"]["message"]
                assert _metric(srv.url, "fermion_llm_requests_rejected_total") == 1
            finally:
                leave.set()
            assert first.result() == 200 and second.result() == 200
        _wait_for_metric(srv.url, "fermion_llm_sequences_running", 0)  # both left early: their slots are free again
        assert httpx.post(srv.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200
