"""`fermion data add|ls|show`, run as a user runs them: a real process with FERMION_HOME set to a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import FERMION, ROOT


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def fermion(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FERMION_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([*FERMION, "data", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_add_ls_show(home: Path, tmp_path: Path):
    csv = tmp_path / "Churn.csv"
    csv.write_text("age,plan,label\n31,basic,stay\n45,,leave\n22,pro,stay\n")
    added = fermion(home, "add", str(csv))
    assert added.returncode == 0, added.stderr
    assert "added churn@1: 3 rows, 3 columns (age, plan, label)" in added.stdout
    assert "labels: leave=1, stay=2" in added.stdout
    assert (home / "datasets" / "churn" / "1" / "manifest.json").is_file()

    again = fermion(home, "add", str(csv), "--name", "churn")
    assert again.returncode == 0 and again.stdout.startswith("already there: churn@1")

    listed = fermion(home, "ls")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if "churn" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:5] == ["churn", "1", "table", "3", "3"]

    shown = fermion(home, "show", "churn@1")
    assert shown.returncode == 0, shown.stderr
    for text in ("churn@1", "Schema", "plan", "Label balance (label)", "66.7%", "First 3 rows", "basic"):
        assert text in shown.stdout, text

    info = json.loads(fermion(home, "show", "churn", "--json").stdout)
    assert info["ref"] == "churn@1" and info["missing"] == 1 and len(info["preview"]) == 3
    assert {c["name"]: c["missing"] for c in info["columns"]} == {"age": 0, "plan": 1, "label": 0}


def test_add_sample_with_data_dir_option(tmp_path: Path, home: Path):
    result = fermion(home, "add", "sample:iris", "--data-dir", str(tmp_path / "elsewhere"))
    assert result.returncode == 0, result.stderr
    assert "added iris@1: 150 rows, 5 columns" in result.stdout
    assert (tmp_path / "elsewhere" / "datasets" / "iris" / "1" / "manifest.json").is_file()
    assert not home.exists()


def test_ls_when_empty(home: Path):
    result = fermion(home, "ls")
    assert result.returncode == 0 and "no datasets yet" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("add", "sample:nope"), "unknown sample 'nope'; known samples: iris"),
        (("add", "missing.csv"), "no file or folder named 'missing.csv'"),
        (("show", "iris"), "no dataset named 'iris': there are no datasets yet"),
    ],
)
def test_bad_input_is_one_red_line(home: Path, args: tuple[str, ...], expected: str):
    assert expected in one_error_line(fermion(home, *args))


def test_malformed_csv_and_unknown_name(home: Path, tmp_path: Path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n4,5,6\n")
    assert "Expected 2 fields in line 4, saw 3" in one_error_line(fermion(home, "add", str(tmp_path / "bad.csv")))
    (tmp_path / "iris.csv").write_text("a,target\n1,x\n")
    assert fermion(home, "add", str(tmp_path / "iris.csv")).returncode == 0
    assert "did you mean 'iris'?" in one_error_line(fermion(home, "show", "irsi"))
