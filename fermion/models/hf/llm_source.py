"""`hf:` causal LM folders → the text-generation Service: the folder's checks, the device, the engine's bounds.

`fermion.models.hf` calls `build` for the `text-generation` task; `vllm:` reuses the checks and naming.
"""

from __future__ import annotations

import importlib.util
import os
import re

from fermion.models.device import check_device
from fermion.models.hf import read_config
from fermion.models.hf.llm import TextGenerationService
from fermion.models.hf.llm_batch import device_from_env, limits_from_env
from fermion.models.kinds import SourceError
from fermion.service import Service

_CAUSAL_ENDINGS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def build(model_dir: str, task: str, device: str | None = None) -> Service:
    """The text-generation Service for a local causal LM folder (config, weights, tokenizer), on `device`
    (`--device`, else FERMION_LLM_DEVICE, else a GPU when torch sees one)."""
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)  # → "pip install 'fermion[hf]'"
    where = f"hf:{model_dir}"
    check_causal_lm(model_dir, where, task)
    model_id = model_name(model_dir)
    try:
        limits = limits_from_env(os.environ)
        device = device or device_from_env(os.environ)
    except ValueError as exc:
        raise SourceError(f"{where}: {exc}") from None
    if device is not None:
        device = check_device(device, where)
    return named_service(TextGenerationService, model_id)(model_dir, model_id, limits, device)


def check_causal_lm(model_dir: str, where: str, task: str = "text-generation") -> None:
    """A SourceError unless `model_dir` is a folder holding a causal LM's config.json and its tokenizer."""
    if not os.path.isdir(model_dir):
        raise SourceError(f"{where}: {task} needs a model folder (config.json, weights, tokenizer), not a file")
    config = read_config(model_dir)
    if not config:
        raise SourceError(f"{where}: no config.json in that folder; save the model there with model.save_pretrained(folder)")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(_CAUSAL_ENDINGS) for a in architectures):
        raise SourceError(
            f"{where}: {task} needs a causal language model, but this is {', '.join(architectures)}; "
            "serve it with the --task its architecture is for, or pick a causal LM (…ForCausalLM)"
        )
    if not any(os.path.isfile(os.path.join(model_dir, name)) for name in _TOKENIZER_FILES):
        raise SourceError(
            f"{where}: no tokenizer in that folder; save it next to the model with tokenizer.save_pretrained(folder)"
        )


def named_service(base: type[TextGenerationService], model_id: str) -> type[TextGenerationService]:
    """A subclass of `base` whose docs title and description name the model."""
    return type(
        "TextGeneration",
        (base,),
        {
            "name": model_id,
            "__doc__": f"Text generation with {model_id}: `/generate` and `/generate_stream`, and an "
            "OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) for OpenAI clients.",
            "__module__": base.__module__,
        },
    )


def model_name(model_dir: str) -> str:
    """The id clients see: `org/name` for a Hugging Face cache folder, else the folder's name."""
    match = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", model_dir.replace(os.sep, "/"))
    if match:
        return f"{match.group(1)}/{match.group(2)}"
    return os.path.basename(os.path.normpath(model_dir)) or "model"
