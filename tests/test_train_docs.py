"""docs/training.md's examples run, in order, against a real `fermion up` (see test_platform_docs.py for the rules)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, running_platform
from test_platform_docs import commands, runnable_blocks

pytestmark = pytest.mark.slow

PAGE = ROOT / "docs" / "training.md"


def test_the_training_page_runs(tmp_path: Path) -> None:
    blocks = runnable_blocks(PAGE.read_text())
    assert [lang for lang, _ in blocks].count("bash") >= 3 and any(lang == "python" for lang, _ in blocks)
    with running_platform(tmp_path / "data", "--gateway", "python") as platform:
        env = {
            **os.environ,
            "FERMION_HOME": str(platform.data_dir),
            "FERMION_TOKEN": platform.token,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "COLUMNS": "200",
        }
        env.pop("FERMION_URL", None)
        work = tmp_path / "work"
        work.mkdir()
        for lang, code in blocks:
            code = code.replace("http://127.0.0.1:8080", platform.url)
            if lang == "python":
                done = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=work, timeout=300
                )
                assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}\n{platform.log()[-3000:]}"
                assert "wine@1" in done.stdout and "accuracy" in done.stdout, done.stdout
                continue
            for command in commands(code):
                done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=work, timeout=300)
                assert done.returncode == 0, f"$ {command}\n{done.stdout}\n{done.stderr}\n{platform.log()[-3000:]}"
                if command.startswith("curl"):
                    assert done.stdout.strip() in ('"setosa"', '"versicolor"', '"virginica"'), done.stdout
        report = (work / "iris-report.html").read_text()
        assert "Model report: iris@1" in report and "data:image/png;base64," in report
