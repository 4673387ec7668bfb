"""What the `hf:` task Services share: the base class, per-model naming, limits and the result types.

Nothing here imports torch or transformers at module level; loading happens in each Service's
`setup()`, after the server listens.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, Field

from fermion.models.kinds import SourceError
from fermion.service import Service

S = TypeVar("S", bound="ModelService")

#: Longest text read in windows (entities, question answering): bounds the work one request can ask for.
MAX_CHARACTERS = 100_000
#: How many labels a classification answer lists at most (best first).
TOP_LABELS = 5
# Tokenizers without a configured limit report a huge `model_max_length`; ignore values above this.
_UNSET_LENGTH = 1_000_000


class LabelScore(BaseModel):
    """One label and the model's score for it."""

    label: str = Field(description="A label from the model's config (`id2label`).", examples=["positive"])
    score: float = Field(description="The model's probability for this label, from 0 to 1.", examples=[0.93])


class GeneratedText(BaseModel):
    """Text written by a sequence-to-sequence model."""

    text: str = Field(description="The generated text.", examples=["A short summary."])


class ModelService(Service):
    """A Service over one local Hugging Face model folder; subclasses load it in `setup()`."""

    #: The pipeline task this Service serves (for messages and docs).
    task: ClassVar[str] = ""

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        self.model_dir = model_dir
        self.device = device


def model_name(model_dir: str) -> str:
    """A short name for docs: `org/name` for a Hugging Face cache snapshot, else the folder's name."""
    parts = os.path.normpath(model_dir).split(os.sep)
    for part in reversed(parts):
        if part.startswith("models--"):
            return part[len("models--") :].replace("--", "/")
    return parts[-1] or model_dir


def for_model(
    base: type[S], model_dir: str, description: str, attrs: dict[str, Any] | None = None, device: str | None = None
) -> S:
    """An instance of a per-model subclass of `base` on `device` (default the CPU): its docs title names the model and task."""
    namespace: dict[str, Any] = {
        "name": f"{model_name(model_dir)} ({base.task})",
        "__doc__": description,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        **(attrs or {}),
    }
    return type(base.__name__, (base,), namespace)(model_dir, device or "cpu")


def read_json(model_dir: str, filename: str) -> dict[str, Any]:
    """A JSON file of the model folder (empty when missing or unreadable)."""
    try:
        with open(os.path.join(model_dir, filename), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def config_labels(model_dir: str) -> list[str]:
    """The labels of the model's config (`id2label`) in id order."""
    id2label = read_json(model_dir, "config.json").get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=lambda k: int(k))]


def describe_labels(model_dir: str, shown: int = 20) -> str:
    """The config's labels for docs: all of them, or a count and the first few when there are many."""
    labels = config_labels(model_dir)
    if not labels:
        return "none in its config"
    if len(labels) <= shown:
        return ", ".join(labels)
    return f"{len(labels)} labels: {', '.join(labels[:shown])}, ..."


def token_limit(tokenizer: Any, config: Any) -> int | None:
    """The most tokens the model reads at once: the tokenizer's limit, else the position embeddings.

    A tokenizer that did not know the limit is told it, so that its truncation and windowing work.
    """
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _UNSET_LENGTH:
        return limit
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        tokenizer.model_max_length = positions
        return positions
    return None


def check_model_dir(model_dir: str, source: str) -> None:
    """A `SourceError` unless `model_dir` is a folder with a config.json (what transformers loads)."""
    if not os.path.isdir(model_dir):
        raise SourceError(f"{source}: {model_dir} is a file; hf: sources are model folders (config.json, weights, tokenizer)")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise SourceError(f"{source}: {model_dir} has no config.json; point at a folder saved with save_pretrained()")


def load_pipeline(task: str, model_dir: str, device: str, **kwargs: Any) -> Any:
    """`transformers.pipeline(task)` for the local folder, on `device`, never reaching for a hub."""
    from transformers import pipeline

    return pipeline(task, model=model_dir, device=device, **kwargs)


def ranked(items: Any, limit: int = TOP_LABELS) -> list[LabelScore]:
    """Pipeline `{"label", "score"}` dicts as `LabelScore`s, best first, at most `limit`."""
    pairs = sorted(((str(i["label"]), float(i["score"])) for i in items), key=lambda pair: -pair[1])
    return [LabelScore(label=label, score=score) for label, score in pairs[:limit]]
