"""`fermion serve hf:...` for text tasks, on tiny random models built here, called over real HTTP.

Weights are random, so the tests check what a user relies on whatever the model says: the shape
of answers, labels from the model's config, scores that are probabilities, documented examples,
and clear 422s for input the model cannot use.
"""

from __future__ import annotations

import concurrent.futures
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import FERMION, ROOT, RunningServer, running_servers
from tiny_models import text as tiny

pytestmark = pytest.mark.slow

# Server name → (model builder, extra CLI arguments). Each is one `fermion serve` process.
SERVERS = {
    "sentiment": (tiny.sentiment_model, ()),
    "ner": (tiny.ner_model, ()),
    "nli": (tiny.nli_model, ()),
    "masked": (tiny.masked_lm, ()),
    "qa": (tiny.qa_model, ()),
    "encoder": (tiny.encoder, ()),
    "text2text": (tiny.seq2seq_model, ()),
    "summarize": ("prefixed", ("--task", "summarization")),
    "translate": ("prefixed", ("--task", "translation")),
}
LONG_TEXT = "the big city river was good and the sun was great today. " * 12  # far over 32 tokens


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-text-models")
    built = {name: builder(root / name) for name, (builder, _) in SERVERS.items() if callable(builder)}
    built["prefixed"] = tiny.seq2seq_model(root / "prefixed", task_prefixes=True)
    return built


@pytest.fixture(scope="module")
def servers(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    """Every server, started at once (their model loading overlaps), stopped at once after the module."""
    logs = tmp_path_factory.mktemp("hf-text-logs")
    sources = {}
    for name, (builder, args) in SERVERS.items():
        model = models[name if callable(builder) else builder]
        sources[name] = (f"hf:{model}", *args)
    with running_servers(sources, tmp_dir=logs, env={"OMP_NUM_THREADS": "1"}) as running:
        yield running


def post(server: RunningServer, path: str, **body: object) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def ok(server: RunningServer, path: str, **body: object) -> object:
    response = post(server, path, **body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_ranked(answer: object, labels: set[str]) -> None:
    assert isinstance(answer, list) and answer
    assert {item["label"] for item in answer} <= labels
    scores = [item["score"] for item in answer]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


def test_text_classification_answers_every_label_with_probabilities(servers):
    srv = servers["sentiment"]
    answer = ok(srv, "/classify", text="the movie was great")
    assert_ranked(answer, set(tiny.SENTIMENT_LABELS))
    assert {item["label"] for item in answer} == set(tiny.SENTIMENT_LABELS)
    assert math.isclose(sum(item["score"] for item in answer), 1.0, rel_tol=1e-4)
    assert_ranked(ok(srv, "/classify", text=LONG_TEXT), set(tiny.SENTIMENT_LABELS))  # truncated, not refused
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # served in batches, answered one by one
        answers = list(pool.map(lambda i: ok(srv, "/classify", text=f"the film was good {i}"), range(8)))
    assert all(len(a) == 3 for a in answers)
    empty = post(srv, "/classify", text="")
    assert empty.status_code == 422 and "text" in empty.json()["error"]


def test_text_classification_docs_name_model_labels_and_example(servers, models):
    spec = httpx.get(servers["sentiment"].url + "/openapi.json").json()
    assert spec["info"]["title"] == f"{models['sentiment'].name} (text-classification)"
    assert "negative, neutral, positive" in spec["info"]["description"]
    operation = spec["paths"]["/classify"]["post"]
    assert operation["x-fermion"]["batch"]["max_batch_size"] == 32
    request = spec["components"]["schemas"]["ClassifyRequest"]
    assert request["required"] == ["text"] and request["properties"]["text"]["examples"]
    assert spec["components"]["schemas"]["LabelScore"]["properties"]["score"]["description"]


def test_token_classification_finds_entities_with_offsets_in_long_text(servers):
    srv = servers["ner"]
    text = "john lives in paris and mary works in london"
    entities = ok(srv, "/entities", text=text)
    assert isinstance(entities, list)
    for entity in entities:
        assert set(entity) == {"word", "label", "score", "start", "end"}
        assert entity["label"] in {"PER", "LOC"} and 0.0 <= entity["score"] <= 1.0
        assert text[entity["start"] : entity["end"]] == entity["word"]
    long_entities = ok(srv, "/entities", text=LONG_TEXT)
    assert all(LONG_TEXT[e["start"] : e["end"]] == e["word"] for e in long_entities)
    assert max(e["end"] for e in long_entities) > len(LONG_TEXT) // 2  # read past the first window


def test_zero_shot_scores_the_candidate_labels(servers):
    srv = servers["nli"]
    labels = ["sports", "politics", "music"]
    answer = ok(srv, "/classify", text="the team won the game", candidate_labels=labels)
    assert_ranked(answer, set(labels))
    assert len(answer) == 3 and math.isclose(sum(a["score"] for a in answer), 1.0, rel_tol=1e-4)
    multi = ok(
        srv, "/classify", text="the team won", candidate_labels=labels, multi_label=True, hypothesis_template="It is about {}."
    )
    assert {a["label"] for a in multi} == set(labels)
    repeated = post(srv, "/classify", text="x", candidate_labels=["a", "a"])
    assert repeated.status_code == 422 and "repeats" in repeated.json()["error"]
    template = post(srv, "/classify", text="x", candidate_labels=["a"], hypothesis_template="no slot")
    assert template.status_code == 422 and "{}" in template.json()["error"]
    assert post(srv, "/classify", text="x", candidate_labels=[]).status_code == 422


def test_fill_mask_ranks_vocabulary_tokens(servers):
    srv = servers["masked"]
    candidates = ok(srv, "/fill_mask", text="paris is the [MASK] of france")
    assert len(candidates) == 5
    scores = [c["score"] for c in candidates]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for candidate in candidates:
        assert candidate["token"] in {*tiny.WORDS, *tiny.SUFFIXES, *".,?!'"}
        assert candidate["sequence"].startswith("paris is the ") and "[MASK]" not in candidate["sequence"]
    missing = post(srv, "/fill_mask", text="paris is the capital of france")
    assert missing.status_code == 422 and "[MASK]" in missing.json()["error"]
    assert "has 2" in post(srv, "/fill_mask", text="[MASK] is the [MASK]").json()["error"]
    too_long = post(srv, "/fill_mask", text="[MASK] " + LONG_TEXT)
    assert too_long.status_code == 422 and "too long" in too_long.json()["error"]
    spec = httpx.get(srv.url + "/openapi.json").json()
    assert "[MASK]" in spec["components"]["schemas"]["FillMaskRequest"]["properties"]["text"]["examples"][0]


def test_question_answering_returns_a_span_of_the_context(servers):
    srv = servers["qa"]
    context = "john lives in paris. mary works in london."
    answer = ok(srv, "/answer", question="where does mary work?", context=context)
    assert context[answer["start"] : answer["end"]] == answer["answer"] and 0.0 <= answer["score"] <= 1.0
    long_context = LONG_TEXT + " mary works in london."
    found = ok(srv, "/answer", question="where does mary work?", context=long_context)  # read in windows
    assert long_context[found["start"] : found["end"]] == found["answer"]
    long_question = post(srv, "/answer", question=LONG_TEXT, context=context)
    assert long_question.status_code == 422 and "question is too long" in long_question.json()["error"]


def test_feature_extraction_embeds_the_same_alone_or_batched(servers):
    srv = servers["encoder"]
    alone = ok(srv, "/embed", text="paris is big")
    assert len(alone) == 16 and all(isinstance(x, float) for x in alone)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # batched with longer texts: padding is masked out
        together = list(pool.map(lambda t: ok(srv, "/embed", text=t), ["paris is big", LONG_TEXT, "the sun", "rain today"]))
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(alone, together[0], strict=True))


def test_text2text_generation_is_detected_and_refuses_text_over_the_limit(servers):
    srv = servers["text2text"]
    assert "/generate" in httpx.get(srv.url + "/openapi.json").json()["paths"]
    assert isinstance(ok(srv, "/generate", text="paris is the capital", max_new_tokens=5)["text"], str)
    too_long = post(srv, "/generate", text=LONG_TEXT)
    assert too_long.status_code == 422 and "at most 64" in too_long.json()["error"]
    assert post(srv, "/generate", text="x", max_new_tokens=0).status_code == 422


def test_summarization_truncates_long_text(servers):
    srv = servers["summarize"]
    summary = ok(srv, "/summarize", text=LONG_TEXT, max_new_tokens=8)
    assert set(summary) == {"text"} and isinstance(summary["text"], str)


def test_translation_with_task_prefixes_picks_the_language_pair(servers):
    srv = servers["translate"]
    assert isinstance(ok(srv, "/translate", text="the house", source_lang="en", target_lang="fr", max_new_tokens=5)["text"], str)
    unknown = post(srv, "/translate", text="the house", source_lang="en", target_lang="es")
    assert unknown.status_code == 422 and "en to de, en to fr" in unknown.json()["error"]
    assert isinstance(ok(srv, "/translate", text="the house", target_lang="de", max_new_tokens=5)["text"], str)  # en → de
    assert post(srv, "/translate", text="the house").status_code == 422  # two pairs: which one?


def test_translation_with_language_codes_forces_the_target_language(models):
    # In-process (the HTTP path is covered above): a model whose tokenizer has language-code tokens.
    from fermion import InvalidInput
    from fermion.models.hf import load

    service = load(str(models["text2text"]), task="translation")
    service.setup()
    assert isinstance(service.translate("the house", 5, None, "de_DE").text, str)
    assert isinstance(service.translate("the house", 5, None, None).text, str)
    with pytest.raises(InvalidInput, match="target_lang 'xx_YY' is not a language code"):
        service.translate("the house", 5, None, "xx_YY")


def serve_fails(*args: str) -> str:
    """Run `fermion serve ARGS` expecting a bad-source exit (2); return its output."""
    done = subprocess.run([*FERMION, "serve", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr + done.stdout


def test_cli_refuses_unknown_tasks_and_non_model_paths(models):
    message = serve_fails(f"hf:{models['sentiment']}", "--task", "poetry")
    assert "unknown task 'poetry'" in message and "text-classification" in message and "fill-mask" in message
    assert len(message.strip().splitlines()) == 1
    weights = models["sentiment"] / "model.safetensors"
    assert "is a file" in serve_fails(f"hf:{weights}", "--task", "fill-mask")
