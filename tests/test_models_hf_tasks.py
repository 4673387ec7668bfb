"""Which task an `hf:` model is served as: from --task, a config hint, or its architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fermion.models.hf import infer_task, load
from fermion.sources import SourceError


@pytest.mark.parametrize(
    ("architecture", "task"),
    [
        ("BertForSequenceClassification", "text-classification"),
        ("BertForTokenClassification", "token-classification"),
        ("BertForMaskedLM", "fill-mask"),
        ("BertForQuestionAnswering", "question-answering"),
        ("GPT2LMHeadModel", "text-generation"),
        ("LlamaForCausalLM", "text-generation"),
        ("T5ForConditionalGeneration", "text2text-generation"),
        ("ViTForImageClassification", "image-classification"),
        ("DetrForObjectDetection", "object-detection"),
        ("SegformerForSemanticSegmentation", "image-segmentation"),
        ("Wav2Vec2ForCTC", "automatic-speech-recognition"),
        ("BertModel", "feature-extraction"),
    ],
)
def test_task_from_architecture(architecture, task):
    assert infer_task({"architectures": [architecture]}) == task


def test_nli_classifier_is_zero_shot():
    config = {"architectures": ["BertForSequenceClassification"], "label2id": {"entailment": 0, "neutral": 1, "contradiction": 2}}
    assert infer_task(config) == "zero-shot-classification"


def test_whisper_style_model_is_speech_recognition(tmp_path: Path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_extractor_type": "WhisperFeatureExtractor"}))
    assert infer_task({"architectures": ["WhisperForConditionalGeneration"]}, str(tmp_path)) == "automatic-speech-recognition"


def test_explicit_hint_wins():
    assert (
        infer_task({"architectures": ["BertForSequenceClassification"], "pipeline_tag": "sentiment-analysis"})
        == "text-classification"
    )


def test_unknown_and_undetectable_tasks_are_clear_errors(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Mystery"]}))
    with pytest.raises(SourceError, match="cannot tell the task .* pass --task, one of: .*fill-mask"):
        load(str(tmp_path))
    with pytest.raises(SourceError, match="unknown task 'dance'; supported tasks: .*text-generation"):
        load(str(tmp_path), task="dance")


def test_a_hub_name_that_is_not_on_this_machine_is_a_clear_offline_error(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing downloaded before
    with pytest.raises(
        SourceError, match=r"model 'some-org/some-model' is not available offline: .* pass a local folder: hf:\./"
    ):
        load("some-org/some-model")
    with pytest.raises(SourceError, match=r"hf:\./no-such-folder: no such file or folder"):
        load("./no-such-folder")
