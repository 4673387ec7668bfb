"""Deployment secrets at rest (docs/security.md): env values are encrypted in the database, the key lives
in the data dir (or FERMION_SECRET_KEY), plaintext from before is sealed at open, and a wrong key fails at start."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient
from support import EXAMPLES

from fermion.platform.store.database import Store, default_url
from fermion.platform.store.secrets import KEY_VARIABLE, SECRET_KEY_FILE, SecretKeyError, new_key

SECRET = "s3cr3t-value"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return default_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")


def raw_engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.pool.NullPool)


def raw_env_columns(url: str) -> list[str]:
    """Every stored env, as someone who can read the database sees it."""
    with raw_engine(url).connect() as connection:
        rows = [
            *connection.exec_driver_sql("SELECT env FROM deployments"),
            *connection.exec_driver_sql("SELECT env FROM revisions"),
        ]
    return [row[0] if isinstance(row[0], str) else json.dumps(row[0]) for row in rows]


def raw_env_values(url: str) -> list[str]:
    """Every kept env value, as someone who can read the database sees it."""
    with raw_engine(url).connect() as connection:
        return [row[0] for row in connection.exec_driver_sql("SELECT value FROM env_values")]


def database_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in data_dir.glob("fermion.db*"))


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    from fermion.platform.backends.local import LocalBackend
    from fermion.platform.controlplane import ControlPlane
    from fermion.platform.sandbox import Sandbox

    store = Store.open(tmp_path)
    _, token = store.create_token("admin", ["admin"])
    sandbox = Sandbox.probe(tmp_path, [EXAMPLES])  # the deployed example's folder is open to code, as --code-from does
    client = TestClient(ControlPlane(store, LocalBackend(tmp_path, sandbox=sandbox), metrics_interval_s=1.0))
    client.headers["authorization"] = f"Bearer {token}"
    try:
        yield client, store
    finally:
        store.close()


def test_a_deployed_secret_is_nowhere_in_the_database_file_or_the_audit_log(plane, tmp_path: Path) -> None:
    client, store = plane
    body = {"name": "echo", "source": f"{EXAMPLES / 'echo.py'}:Echo", "env": {"API_KEY": SECRET}}
    assert client.post("/api/v1/deployments", json=body).status_code == 201
    changed = client.patch("/api/v1/deployments/echo", json={"env": {"API_KEY": SECRET, "MODE": "fast"}})
    assert changed.status_code == 200 and changed.json()["env"] == {"API_KEY": "***", "MODE": "***"}

    assert SECRET.encode() not in database_bytes(tmp_path)
    audit = client.get("/api/v1/audit").json()
    assert audit and SECRET not in json.dumps(audit)
    # Replicas still get the values: the records layer opens them.
    assert store.get_deployment("echo").env == {"API_KEY": SECRET, "MODE": "fast"}
    assert [rev.env for rev in store.list_revisions("echo")] == [{"API_KEY": SECRET}, {"API_KEY": SECRET, "MODE": "fast"}]
    assert stat.S_IMODE((tmp_path / SECRET_KEY_FILE).stat().st_mode) == 0o600


def test_env_is_encrypted_on_sqlite_and_postgresql(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.create_deployment("echo", "app.py:Echo", env={"API_KEY": SECRET})
        store.update_deployment("echo", env={"API_KEY": SECRET + "-2"})
        store.update_deployment("echo", env={"API_KEY": SECRET + "-2"})  # unchanged: no new revision
        assert store.get_deployment("echo").revision == 2
    stored = raw_env_columns(store_url)
    assert len(stored) == 3 and all("$refs" in env and SECRET not in env for env in stored)  # names, and ids
    values = raw_env_values(store_url)
    assert len(values) == 2 and all(SECRET not in value for value in values)  # each value once, encrypted
    with Store.open(store_url) as reopened:
        assert reopened.get_deployment("echo").env == {"API_KEY": SECRET + "-2"}


def test_a_value_is_kept_once_and_forgetting_it_ends_the_revisions_that_used_it(plane, tmp_path: Path) -> None:
    client, store = plane
    body = {"name": "echo", "source": f"{EXAMPLES / 'echo.py'}:Echo", "env": {"API_KEY": SECRET}, "min_replicas": 0}
    assert client.post("/api/v1/deployments", json=body).status_code == 201
    assert client.patch("/api/v1/deployments/echo", json={"env": {"API_KEY": SECRET, "MODE": "a"}}).status_code == 200
    assert client.patch("/api/v1/deployments/echo", json={"env": {"API_KEY": "rotated", "MODE": "a"}}).status_code == 200
    assert len(raw_env_values(default_url(tmp_path))) == 3  # SECRET once for revisions 1 and 2, MODE once, "rotated"
    forgot = client.post("/api/v1/deployments/echo/forget-unused-env")
    assert forgot.json() == {"forgotten": 1, "revisions": [1, 2]}
    assert len(raw_env_values(default_url(tmp_path))) == 2 and store.get_deployment("echo").env["API_KEY"] == "rotated"
    revisions = client.get("/api/v1/deployments/echo/revisions").json()["revisions"]
    assert [r["forgotten"] for r in revisions] == [["API_KEY"], ["API_KEY"], []]
    refused = client.post("/api/v1/deployments/echo/rollback", json={"revision": 2})
    assert refused.status_code == 422 and "forgotten" in refused.json()["message"] and SECRET not in refused.text
    assert client.post("/api/v1/deployments/echo/forget-unused-env").json() == {"forgotten": 0, "revisions": [1, 2]}
    audit = client.get("/api/v1/audit").json()["entries"]
    assert audit[0]["action"] == "deployment.forget_env" and SECRET not in json.dumps(audit)


def test_a_whole_env_sealed_the_old_way_moves_to_kept_values_at_open(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.create_deployment("echo", "app.py:Echo")
        old_way = json.dumps(store.secrets.seal({"API_KEY": SECRET}))
    with raw_engine(store_url).begin() as connection:  # as a store from before env_values wrote it
        connection.execute(sa.text("UPDATE deployments SET env = :env"), {"env": old_way})
        connection.execute(sa.text("UPDATE revisions SET env = :env"), {"env": old_way})
    with Store.open(store_url) as reopened:
        assert reopened.get_deployment("echo").env == {"API_KEY": SECRET}
        assert reopened.list_revisions("echo")[0].env == {"API_KEY": SECRET}
        assert reopened.seal_secrets() == 0
    assert all("$refs" in env for env in raw_env_columns(store_url)) and len(raw_env_values(store_url)) == 1


def test_plaintext_from_before_is_read_and_sealed_at_open(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.create_deployment("echo", "app.py:Echo")
    with raw_engine(store_url).begin() as connection:  # as a store from before encryption wrote it
        plain = json.dumps({"API_KEY": SECRET})
        connection.execute(sa.text("UPDATE deployments SET env = :env"), {"env": plain})
        connection.execute(sa.text("UPDATE revisions SET env = :env"), {"env": plain})
    with Store.open(store_url) as reopened:
        assert reopened.get_deployment("echo").env == {"API_KEY": SECRET}
        assert reopened.list_revisions("echo")[0].env == {"API_KEY": SECRET}
        assert reopened.seal_secrets() == 0  # already sealed
    assert all(SECRET not in env for env in raw_env_columns(store_url))


def test_a_wrong_or_lost_key_fails_at_open_with_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(tmp_path) as store:
        store.create_deployment("echo", "app.py:Echo", env={"API_KEY": SECRET})
    (tmp_path / SECRET_KEY_FILE).unlink()  # lost: a new key is made, and it opens nothing
    with pytest.raises(SecretKeyError, match="restore secret.key or set FERMION_SECRET_KEY"):
        Store.open(tmp_path)
    monkeypatch.setenv(KEY_VARIABLE, "not-a-key")
    with pytest.raises(SecretKeyError, match="is not a secret key"):
        Store.open(tmp_path)


def test_the_key_file_is_made_once_even_by_racing_processes(tmp_path: Path) -> None:
    stores: list[Store] = []
    threads = [threading.Thread(target=lambda: stores.append(Store(default_url(tmp_path)))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 8
    sealed = [store.secrets.seal({"A": "b"}) for store in stores]
    assert all(store.secrets.reveal(env) == {"A": "b"} for store in stores for env in sealed)
    assert len((tmp_path / SECRET_KEY_FILE).read_text().split()) == 1
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.new"))


def test_rotation_reseals_every_env_with_the_first_key(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = new_key(), new_key()
    monkeypatch.setenv(KEY_VARIABLE, old)
    with Store.open(store_url) as store:
        store.create_deployment("echo", "app.py:Echo", env={"API_KEY": SECRET})
    monkeypatch.setenv(KEY_VARIABLE, f"{new},{old}")
    with Store.open(store_url) as store:
        assert store.seal_secrets(reseal=True) == 1  # the one value, which revision 1 refers to as well
    monkeypatch.setenv(KEY_VARIABLE, new)
    with Store.open(store_url) as store:
        assert store.get_deployment("echo").env == {"API_KEY": SECRET}


# `fermion up`: the key at start, the admin token in the banner, the data dir's mode.


def fermion_up(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != KEY_VARIABLE}
    command = [sys.executable, "-m", "fermion", "up", "--data-dir", str(data_dir), "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**env, "COLUMNS": "500"})


def test_up_with_a_lost_key_stops_at_once_and_makes_a_loose_data_dir_private(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.create_deployment("echo", "app.py:Echo", env={"API_KEY": SECRET})
    (tmp_path / SECRET_KEY_FILE).unlink()
    tmp_path.chmod(0o755)
    done = fermion_up(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: the data dir's secret key does not decrypt the stored secrets: "
        "restore secret.key or set FERMION_SECRET_KEY (the key they were written with)"
    )
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert f"data dir {tmp_path} was readable by others (mode 755); made it 0700" in done.stderr


@pytest.mark.parametrize("terminal", [True, False])
def test_a_new_admin_token_is_shown_on_a_terminal_only(terminal: bool, tmp_path: Path, capsys) -> None:
    from fermion.cli.up import _banner

    with Store(default_url(tmp_path)) as store:
        _banner("http://127.0.0.1:8080", tmp_path, store, "fmn_new" if terminal else None, True, "built-in", "local")
    shown = capsys.readouterr().out
    assert ("fmn_new" in shown) == terminal and f"saved to {tmp_path / 'admin.token'}" in shown


def fermion(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in (KEY_VARIABLE, "FERMION_DB")}
    command = [sys.executable, "-m", "fermion", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**clean, "COLUMNS": "500", **env})


def test_fermion_secrets_rotate_replaces_the_key_file(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.create_deployment("echo", "app.py:Echo", env={"API_KEY": SECRET})
    old = (tmp_path / SECRET_KEY_FILE).read_text()
    done = fermion("secrets", "rotate", "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "re-encrypted 1 stored env value(s)" in done.stdout
    new = (tmp_path / SECRET_KEY_FILE).read_text()
    assert new != old and len(new.split()) == 1 and stat.S_IMODE((tmp_path / SECRET_KEY_FILE).stat().st_mode) == 0o600
    with Store.open(tmp_path) as store:
        assert store.get_deployment("echo").env == {"API_KEY": SECRET}


def test_fermion_secrets_rotate_with_keys_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = new_key()
    monkeypatch.setenv(KEY_VARIABLE, old)
    with Store.open(tmp_path) as store:
        store.create_deployment("echo", "app.py:Echo", env={"API_KEY": SECRET})
    made = fermion("secrets", "new-key")
    new = made.stdout.strip()
    assert made.returncode == 0 and len(new) == 44 and new != old
    done = fermion("secrets", "rotate", "--data-dir", str(tmp_path), FERMION_SECRET_KEY=f"{new},{old}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / SECRET_KEY_FILE).exists()
    assert fermion("secrets", "rotate", "--data-dir", str(tmp_path), FERMION_SECRET_KEY=new).returncode == 0
    wrong = fermion("secrets", "rotate", "--data-dir", str(tmp_path), FERMION_SECRET_KEY=old)
    assert wrong.returncode == 2 and "does not decrypt the stored secrets" in wrong.stderr
