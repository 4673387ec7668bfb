"""docs/cli-reference.md is what the CLI says about itself, and it names every variable the code reads.

When a command or option changes, this fails until the page is regenerated:
`python -m fermion.cli.reference --write`.
"""

from __future__ import annotations

import re
import subprocess
import sys

from support import ROOT

from fermion.cli import reference

#: `FERMION_*` strings in the code that are not environment variables.
NOT_VARIABLES = {"FERMION_BENCH_JSON"}  # the marker line of wrk's Lua report (fermion/bench/wrk.py)


def variables_in_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "fermion").rglob("*.py"):
        names |= set(re.findall(r"\bFERMION_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    return names - NOT_VARIABLES


def test_the_page_is_generated_from_the_cli_as_it_is_now() -> None:
    page = (ROOT / reference.PAGE).read_text(encoding="utf-8")
    assert page == reference.render(), "docs/cli-reference.md is stale: run python -m fermion.cli.reference --write"


def test_every_command_and_visible_option_is_on_the_page() -> None:
    page = (ROOT / reference.PAGE).read_text(encoding="utf-8")
    found = list(reference.commands())
    paths = {command.path for command in found}
    assert {"fermion serve", "fermion up", "fermion deploy", "fermion train", "fermion data add", "fermion token create"} <= paths
    for command in found:
        assert f"### `{command.path}`" in page
        for name, _ in command.rows:
            assert f"`{name}`" in page.replace("\\|", "|"), f"{command.path}: {name} is not on the page"


def test_every_variable_the_code_reads_is_documented_and_every_documented_one_exists() -> None:
    documented = {variable.name for variable in reference.environment()}
    in_code = variables_in_code()
    assert not in_code - documented, (
        f"read by the code but not in fermion/cli/reference.py ENVIRONMENT: {sorted(in_code - documented)}"
    )
    serve_settings = {variable.name for variable in reference._serve_variables()}  # built as FERMION_<FIELD> at run time
    assert not documented - in_code - serve_settings, (
        f"documented but never read: {sorted(documented - in_code - serve_settings)}"
    )


def test_the_check_mode_passes_on_the_committed_page() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fermion.cli.reference", "--check", "--root", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_configuration_page_lists_every_serve_option() -> None:
    """docs/configuration.md explains `fermion serve`'s options with their defaults; it must not miss one."""
    serve = next(command for command in reference.commands() if command.path == "fermion serve")
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, _ in serve.rows:
        option = next((word.rstrip(",") for word in name.split() if word.startswith("--")), None)
        if option:
            assert f"| `{option}` |" in page, f"docs/configuration.md's option table misses {option}"
