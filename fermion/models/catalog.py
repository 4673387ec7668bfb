"""What `fermion models` lists: the model families Fermion serves, their tasks and a runnable line each."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """A source kind and what it serves."""

    prefix: str
    name: str
    extra: str
    tasks: tuple[str, ...]
    example: str


FAMILIES: tuple[Family, ...] = (
    Family(
        "st:",
        "sentence-transformers",
        "st",
        ("embed (batched)", "similarity (batched)", "POST /v1/embeddings (OpenAI)", "GET /info"),
        "fermion serve st:all-MiniLM-L6-v2",
    ),
    Family(
        "hf:",
        "transformers pipelines: text",
        "hf",
        (
            "text-classification",
            "token-classification",
            "zero-shot-classification",
            "fill-mask",
            "question-answering",
            "summarization",
            "text2text-generation",
            "translation",
            "feature-extraction",
        ),
        "fermion serve hf:./my-sentiment-model",
    ),
    Family(
        "hf:",
        "transformers pipelines: vision and audio",
        "hf",
        ("image-classification", "object-detection", "image-segmentation", "automatic-speech-recognition"),
        "fermion serve hf:./my-vit --task image-classification",
    ),
    Family(
        "hf:",
        "transformers causal LMs",
        "hf",
        ("text-generation", "POST /v1/chat/completions (OpenAI)", "POST /v1/completions (OpenAI)"),
        "fermion serve hf:./my-llm",
    ),
    Family(
        "vllm:",
        "vLLM's engine for causal LMs (GPU; untested on Fermion's CI)",
        "vllm",
        ("text-generation", "POST /v1/chat/completions (OpenAI)", "POST /v1/completions (OpenAI)"),
        "fermion serve vllm:./my-llm",
    ),
    Family(
        "sklearn:",
        "scikit-learn (skops files; pickle only with --trust-pickle)",
        "sklearn",
        ("predict (batched)", "predict_proba (batched)"),
        "fermion serve sklearn:./model.skops",
    ),
    Family("onnx:", "ONNX Runtime", "onnx", ("predict (batched)",), "fermion serve onnx:./model.onnx"),
)
