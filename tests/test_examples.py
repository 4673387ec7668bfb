"""Every example in examples/ served for real and used the way its docstring says."""

from __future__ import annotations

import concurrent.futures
import hashlib
import math

import httpx
import pytest
from support import EXAMPLES, running_server

from fermion import Client


def test_echo(tmp_path):
    with running_server(EXAMPLES / "echo.py", tmp_dir=tmp_path) as srv, Client(srv.url) as client:
        assert client.predict(text="hi", times=2) == {"output": "echo: hihi"}
        assert client.info() == {"name": "echo", "prefix": "echo: "}
        # one request must not make the replica build a 22 GB string (issue 14): refused before predict runs
        huge = httpx.post(f"{srv.url}/predict", json={"text": "hi", "times": 458601300})
        assert huge.status_code == 422
        assert huge.json()["detail"] == [
            {"field": "times", "message": "Input should be less than or equal to 100", "type": "less_than_equal"}
        ]
        long = httpx.post(f"{srv.url}/predict", json={"text": "x" * 10_001})
        assert long.status_code == 422 and long.json()["detail"][0]["field"] == "text"
        assert httpx.post(f"{srv.url}/predict", json={"text": "x" * 10_000, "times": 100}).status_code == 200


def test_streaming(tmp_path):
    with running_server(EXAMPLES / "streaming.py", tmp_dir=tmp_path) as srv, Client(srv.url) as client:
        assert list(client.count(n=4)) == [1, 2, 3, 4]
        assert "".join(client.spell(word="fermion")) == "fermion"
        assert httpx.post(f"{srv.url}/count", json={"n": 10**12}).status_code == 422  # not a stream that never ends
        assert httpx.post(f"{srv.url}/count", json={"n": 1, "delay": 3600}).status_code == 422


def test_upload(tmp_path):
    sample = tmp_path / "notes.txt"
    sample.write_text("hello fermion\n")
    with running_server(EXAMPLES / "upload.py", tmp_dir=tmp_path) as srv, Client(srv.url) as client:
        described = client.describe(upload=sample)
        assert described["size"] == 14 and described["filename"] == "notes.txt"
        assert described["preview"] == "hello fermion\n"
        assert described["sha256"] == hashlib.sha256(b"hello fermion\n").hexdigest()
        assert client.size(upload=b"12345") == 5


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.mark.slow
def test_minilm_embeddings_rank_meaning(tmp_path):
    sentences = ["A man is eating food.", "A man eats a meal.", "The stock market fell today."]
    with running_server(EXAMPLES / "embeddings.py", tmp_dir=tmp_path, ready_timeout=180) as srv, Client(srv.url) as client:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # concurrent requests share a batch
            food, meal, market = pool.map(lambda s: client.embed(text=s), sentences)
        assert len(food) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in food)), 1.0, rel_tol=1e-3)
        assert _cosine(food, meal) > _cosine(food, market) + 0.3
        assert client.similarity(a=sentences[0], b=sentences[1]) > client.similarity(a=sentences[0], b=sentences[2])
