"""`hf:` causal LMs served for real (`fermion serve hf:DIR`) and used through the official `openai` client.

The model is a tiny random GPT-2 built locally (tests/tiny_models/llm.py): its text is gibberish,
but greedy decoding is deterministic, so answers can be compared across calls and modes.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import re
import subprocess

import httpx
import openai
import pytest
from support import FERMION, ROOT, running_server

from fermion import Client
from fermion.models.hf.llm_text import StopMatcher
from fermion.sources import SourceError, load_service

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    from tiny_models.llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny-llm")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory: pytest.TempPathFactory):
    with running_server(f"hf:{model_dir}", tmp_dir=tmp_path_factory.mktemp("logs"), ready_timeout=180) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def chat(oai: openai.OpenAI, **options):
    return oai.chat.completions.create(model="tiny-llm", messages=options.pop("messages", HELLO), **options)


def greedy(oai: openai.OpenAI, max_tokens: int = 12) -> str:
    return chat(oai, max_tokens=max_tokens, temperature=0).choices[0].message.content


# -- stop sequences, piece by piece (no model needed) --------------------------------------------


def test_stop_text_split_across_pieces_is_held_back_then_cut():
    stops = StopMatcher(["o w", "END"])
    assert stops.feed("Hel") == ("Hel", False)
    assert stops.feed("lo") == ("l", False)  # "o" may start "o w": held back
    assert stops.feed(" wor") == ("", True)  # "Hell" was sent; the stop text and what follows are not
    plain = StopMatcher(["END"])
    assert plain.feed("the EN") == ("the ", False)
    assert plain.feed("Dless") == ("", True)
    unfinished = StopMatcher(["END"])
    assert unfinished.feed("to be E") == ("to be ", False)
    assert unfinished.flush() == "E"  # the text ended without a stop: nothing is lost


# -- OpenAI chat completions ----------------------------------------------------------------------


@pytest.mark.slow
def test_chat_completion_has_the_openai_shape_and_real_token_counts(oai, model_dir):
    from transformers import AutoTokenizer

    answer = chat(oai, max_tokens=8, temperature=0)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == "tiny-llm"
    [choice] = answer.choices
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(HELLO, add_generation_prompt=True, tokenize=False)
    assert answer.usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert 1 <= answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


@pytest.mark.slow
def test_chat_stream_pieces_join_to_the_same_greedy_answer(oai):
    whole = chat(oai, max_tokens=10, temperature=0)
    chunks = list(chat(oai, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2
    assert "".join(pieces) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.mark.slow
def test_stop_sequence_cuts_the_answer(oai):
    full = greedy(oai)
    # a two-character stop text that first appears after the start, so the cut is visible
    at, stop = next((i, full[i : i + 2]) for i in range(1, len(full) - 1) if full.find(full[i : i + 2]) == i)
    cut = chat(oai, max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == full[:at]
    assert cut.choices[0].finish_reason == "stop"
    streamed = chat(oai, max_tokens=12, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == full[:at]


@pytest.mark.slow
def test_seeded_sampling_repeats_and_sampling_parameters_are_accepted(oai):
    options = {
        "max_tokens": 12,
        "temperature": 1.0,
        "top_p": 0.9,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "user": "someone",
        "metadata": {"team": "a"},
        "parallel_tool_calls": False,
    }
    first, second = chat(oai, **options), chat(oai, **options)
    assert first.choices[0].message.content == second.choices[0].message.content


@pytest.mark.slow
def test_n_choices_are_sampled_apart_and_counted_together(oai):
    options = {"max_tokens": 12, "temperature": 1.0, "seed": 7}
    answer = chat(oai, n=3, **options)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    texts = [c.message.content for c in answer.choices]
    assert texts[0] == chat(oai, **options).choices[0].message.content  # choice 0 is the request's own seed
    assert len(set(texts)) > 1  # the others are sampled with seeds of their own
    plain = oai.completions.create(model="tiny-llm", prompt="The quick", n=2, max_tokens=5, temperature=0)
    assert len(plain.choices) == 2 and plain.choices[0].text == plain.choices[1].text  # greedy: the same answer twice
    assert (
        plain.usage.completion_tokens
        == 2 * oai.completions.create(model="tiny-llm", prompt="The quick", max_tokens=5, temperature=0).usage.completion_tokens
    )


@pytest.mark.slow
def test_concurrent_requests_take_turns_without_mixing_answers(oai):
    expected = greedy(oai)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: greedy(oai), range(4)))
    assert answers == [expected] * 4


def refusal(call) -> str:
    """The server's reason for a 422, as the openai client shows it (OpenAI-shaped error bodies)."""
    with pytest.raises(openai.UnprocessableEntityError) as info:
        call()
    assert info.value.body["type"] == "invalid_request_error"
    return info.value.message


@pytest.mark.slow
def test_options_this_server_cannot_honour_are_422_with_a_reason(oai):
    assert "n=2 with stream" in refusal(lambda: chat(oai, n=2, max_tokens=4, stream=True))
    assert "json_object" in refusal(lambda: chat(oai, max_tokens=4, response_format={"type": "json_object"}))
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]
    assert "text-only model" in refusal(lambda: chat(oai, messages=image))
    long = [{"role": "user", "content": "hello there " * 200}]
    assert "shorten the prompt" in refusal(lambda: chat(oai, messages=long, max_tokens=4))
    assert "temperature" in refusal(lambda: chat(oai, temperature=5))
    assert "top_logprobs needs logprobs: true" in refusal(lambda: chat(oai, max_tokens=2, top_logprobs=2))
    assert "top_logprobs" in refusal(lambda: chat(oai, max_tokens=2, logprobs=True, top_logprobs=21))
    echoed = lambda: oai.completions.create(model="tiny-llm", prompt="x", max_tokens=2, echo=True, logprobs=1)  # noqa: E731
    assert "logprobs with echo" in refusal(echoed)


@pytest.mark.slow
def test_chat_logprobs_are_per_token_from_the_models_distribution_streamed_or_not(oai):
    answer = chat(oai, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    [choice] = answer.choices
    content = choice.logprobs.content
    end_of_text = 1 if choice.finish_reason == "stop" else 0  # the end-of-text token has no entry
    assert len(content) == answer.usage.completion_tokens - end_of_text >= 1
    for entry in content:
        alternatives = [alt.logprob for alt in entry.top_logprobs]
        assert entry.logprob <= 0 and len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the picked token is the likeliest
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert bytes(entry.bytes).decode("utf-8") == entry.token
    assert chat(oai, max_tokens=2, temperature=0).choices[0].logprobs is None  # only when asked
    chunks = list(chat(oai, max_tokens=6, temperature=0, logprobs=True, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in content], abs=1e-4)
    assert all(e.top_logprobs == [] for e in streamed)  # logprobs without top_logprobs: no alternatives


@pytest.mark.slow
def test_completion_logprobs_have_the_legacy_shape(oai):
    answer = oai.completions.create(model="tiny-llm", prompt="The quick brown", max_tokens=5, temperature=0, logprobs=2)
    found = answer.choices[0].logprobs
    assert len(found.tokens) == len(found.token_logprobs) == len(found.top_logprobs) == len(found.text_offset) >= 1
    assert found.text_offset == [sum(len(t) for t in found.tokens[:i]) for i in range(len(found.tokens))]
    assert all(1 <= len(top) <= 2 for top in found.top_logprobs)  # alternatives decoding to one text share a key
    assert max(found.top_logprobs[0].values()) == pytest.approx(found.token_logprobs[0])  # greedy: the likeliest


@pytest.mark.slow
def test_unknown_openai_fields_are_ignored_not_refused(oai):
    answer = chat(oai, max_tokens=2, extra_body={"top_k": 5, "some_future_option": True})
    assert answer.choices[0].message.role == "assistant"


# -- OpenAI completions and models ------------------------------------------------------------------


@pytest.mark.slow
def test_completions_plain_echoed_and_streamed(oai):
    plain = oai.completions.create(model="tiny-llm", prompt="The quick brown", max_tokens=6, temperature=0)
    assert plain.object == "text_completion"
    [choice] = plain.choices
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= 6 and plain.usage.prompt_tokens > 0
    echoed = oai.completions.create(model="tiny-llm", prompt="The quick brown", max_tokens=6, temperature=0, echo=True)
    assert echoed.choices[0].text == "The quick brown" + choice.text
    streamed = oai.completions.create(model="tiny-llm", prompt="The quick brown", max_tokens=6, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == choice.text


@pytest.mark.slow
def test_models_lists_the_served_model(oai):
    models = oai.models.list()
    assert [m.id for m in models.data] == ["tiny-llm"]
    assert models.data[0].owned_by == "fermion"


# -- native endpoints, docs ---------------------------------------------------------------------


@pytest.mark.slow
def test_native_generate_and_its_stream_agree(server):
    with Client(server.url) as client:
        result = client.generate(prompt="The quick brown", max_new_tokens=6, temperature=0)
        assert set(result) == {"text", "finish_reason", "usage"}
        assert result["usage"]["completion_tokens"] <= 6
        pieces = list(client.generate_stream(prompt="The quick brown", max_new_tokens=6, temperature=0))
    assert len(pieces) >= 2 and "".join(pieces) == result["text"]


@pytest.mark.slow
def test_openapi_documents_every_endpoint_with_examples(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    assert doc["info"]["title"] == "tiny-llm"
    for path, method in [
        ("/generate", "post"),
        ("/generate_stream", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/completions", "post"),
        ("/v1/models", "get"),
    ]:
        assert method in doc["paths"][path], path
    ref = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    messages = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]["messages"]
    assert messages["examples"][0][0]["role"] == "user"
    assert doc["paths"]["/generate_stream"]["post"]["x-fermion"]["stream"] is True


@pytest.mark.slow
def test_bad_native_input_is_422_naming_the_field(server):
    answer = httpx.post(server.url + "/generate", json={"prompt": "hi", "temperature": 5})
    assert answer.status_code == 422 and "temperature" in answer.json()["error"]


# -- a model without a chat template; bad sources -------------------------------------------------


@pytest.mark.slow
def test_model_without_chat_template(tmp_path):
    from tiny_models.llm import build_tiny_llm

    folder = build_tiny_llm(tmp_path / "plain-lm", chat_template=None)
    with running_server(f"hf:{folder}", tmp_dir=tmp_path, ready_timeout=180) as srv:
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0) as client:
            reason = refusal(lambda: client.chat.completions.create(model="plain-lm", messages=HELLO))
            assert re.search("no chat template.*/v1/completions", reason), reason
            assert client.completions.create(model="plain-lm", prompt="Hello", max_tokens=3).choices[0].text is not None


def _serve_error(*args: str) -> tuple[int, list[str]]:
    result = subprocess.run([*FERMION, "serve", *args, "--port", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return result.returncode, [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_bad_model_folders_are_one_clear_line(tmp_path):
    (tmp_path / "no-tokenizer").mkdir()
    (tmp_path / "no-tokenizer" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    code, lines = _serve_error(f"hf:{tmp_path / 'no-tokenizer'}")
    assert code == 2 and len(lines) == 1 and re.search(r"no tokenizer.*tokenizer\.save_pretrained", lines[0]), lines
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    code, lines = _serve_error(f"hf:{tmp_path / 'encoder'}", "--task", "text-generation")
    assert code == 2 and len(lines) == 1 and "needs a causal language model, but this is BertForMaskedLM" in lines[0], lines


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here: no missing-extra error")
def test_vllm_source_without_the_extra_says_how_to_install_it(model_dir):
    with pytest.raises(
        SourceError, match=r"the 'vllm:' source needs vllm, which is not installed; run: pip install 'fermion\[vllm\]'"
    ):
        load_service(f"vllm:{model_dir}")
    code, lines = _serve_error(f"vllm:{model_dir}")
    assert code == 2 and len(lines) == 1 and "needs vllm" in lines[0] and "pip install 'fermion[vllm]'" in lines[0], lines
