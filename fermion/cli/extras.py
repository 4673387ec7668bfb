"""Which `fermion[EXTRA]` brings a missing module, so a command run without its extra stops with one line.

`pip install fermion` installs the serving core only; `fermion data`, `train` and `up` need extras.
The extras are read from the installed package's own metadata (pyproject.toml's
`[project.optional-dependencies]`), so the hint always names an extra that exists.
"""

from __future__ import annotations

import re
from functools import cache

#: Distributions whose import name is not their name with '-' → '_'.
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL", "pyyaml": "yaml", "swagger-ui-bundle-v2": "swagger_ui_bundle"}
#: The extra a command is about, when the missing module is in it (numpy is in several).
COMMAND_EXTRAS = {"data": "data", "train": "train", "report": "train", "models": "train", "up": "platform",
                  "bench": "bench", "export": "ray"}
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


def missing_extra_message(error: ModuleNotFoundError, argv: list[str]) -> str | None:
    """One line naming the missing module and the extra that installs it; None when no extra does."""
    module = (error.name or "").split(".")[0]
    if module not in extras_by_module():
        return None
    distribution, extras = extras_by_module()[module]
    command = next((word for word in argv if not word.startswith("-")), "")
    preferred = COMMAND_EXTRAS.get(command)
    extra = preferred if preferred in extras else extras[0]
    what = f"`fermion {command}`" if command else "this command"
    return f"{what} needs {distribution}, which is not installed: pip install 'fermion[{extra}]'"
