"""The repository carries everything its tests read: a clone anywhere passes, with nothing beside it.

Two guards: no test, benchmark or build file names a path outside the tree (`../shared`, the
author's folders), and the tests that read data files pass in a copy of the repository made in an
empty temporary folder, importing the copy's own `fermion`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from support import ROOT

#: Tests that read files of their own (reference data) besides the code: run in the copy.
DATA_TESTS = ["tests/test_kuberay.py"]
#: Spellings of a path outside the repository: a parent of the root, a sibling folder, this machine's work folders
OUTSIDE = re.compile(r"\.\./shared|ROOT\.parent|\.parent\.parent\.parent|/work/|/root/")
#: Where code that runs for tests, benchmarks and builds lives.
CODE = ("tests", "benchmarks", "examples", ".ci", "Makefile", "pyproject.toml")


def tracked_files() -> list[str]:
    """The files a fresh clone of this checkout would have (tracked, plus new ones not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]


def test_no_test_or_build_file_names_a_path_outside_the_repository() -> None:
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    found = []
    for name in tracked_files():
        if (
            not name.startswith(CODE)
            or name == this
            or name.startswith("benchmarks/results/")
            or name.endswith((".png", ".json"))
        ):
            continue
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            # Sample paths inside strings that tests hand to the code under test are fine; reading them is not.
            if OUTSIDE.search(line) and "# outside-ok" not in line:
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_the_data_tests_pass_in_a_copy_with_nothing_beside_it(tmp_path_factory) -> None:
    outer = Path(tmp_path_factory.mktemp("lonely", numbered=True))
    clone = outer / "fermion-clone"
    for name in tracked_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target)
    assert sorted(p.name for p in outer.iterdir()) == ["fermion-clone"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FERMION_", "PYTEST_"))}
    env.update(PYTHONPATH=str(clone), HF_HUB_OFFLINE="1")  # the copy's fermion, not the checkout's editable install
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DATA_TESTS],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "skipped: none" in output, output[-2000:]  # tests/skip_summary.py: every data test ran
    probe = subprocess.run(
        [sys.executable, "-c", "import fermion; print(fermion.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip().startswith(str(clone)), probe.stdout + probe.stderr
