"""Which `fermion[EXTRA]` brings a missing module, read from the installed package's own metadata.

`pip install fermion` installs the serving core only; data, training, the platform and Ray come
with extras. The CLI and the platform's API both turn a missing module into one line naming the
`pip install 'fermion[...]'` that brings it; the extras are read from pyproject.toml's
`[project.optional-dependencies]` as installed, so the hint always names an extra that exists.
"""

from __future__ import annotations

import re
from functools import cache

#: Distributions whose import name is not their name with '-' → '_'.
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL", "pyyaml": "yaml", "swagger-ui-bundle-v2": "swagger_ui_bundle"}
_REQUIREMENT = re.compile(r"""^\s*([A-Za-z0-9_.-]+)[^;]*;\s*extra\s*==\s*["']([\w-]+)["']""")


@cache
def extras_by_module() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Top-level import name → (its distribution, the extras that install it)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        requirements = requires("fermion") or []
    except PackageNotFoundError:  # running from a source tree that was never installed
        return {}
    found: dict[str, tuple[str, list[str]]] = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if not match or match.group(2) in ("all", "dev") or match.group(1).lower() == "fermion":
            continue
        distribution = match.group(1).lower()
        module = IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))
        extras = found.setdefault(module, (distribution, []))[1]
        if match.group(2) not in extras:
            extras.append(match.group(2))
    return {module: (distribution, tuple(extras)) for module, (distribution, extras) in found.items()}


def install_hint(error: ModuleNotFoundError, preferred: str | None = None) -> tuple[str, str] | None:
    """(the missing distribution, the `pip install 'fermion[...]'` line that brings it), or None when no
    extra does; `preferred` is the extra to name when several install it."""
    module = (error.name or "").split(".")[0]
    if module not in extras_by_module():
        return None
    distribution, extras = extras_by_module()[module]
    extra = preferred if preferred in extras else extras[0]
    return distribution, f"pip install 'fermion[{extra}]'"
