"""Which `fermion[EXTRA]` brings a missing module, so a command run without its extra stops with one line.

`pip install fermion` installs the serving core only; `fermion data`, `train` and `up` need extras.
The extras are read from the installed package's own metadata (pyproject.toml's
`[project.optional-dependencies]`), so the hint always names an extra that exists.
"""

from __future__ import annotations

from fermion.extras import install_hint

#: The extra a command is about, when the missing module is in it (numpy is in several).
COMMAND_EXTRAS = {
    "data": "data",
    "train": "train",
    "report": "train",
    "models": "train",
    "up": "platform",
    "bench": "bench",
    "export": "ray",
}


def missing_extra_message(error: ModuleNotFoundError, argv: list[str]) -> str | None:
    """One line naming the missing module and the extra that installs it; None when no extra does."""
    command = next((word for word in argv if not word.startswith("-")), "")
    hint = install_hint(error, COMMAND_EXTRAS.get(command))
    if hint is None:
        return None
    what = f"`fermion {command}`" if command else "this command"
    return f"{what} needs {hint[0]}, which is not installed: {hint[1]}"
