"""`hf:NAME_OR_PATH` — a transformers model becomes a typed Service for its pipeline task.

The task comes from `--task`, else from the model's config (its architecture). Each task is
built by a function `build(model_dir, task, device) -> Service` in a module of this package.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fermion.models.device import check_device
from fermion.models.kinds import SourceError
from fermion.models.resolve import offline_hub, resolve_model_dir
from fermion.service import Service

#: task → "module:function" building its Service; modules are imported only when used.
TASKS: dict[str, str] = {
    "text-classification": "fermion.models.hf.text:build",
    "token-classification": "fermion.models.hf.text:build",
    "zero-shot-classification": "fermion.models.hf.text:build",
    "fill-mask": "fermion.models.hf.text:build",
    "question-answering": "fermion.models.hf.text:build",
    "summarization": "fermion.models.hf.text:build",
    "text2text-generation": "fermion.models.hf.text:build",
    "translation": "fermion.models.hf.text:build",
    "feature-extraction": "fermion.models.hf.text:build",
    "image-classification": "fermion.models.hf.vision:build",
    "object-detection": "fermion.models.hf.vision:build",
    "image-segmentation": "fermion.models.hf.vision:build",
    "automatic-speech-recognition": "fermion.models.hf.audio:build",
    "text-generation": "fermion.models.hf.llm_source:build",
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification", "asr": "automatic-speech-recognition"}

# Architecture name endings → task, most specific first.
_ARCHITECTURE_TASKS: tuple[tuple[str, str], ...] = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
    ("ForObjectDetection", "object-detection"),
    ("ForSemanticSegmentation", "image-segmentation"),
    ("ForInstanceSegmentation", "image-segmentation"),
    ("ForUniversalSegmentation", "image-segmentation"),
    ("Model", "feature-extraction"),
)


def supported_tasks() -> str:
    return ", ".join(sorted(TASKS))


def read_config(model_dir: str) -> dict[str, Any]:
    """The model's config.json (empty when it has none)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def infer_task(config: dict[str, Any], model_dir: str | None = None) -> str | None:
    """The pipeline task implied by a config: an explicit hint, else the architecture."""
    hinted = config.get("fermion_task") or config.get("pipeline_tag")
    if hinted:
        return ALIASES.get(hinted, hinted)
    labels = {str(label).lower() for label in (config.get("label2id") or {})}
    for architecture in config.get("architectures") or ():
        for ending, task in _ARCHITECTURE_TASKS:
            if architecture.endswith(ending):
                if task == "text-classification" and "entailment" in labels:
                    return "zero-shot-classification"
                if task == "text2text-generation" and model_dir is not None and _reads_audio(model_dir):
                    return "automatic-speech-recognition"  # Whisper-style encoder-decoders
                return task
    return None


def _reads_audio(model_dir: str) -> bool:
    """Whether the model's preprocessor is an audio feature extractor."""
    path = os.path.join(model_dir, "preprocessor_config.json")
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as fh:
        kind = str(json.load(fh).get("feature_extractor_type", ""))
    return "audio" in kind.lower() or "speech" in kind.lower() or "whisper" in kind.lower()


def load(name: str, task: str | None = None, device: str | None = None, **options: Any) -> Service:
    """Build the Service for `hf:NAME_OR_PATH`, on `device` (`--device`; None: the task's default)."""
    if options:
        raise SourceError(f"hf: sources do not take {', '.join('--' + k.replace('_', '-') for k in options)}")
    offline_hub()
    model_dir = resolve_model_dir(name, "hf")
    if device is not None:
        device = check_device(device, f"hf:{name}")
    config = read_config(model_dir)
    chosen = ALIASES.get(task, task) if task else infer_task(config, model_dir)
    if chosen is None:
        raise SourceError(
            f"hf:{name}: cannot tell the task from its config (architectures: {config.get('architectures')}); "
            f"pass --task, one of: {supported_tasks()}"
        )
    if chosen not in TASKS:
        raise SourceError(f"hf:{name}: unknown task '{chosen}'; supported tasks: {supported_tasks()}")
    module_name, _, func_name = TASKS[chosen].partition(":")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("fermion."):
            raise SourceError(f"hf:{name}: the '{chosen}' task is not available in this version of Fermion") from None
        raise
    return getattr(module, func_name)(model_dir, chosen, device)
