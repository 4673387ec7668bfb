"""The model source kinds (`st:`, `hf:`, `vllm:`, `sklearn:`, `onnx:`, `model:`) and what every adapter shares.

Which adapter serves each kind, the extra that brings its libraries, and `SourceError`, the error
every adapter raises. It imports no adapter, so each adapter can import it; the dispatcher that
turns a source string into a Service is `fermion.sources`.
"""

from __future__ import annotations

#: Source kinds served by adapters in `fermion.models`, loaded only when used ("module:function").
ADAPTERS: dict[str, str] = {
    "st": "fermion.models.sentence_transformers:load",
    "hf": "fermion.models.hf:load",
    "vllm": "fermion.models.vllm_engine:load",
    "sklearn": "fermion.models.sklearn:load",
    "onnx": "fermion.models.onnx:load",
    "model": "fermion.models.trained.adapter:load",
}

#: The extra that brings each source kind's libraries, and the modules it must provide.
EXTRAS = {"st": "st", "hf": "hf", "vllm": "vllm", "sklearn": "sklearn", "onnx": "onnx", "model": "train"}
REQUIRED_MODULES = {
    "st": ("sentence_transformers", "torch"),
    "hf": ("transformers", "torch"),
    "vllm": ("vllm", "transformers", "torch"),
    "sklearn": ("sklearn", "skops"),
    "onnx": ("onnxruntime", "numpy"),
    "model": ("sklearn", "skops", "pandas"),
}


class SourceError(Exception):
    """A source string could not be turned into a Service; the message is meant for people."""


def split_source(source: str) -> tuple[str, str]:
    """`"st:all-MiniLM-L6-v2"` → `("st", "all-MiniLM-L6-v2")`; plain paths and modules are `"py"`."""
    scheme, sep, rest = source.partition(":")
    if sep and (scheme == "py" or scheme in ADAPTERS):
        return scheme, rest
    return "py", source


def missing_extra_message(scheme: str, exc: ImportError) -> str:
    """One line naming the missing library and the `pip install` that brings it."""
    missing = getattr(exc, "name", None) or str(exc)
    extra = EXTRAS.get(scheme, scheme)
    return f"the '{scheme}:' source needs {missing}, which is not installed; run: pip install 'fermion[{extra}]'"
