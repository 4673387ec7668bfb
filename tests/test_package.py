"""Packaging promises: `import fermion` stays light, and the public names are where users expect them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "sentence_transformers", "numpy", "uvicorn", "httpx", "pydantic", "typer", "rich")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_fermion_loads_nothing_heavy():
    loaded = _modules_after("import fermion")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_authoring_api_does_not_load_the_server_or_models():
    loaded = _modules_after("from fermion import Service, endpoint, File")
    assert not loaded & {"torch", "transformers", "uvicorn", "httpx", "numpy"}


def test_public_names():
    import fermion

    assert {"Service", "endpoint", "File", "Client", "AsyncClient", "APIError"} <= set(dir(fermion))
    assert fermion.Service.__module__ == "fermion.service"
