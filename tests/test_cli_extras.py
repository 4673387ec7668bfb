"""`pip install fermion` without extras: a command that needs one stops with one line naming it.

The missing packages are simulated by blocking their import (`sys.modules[name] = None`) in a
`fermion` process, which fails exactly as a missing package does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fermion.cli.extras import missing_extra_message
from fermion.extras import extras_by_module


def run_without(modules: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    blocker = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    code = blocker + f"sys.argv = ['fermion', *{list(args)!r}]\nfrom fermion.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_extras_come_from_the_packages_own_metadata() -> None:
    known = extras_by_module()
    assert known["sqlalchemy"] == ("sqlalchemy", ("platform",))
    assert known["sklearn"][0] == "scikit-learn" and {"data", "train"} <= set(known["sklearn"][1])
    assert "fermion" not in known and "pytest" not in known  # `all` and `dev` are not what a hint should name


@pytest.mark.parametrize(
    ("argv", "module", "expected"),
    [
        (["data", "add", "x.csv"], "pandas", "`fermion data` needs pandas, which is not installed: pip install 'fermion[data]'"),
        (
            ["train", "x.csv"],
            "sklearn.model_selection",
            "`fermion train` needs scikit-learn, which is not installed: pip install 'fermion[train]'",
        ),
        (["--version"], "lightgbm", "this command needs lightgbm, which is not installed: pip install 'fermion[train]'"),
    ],
)
def test_the_message_names_the_commands_extra(argv: list[str], module: str, expected: str) -> None:
    assert missing_extra_message(ModuleNotFoundError(f"No module named {module!r}", name=module), argv) == expected


def test_a_module_no_extra_provides_is_not_translated() -> None:
    assert missing_extra_message(ModuleNotFoundError("No module named 'nope'", name="nope"), ["train"]) is None


@pytest.mark.parametrize(
    ("blocked", "command", "extra"),
    [
        (["sklearn"], ["data", "add", "sample:iris"], "data"),
        (["sklearn"], ["train", "sample:iris", "--budget", "5s"], "train"),
        (["sqlalchemy", "fastapi", "alembic"], ["up", "--port", "0"], "platform"),
    ],
)
def test_a_command_without_its_extra_says_what_to_install(
    blocked: list[str], command: list[str], extra: str, tmp_path: Path
) -> None:
    done = run_without(blocked, *command, "--data-dir", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"pip install 'fermion[{extra}]'" in last, done.stderr


def test_the_platform_api_names_the_extra_a_route_needs():
    """A dataset route on a platform installed with `fermion[platform]` alone: 501, naming the extra."""
    import json

    from fermion.platform.api.common import not_installed

    answer = not_installed("/api/v1/datasets", ModuleNotFoundError("No module named 'pandas'", name="pandas"))
    body = json.loads(answer.body)
    assert answer.status_code == 501 and body["error"] == "not_installed"
    assert "pip install 'fermion[data]'" in body["message"] and "pandas" in body["message"]
    odd = json.loads(not_installed("/api/v1/models", ModuleNotFoundError("x", name="nothing_we_know")).body)
    assert "nothing_we_know" in odd["message"]
