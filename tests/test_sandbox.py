"""Issue 17's attack: a deploy token's code reads the platform's secrets. The sandbox must leave it nothing.

A real `fermion up` (with a secret in its environment) opens one folder for code; a deploy token
deploys a Service from it that reads what it can (the admin token, the database, the platform's
environment, another deployment's env through /proc) and answers it; the test fails if any secret is
in the answer. Sources that run code from anywhere else are refused with one message, whether or not
the file exists.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import ROOT, start_platform, stop_process, stop_replicas, wait_for

from fermion.platform.code_folders import UNREADABLE, CodeFolders
from fermion.platform.errors import Invalid
from fermion.platform.sandbox import Sandbox

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")

PLATFORM_SECRET = "platform-secret-3f9a"
DEPLOYMENT_SECRET = "s3cr3t"

PROBE = '''
from __future__ import annotations

import glob
import os

from fermion import Service, endpoint

DATA_DIR = {data_dir!r}


def readable() -> list[str]:
    """Everything secret-shaped this process can read."""
    seen = [f"env {{k}}={{v}}" for k, v in os.environ.items()]
    home = os.environ.get("FERMION_HOME", "")
    names = ["admin.token", "fermion.db", "up.json"]
    paths = [os.path.join(folder, name) for folder in (DATA_DIR, home) for name in names]
    paths += glob.glob(os.path.join(DATA_DIR, "**", "*"), recursive=True)
    paths += glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline")
    for path in paths:
        try:
            with open(path, "rb") as fh:
                seen.append(f"file {{path}}=" + fh.read(4096).decode("utf-8", "replace"))
        except OSError:
            pass
    return seen


if os.environ.get("LEAK_AT_CHECK"):  # the source check runs this too: make it fail with what it saw
    raise RuntimeError("seen: " + " | ".join(readable()).replace("\\n", " "))


class Probe(Service):
    """Answers what it could read."""

    @endpoint
    def predict(self) -> dict[str, list[str]]:
        return {{"seen": readable()}}
'''


@needs_bwrap
def test_a_deploy_tokens_code_reads_no_secret(tmp_path: Path) -> None:
    code, data = tmp_path / "code", tmp_path / "data"
    code.mkdir()
    (code / "probe.py").write_text(PROBE.format(data_dir=str(data.resolve())))
    platform = start_platform(data, env={"FERMION_SECRET_PROBE": PLATFORM_SECRET}, code_from=(code,))
    try:
        admin = platform.api()
        token = admin.post("/api/v1/tokens", json={"name": "dev", "scopes": ["deploy"]}).json()["token"]
        api = platform.api(token)
        assert api.get("/api/v1/info").json()["sandbox"] == "bubblewrap"
        source = str(code / "probe.py") + ":Probe"
        for name, env in (("victim", {"SECRET": DEPLOYMENT_SECRET}), ("probe", {"OWN": "visible"})):
            created = api.post("/api/v1/deployments", json={"name": name, "source": source, "env": env})
            assert created.status_code == 201, created.text
        for name in ("victim", "probe"):
            wait_for(lambda name=name: api.get(f"/api/v1/deployments/{name}").json()["status"] == "ready", what=name)

        answer = api.post("/run/probe/predict", json={})
        assert answer.status_code == 200, answer.text
        seen = "\n".join(answer.json()["seen"])
        assert "env OWN=visible" in seen and "file /proc/self/environ=" in seen  # it did read what it may
        secrets = {"admin token": platform.token, "deploy token": token, "platform env": PLATFORM_SECRET}
        secrets["another deployment's env"] = DEPLOYMENT_SECRET
        leaked = [what for what, secret in secrets.items() if secret in seen]
        assert not leaked, f"the replica read {leaked}"
        assert str(data.resolve() / "admin.token") + "=" not in seen and "SQLite format" not in seen
        assert "FERMION_DB" not in seen

        # The source check runs the file too (at import): it is sandboxed the same way.
        checked = api.post("/api/v1/deployments", json={"name": "leak", "source": source, "env": {"LEAK_AT_CHECK": "1"}})
        assert checked.status_code == 422 and "seen: env" in checked.text, checked.text
        assert platform.token not in checked.text and PLATFORM_SECRET not in checked.text
        assert DEPLOYMENT_SECRET not in checked.text
    finally:
        stop_process(platform.proc)
        stop_replicas(data)


@needs_bwrap
def test_code_outside_the_opened_folders_is_refused_alike(tmp_path: Path) -> None:
    code, data, outside = tmp_path / "code", tmp_path / "data", tmp_path / "outside"
    code.mkdir()
    outside.mkdir()
    shutil.copy(ROOT / "examples" / "echo.py", outside / "echo.py")
    os.symlink(outside / "echo.py", code / "link.py")
    platform = start_platform(data, code_from=(code,))
    try:
        admin = platform.api()
        token = admin.post("/api/v1/tokens", json={"name": "dev", "scopes": ["deploy"]}).json()["token"]
        api = platform.api(token)
        refused = [
            str(outside / "echo.py") + ":Echo",  # exists
            str(outside / "missing.py") + ":Echo",  # does not
            str(code / ".." / "outside" / "echo.py") + ":Echo",  # `..` out of the folder
            str(code / "link.py") + ":Echo",  # a symlink out of it
            str(data / "anything.py") + ":Echo",  # the data dir is never open
            "echo:Echo",  # a module no opened folder holds
        ]
        answers = [api.post("/api/v1/deployments", json={"name": "x", "source": s}) for s in refused]
        answers.append(
            api.post("/api/v1/deployments", json={"name": "x", "source": "sklearn:/tmp/x.pkl", "options": {"trust_pickle": True}})
        )
        bodies = {answer.text for answer in answers}
        assert {answer.status_code for answer in answers} == {422}
        assert len(bodies) == 1, bodies
        assert "--code-from" in bodies.pop() and str(ROOT) not in "".join(a.text for a in answers)

        # A model file outside the opened folders that does not load: one answer whether it exists or not,
        # naming neither the path's fate nor the platform's folder.
        probes = ["onnx:/etc/passwd", "onnx:/etc/no-such.onnx", "sklearn:/etc/hostname", "sklearn:/nope.skops"]
        probes += ["st:/etc", "st:/no/such/model", "hf:/etc", "hf:./no-such-model"]
        probed = [api.post("/api/v1/deployments", json={"name": "x", "source": s}) for s in probes]
        assert {a.status_code for a in probed} == {422}
        assert {a.json()["message"].replace(s, "SOURCE") for a, s in zip(probed, probes, strict=True)} == {
            "source 'SOURCE' does not load: " + UNREADABLE
        }
        # A model source runs no code: a deploy token may still try one (and hears why it does not load).
        model = api.post("/api/v1/deployments", json={"name": "m", "source": "model:nothing-here"})
        assert model.status_code == 422 and "--code-from" not in model.text
        assert str(data.resolve()) not in model.text and os.getcwd() not in model.text
    finally:
        stop_process(platform.proc)
        stop_replicas(data)


def test_code_folders_resolve_paths_and_modules_before_they_decide(tmp_path: Path) -> None:
    opened, data = tmp_path / "code", tmp_path / "code" / "data"
    (opened / "pkg").mkdir(parents=True)
    data.mkdir()
    for path in (opened / "pkg" / "__init__.py", opened / "pkg" / "svc.py", data / "x.py"):
        path.write_text("")
    folders = CodeFolders.of([opened], closed=[data])
    assert folders.root_of("pkg.svc:Svc", {}) == opened.resolve()  # found as a file, never imported
    assert folders.root_of(str(opened / "pkg" / "svc.py") + ":Svc", {}) == opened.resolve()
    assert folders.root_of(str(data / "x.py") + ":Svc", {}) is None  # the data dir stays closed inside an opened folder
    assert folders.root_of("json:Svc", {}) is None  # an installed module is no opened folder's
    for model in ("st:all-MiniLM-L6-v2", "model:iris", "onnx:/elsewhere/model.onnx", "sklearn:/elsewhere/m.skops"):
        folders.check(model, {})  # no code of their own: no folder needed
    with pytest.raises(Invalid, match="--code-from"):
        folders.check("sklearn:/elsewhere/m.pkl", {"trust_pickle": True})
    with pytest.raises(ValueError, match="no such folder"):
        CodeFolders.of([tmp_path / "missing"])


def test_a_replicas_environment_is_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERMION_DB", "postgresql://fermion:pw@db/fermion")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret")
    monkeypatch.setenv("FERMION_MAX_QUEUE", "7")  # a serving setting: replicas follow it
    env = Sandbox(tmp_path).env({"OWN": "1"}, tmp_path / "run")
    assert "FERMION_DB" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["OWN"] == "1" and env["FERMION_MAX_QUEUE"] == "7"
    assert env["HOME"] == str(tmp_path / "run" / "home") and env["FERMION_HOME"] == str(tmp_path)


def test_no_sandbox_is_said_loudly(tmp_path: Path) -> None:
    bare = Sandbox(tmp_path, missing="install bubblewrap")
    assert bare.description == "none: install bubblewrap"  # GET /api/v1/info's "sandbox"
    banner = "\n".join(bare.banner_lines("local"))
    assert "WARNING no sandbox (install bubblewrap)" in banner and "admin.token" in banner
    assert "Code    from none" in banner
