"""The platform store on real SQLite files: what survives a restart, and what people see when it says no."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fermion.platform import store as store_module
from fermion.platform.errors import Conflict, Invalid, NotFound, PlatformError
from fermion.platform.records import scrub
from fermion.platform.store import Store, default_url
from fermion.platform.tables import normalize_url
from fermion.platform.tokens import Scope, allows, hash_token, new_token, parse_scopes, token_matches


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path):
    with Store.open(data_dir) as opened:
        yield opened


def raw_rows(data_dir: Path, sql: str) -> list[tuple]:
    """Read the database file directly, as an attacker with a copy of it would."""
    with sqlite3.connect(data_dir / "fermion.db") as connection:
        return connection.execute(sql).fetchall()


def test_everything_survives_a_restart(data_dir: Path) -> None:
    first = Store.open(data_dir)
    first.create_deployment("echo", "app.py:Echo", env={"HF_TOKEN": "hf_secret"}, max_replicas=3)
    first.update_deployment("echo", source="app.py:Echo2", note="faster")
    replica = first.upsert_replica("echo", handle={"pid": 1234, "url": "http://127.0.0.1:9000"})
    _, plaintext = first.create_token("ci", ["deploy"])
    first.audit("ci", "deployment.create", "echo", {"source": "app.py:Echo"})
    first.close()

    second = Store.open(data_dir)
    echo = second.get_deployment("echo")
    assert (echo.source, echo.revision, echo.max_replicas, echo.env) == ("app.py:Echo2", 2, 3, {"HF_TOKEN": "hf_secret"})
    assert [rev.note for rev in second.list_revisions("echo")] == [None, "faster"]
    assert second.list_replicas("echo")[0].handle == replica.handle
    assert [event.kind for event in second.list_events("echo")] == ["Created", "Updated"]
    assert second.verify_token(plaintext).name == "ci"
    assert second.list_audit()[0].action == "deployment.create"
    assert echo.created_at.tzinfo is not None and echo.created_at.utcoffset() == timedelta(0)
    second.close()


def test_a_duplicate_name_is_a_conflict_naming_it(store: Store) -> None:
    store.create_deployment("echo", "app.py:Echo")
    with pytest.raises(Conflict, match="'echo' already exists") as caught:
        store.create_deployment("echo", "other.py:Other")
    assert caught.value.status == 409
    assert store.get_deployment("echo").source == "app.py:Echo"


def test_not_found_lists_the_known_names_and_suggests_one(store: Store) -> None:
    with pytest.raises(NotFound, match="there are no deployments yet"):
        store.get_deployment("echo")
    store.create_deployment("echo", "app.py:Echo")
    store.create_deployment("web", "web.py:Web")
    with pytest.raises(NotFound) as caught:
        store.get_deployment("ech")
    assert caught.value.status == 404
    assert "did you mean 'echo'?" in caught.value.message
    assert "echo, web" in caught.value.message
    assert caught.value.to_dict()["error"] == "not_found"


@pytest.mark.parametrize("name", ["Echo", "1st", "-x", "a" * 64, "under_score", "", "dots.no"])
def test_invalid_names_say_the_rule(store: Store, name: str) -> None:
    with pytest.raises(Invalid, match=r"lowercase letter followed by up to 62") as caught:
        store.create_deployment(name, "app.py:Echo")
    assert caught.value.status == 422
    assert store.list_deployments() == []


def test_other_invalid_values_are_refused_before_anything_is_written(store: Store) -> None:
    with pytest.raises(Invalid, match="min_replicas ≤ max_replicas"):
        store.create_deployment("echo", "app.py:Echo", min_replicas=3, max_replicas=2)
    with pytest.raises(Invalid, match="target_in_flight"):
        store.create_deployment("echo", "app.py:Echo", target_in_flight=0)
    with pytest.raises(Invalid, match="environment variable name '1BAD'"):
        store.create_deployment("echo", "app.py:Echo", env={"1BAD": "x"})
    with pytest.raises(Invalid, match="give what `fermion serve` takes"):
        store.create_deployment("echo", " ")
    assert store.list_deployments() == [] and store.list_events() == []


def test_revisions_increment_on_source_options_or_env_changes_only(store: Store) -> None:
    store.create_deployment("echo", "app.py:Echo")
    scaled = store.update_deployment("echo", min_replicas=2, max_replicas=4, target_in_flight=8, public=True)
    assert (scaled.revision, scaled.min_replicas, scaled.max_replicas, scaled.public) == (1, 2, 4, True)
    assert store.update_deployment("echo", source="app.py:Echo").revision == 1  # same source: nothing new
    assert store.update_deployment("echo", source="app.py:Echo2").revision == 2
    assert store.update_deployment("echo", env={"KEY": "v"}).revision == 3
    assert [rev.number for rev in store.list_revisions("echo")] == [1, 2, 3]
    assert [rev.source for rev in store.list_revisions("echo")] == ["app.py:Echo", "app.py:Echo2", "app.py:Echo2"]
    assert [event.kind for event in store.list_events("echo")] == ["Created", "Scaled", "Updated", "Updated"]


def test_delete_marks_then_purge_removes_with_revisions_and_replicas(store: Store, data_dir: Path) -> None:
    store.create_deployment("echo", "app.py:Echo")
    store.upsert_replica("echo", handle={"pid": 1})
    assert store.delete_deployment("echo").state == "deleting"
    with pytest.raises(Conflict, match="being deleted"):
        store.update_deployment("echo", max_replicas=2)
    store.delete_deployment("echo", purge=True)
    assert store.list_deployments() == []
    assert raw_rows(data_dir, "select count(*) from revisions") == [(0,)]
    assert raw_rows(data_dir, "select count(*) from replicas") == [(0,)]  # foreign keys are on: cascaded
    assert [event.kind for event in store.list_events("echo")] == ["Created", "Deleting", "Deleted"]


def test_events_come_in_order_and_after_id_returns_only_newer(store: Store) -> None:
    store.create_deployment("echo", "app.py:Echo")
    store.add_event(None, "Started", "control plane up")
    for i in range(5):
        store.add_event("echo", "Scaled", f"step {i}")
    events = store.list_events("echo")
    assert [event.message for event in events[1:]] == [f"step {i}" for i in range(5)]
    assert [event.id for event in events] == sorted(event.id for event in events)
    newer = store.list_events("echo", after_id=events[3].id)
    assert [event.message for event in newer] == ["step 3", "step 4"]
    assert len(store.list_events("echo", limit=2)) == 2
    assert len(store.list_events()) == 7  # all deployments and platform-wide
    with pytest.raises(Invalid, match="limit"):
        store.list_events(limit=0)
    with pytest.raises(Invalid, match="event kind"):
        store.add_event("echo", "x" * 33, "too long a kind")


def test_replicas_are_created_then_updated_field_by_field(store: Store) -> None:
    store.create_deployment("echo", "app.py:Echo")
    replica = store.upsert_replica("echo", handle={"pid": 42})
    assert (replica.state, replica.revision, replica.backend, replica.restarts) == ("starting", 1, "local", 0)
    ready = store.upsert_replica("echo", replica_id=replica.id, state="ready")
    assert (ready.state, ready.handle) == ("ready", {"pid": 42})
    with pytest.raises(Invalid, match="use one of: starting, ready"):
        store.upsert_replica("echo", replica_id=replica.id, state="running")
    with pytest.raises(NotFound, match="replica"):
        store.upsert_replica("echo", replica_id=999, state="ready")
    store.delete_replica(replica.id)
    assert store.list_replicas("echo") == []


def test_token_lifecycle_create_verify_revoke(store: Store, data_dir: Path) -> None:
    record, plaintext = store.create_token("ci", "deploy,invoke")
    assert plaintext.startswith("fmn_") and len(plaintext) > 40
    assert record.prefix == plaintext[:8] and record.scopes == {Scope.DEPLOY, Scope.INVOKE}
    # Only the hash is stored: the plaintext appears nowhere in the database.
    assert raw_rows(data_dir, "select hash, prefix from tokens") == [(hash_token(plaintext), plaintext[:8])]
    for path in data_dir.glob("fermion.db*"):  # the database and its WAL
        assert plaintext.encode() not in path.read_bytes()

    verified = store.verify_token(plaintext)
    assert verified is not None and verified.id == record.id and verified.last_used_at is not None
    assert store.verify_token(plaintext + "x") is None
    assert store.verify_token(new_token()) is None
    with pytest.raises(Conflict, match="token named 'ci' already exists"):
        store.create_token("ci", ["invoke"])

    revoked = store.revoke_token("ci")
    assert revoked.revoked_at is not None
    assert store.verify_token(plaintext) is None
    assert store.revoke_token(record.id).revoked_at == revoked.revoked_at  # twice is harmless
    with pytest.raises(NotFound, match="known tokens: ci"):
        store.revoke_token("cj")
    assert [token.name for token in store.list_tokens()] == ["ci"]


def test_last_used_is_written_at_most_once_a_minute(store: Store) -> None:
    _, plaintext = store.create_token("ci", ["invoke"])
    first = store.verify_token(plaintext).last_used_at
    assert store.verify_token(plaintext).last_used_at == first


def test_expired_tokens_do_not_verify(store: Store, data_dir: Path) -> None:
    _, plaintext = store.create_token("short", ["invoke"], expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert store.verify_token(plaintext) is not None
    past = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(data_dir / "fermion.db") as connection:
        connection.execute("update tokens set expires_at = ?", (past,))
    assert store.verify_token(plaintext) is None
    with pytest.raises(Invalid, match="in the future"):
        store.create_token("old", ["invoke"], expires_at=datetime.now(UTC) - timedelta(days=1))


def test_scopes_nest_admin_over_deploy_over_invoke() -> None:
    assert allows({Scope.ADMIN}, Scope.INVOKE) and allows({Scope.ADMIN}, Scope.DEPLOY)
    assert allows({Scope.DEPLOY}, Scope.INVOKE) and not allows({Scope.DEPLOY}, Scope.ADMIN)
    assert not allows({Scope.INVOKE}, Scope.DEPLOY) and not allows(set(), Scope.INVOKE)
    with pytest.raises(Invalid, match="unknown token scope 'root'; choose from: admin, deploy, invoke"):
        parse_scopes("root")
    with pytest.raises(Invalid, match="at least one scope"):
        parse_scopes([])
    token = new_token()
    assert token_matches(token, hash_token(token)) and not token_matches(token, hash_token(new_token()))


def test_env_values_are_masked_in_repr_public_dict_and_audit(store: Store) -> None:
    record = store.create_deployment("echo", "app.py:Echo", env={"HF_TOKEN": "hf_secret"})
    assert record.env == {"HF_TOKEN": "hf_secret"}  # replicas need the real value
    assert "hf_secret" not in repr(record) and "'HF_TOKEN': '***'" in repr(record)
    public = record.to_public_dict()
    assert public["env"] == {"HF_TOKEN": "***"} and public["created_at"].endswith("+00:00")
    assert "hf_secret" not in repr(store.list_revisions("echo"))
    entry = store.audit("admin", "deployment.create", "echo", {"env": {"HF_TOKEN": "hf_secret"}, "api_token": "fmn_x"})
    assert entry.detail == {"env": {"HF_TOKEN": "***"}, "api_token": "***"}
    assert "hf_secret" not in repr(store.list_audit())
    assert scrub({"nested": [{"password": "p"}]}) == {"nested": [{"password": "***"}]}


def test_two_threads_writing_at_once_never_see_database_locked(data_dir: Path) -> None:
    Store.open(data_dir).close()
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        with Store(default_url(data_dir)) as own:  # a separate engine, like a second process
            try:
                for i in range(25):
                    own.create_deployment(f"{prefix}-{i}", "app.py:Echo")
                    own.update_deployment(f"{prefix}-{i}", source="app.py:Echo2")
                    own.add_event(None, "Tick", f"{prefix} {i}")
            except BaseException as error:  # reported by the assertion below
                errors.append(error)

    threads = [threading.Thread(target=writer, args=(prefix,)) for prefix in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store(default_url(data_dir)) as check:
        assert len(check.list_deployments()) == 50
        assert all(deployment.revision == 2 for deployment in check.list_deployments())
    assert raw_rows(data_dir, "pragma journal_mode") == [("wal",)]
    assert (data_dir / "fermion.db").stat().st_mode & 0o077 == 0  # it holds env secrets: owner only


def test_database_urls() -> None:
    assert normalize_url("postgresql://u:p@db/fermion").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u:p@db/fermion").drivername == "postgresql+psycopg"
    with pytest.raises(Invalid, match="unsupported database 'mysql'"):
        normalize_url("mysql://u@db/x")
    with pytest.raises(Invalid, match="invalid database URL"):
        normalize_url("not a url")
    assert "secret" not in repr(Store("postgresql://u:secret@db/fermion"))
    assert issubclass(Invalid, PlatformError) and store_module.LAST_USED_RESOLUTION == timedelta(minutes=1)


def test_importing_fermion_and_records_does_not_import_sqlalchemy() -> None:
    code = (
        "import sys, fermion, fermion.platform.records, fermion.platform.tokens, fermion.platform.errors; "
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
