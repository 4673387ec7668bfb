"""docs/platform.md's examples run, in order, against a real `fermion up`.

A fenced block right after a `<!-- test: run -->` line is run: a ```bash block line by line
(each command must exit 0), a ```python block as a script. http://127.0.0.1:8080 becomes the test
platform's URL and `fmn_...` its admin token; the CLI finds the platform through FERMION_HOME,
as it would on the machine running `fermion up`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, running_platform

pytestmark = pytest.mark.slow

PAGE = ROOT / "docs" / "platform.md"
MARK = "<!-- test: run -->"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every block marked to run, in page order."""
    blocks = []
    for part in text.split(MARK)[1:]:
        found = BLOCK.match(part.lstrip("\n"))
        assert found, f"{MARK} must come right before a fenced block:\n{part[:200]}"
        blocks.append((found.group(1), found.group(2)))
    return blocks


def commands(script: str) -> list[str]:
    """Shell commands of a bash block: continuations joined, trailing '# ...' comments dropped."""
    joined = script.replace("\\\n", " ")
    return [re.split(r"\s{2,}#", line)[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_the_platform_page_runs(tmp_path: Path) -> None:
    blocks = runnable_blocks(PAGE.read_text())
    assert [lang for lang, _ in blocks].count("bash") >= 3 and any(lang == "python" for lang, _ in blocks)
    with running_platform(tmp_path / "data") as platform:
        env = {
            **os.environ,
            "FERMION_HOME": str(platform.data_dir),
            "FERMION_TOKEN": platform.token,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "COLUMNS": "200",
        }
        env.pop("FERMION_URL", None)
        for lang, code in blocks:
            code = code.replace("http://127.0.0.1:8080", platform.url).replace('"fmn_..."', repr(platform.token))
            if lang == "python":
                done = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
                )
                assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}\n{platform.log()[-3000:]}"
                continue
            for command in commands(code):
                done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
                assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}\n{platform.log()[-3000:]}"
                if command.startswith("curl"):
                    assert '"output":"echo: hi"' in done.stdout, done.stdout
        with platform.api() as api:
            echo = api.get("/api/v1/deployments/echo").json()
            assert echo["revision"] == 4 and echo["replicas"]["ready"] == 3  # update, then two rollbacks
            active = [t for t in api.get("/api/v1/tokens").json()["tokens"] if t["revoked_at"] is None]
            assert [t["name"] for t in active] == ["admin", "ci", "shop"]
            assert (active[2]["deployments"], active[2]["rate"]) == (["echo"], "10/s")
