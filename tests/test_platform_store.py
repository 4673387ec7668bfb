"""The platform store on a real SQLite file and a real PostgreSQL server: what survives a restart,
what people see when it says no, concurrent writers, and migrations that match the tables."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from fermion.platform.auth import Scope, allows, hash_token, new_token, parse_scopes, token_matches
from fermion.platform.errors import Conflict, Invalid, NotFound, PlatformError
from fermion.platform.store import database as store_module
from fermion.platform.store import migrations
from fermion.platform.store.database import Store, default_url
from fermion.platform.store.records import scrub
from fermion.platform.store.tables import Base, TokenRow, normalize_url


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """The embedded SQLite file of a data dir, or an empty schema on the test PostgreSQL server."""
    return default_url(data_dir) if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str):
    with Store.open(store_url) as opened:
        yield opened


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def raw_engine(url: str) -> sa.Engine:
    """A plain engine on the store's database: none of the store's own settings or checks."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(parsed, poolclass=sa.pool.NullPool)


def raw_rows(url: str, sql: str) -> list[tuple]:
    """Read the database directly, bypassing the store, as someone with access to it would."""
    with raw_engine(url).connect() as connection:
        return [tuple(row) for row in connection.exec_driver_sql(sql)]


def test_everything_survives_a_restart(store_url: str) -> None:
    first = Store.open(store_url)
    first.create_deployment("echo", "app.py:Echo", env={"HF_TOKEN": "hf_secret"}, max_replicas=3)
    first.update_deployment("echo", source="app.py:Echo2", note="faster")
    replica = first.upsert_replica("echo", handle={"pid": 1234, "url": "http://127.0.0.1:9000"})
    _, plaintext = first.create_token("ci", ["deploy"])
    first.audit("ci", "deployment.create", "echo", {"source": "app.py:Echo"})
    first.close()

    second = Store.open(store_url)
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


def test_delete_marks_then_purge_removes_with_revisions_and_replicas(store: Store, store_url: str) -> None:
    store.create_deployment("echo", "app.py:Echo")
    store.upsert_replica("echo", handle={"pid": 1})
    assert store.delete_deployment("echo").state == "deleting"
    with pytest.raises(Conflict, match="being deleted"):
        store.update_deployment("echo", max_replicas=2)
    store.delete_deployment("echo", purge=True)
    assert store.list_deployments() == []
    assert raw_rows(store_url, "select count(*) from revisions") == [(0,)]
    assert raw_rows(store_url, "select count(*) from replicas") == [(0,)]  # foreign keys are on: cascaded
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


def test_token_lifecycle_create_verify_revoke(store: Store, store_url: str, data_dir: Path) -> None:
    record, plaintext = store.create_token("ci", "deploy,invoke")
    assert plaintext.startswith("fmn_") and len(plaintext) > 40
    assert record.prefix == plaintext[:8] and record.scopes == {Scope.DEPLOY, Scope.INVOKE}
    # Only the hash is stored: the plaintext appears nowhere in the database.
    assert raw_rows(store_url, "select hash, prefix from tokens") == [(hash_token(plaintext), plaintext[:8])]
    for path in data_dir.glob("fermion.db*"):  # SQLite: the database file and its WAL
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


def test_expired_tokens_do_not_verify(store: Store, store_url: str) -> None:
    _, plaintext = store.create_token("short", ["invoke"], expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert store.verify_token(plaintext) is not None
    with raw_engine(store_url).begin() as connection:
        connection.execute(sa.update(TokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
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


def test_two_stores_writing_at_once_never_fail(store_url: str) -> None:
    Store.open(store_url).close()
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        with Store(store_url) as own:  # a separate engine, like a second process
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
    with Store(store_url) as check:
        assert len(check.list_deployments()) == 50
        assert all(deployment.revision == 2 for deployment in check.list_deployments())
        assert len(check.list_events(limit=1000)) == 50 + 50 + 50


def race(store_url: str, attempt: Callable[[Store, int, int], object], rounds: int = 10) -> list[tuple[str, str]]:
    """Run `attempt(store, round, who)` from two stores in two threads, released together each round;
    returns each round's two outcomes: 'ok', 'conflict' (a Conflict saying 'already exists') or the error."""
    stores = [Store.open(store_url), Store.open(store_url)]
    start = threading.Barrier(2)
    outcomes: list[list[str]] = [[], []]

    def contender(who: int) -> None:
        for i in range(rounds):
            start.wait(timeout=30)
            try:
                attempt(stores[who], i, who)
                outcomes[who].append("ok")
            except Conflict as error:
                outcomes[who].append("conflict" if "already exists" in error.message else error.message)
            except BaseException as error:  # reported by the caller's assertions
                outcomes[who].append(repr(error))

    threads = [threading.Thread(target=contender, args=(who,)) for who in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for opened in stores:
        opened.close()
    return list(zip(*outcomes, strict=True))


def test_two_stores_creating_the_same_name_at_once_one_wins_one_conflicts(store: Store, store_url: str) -> None:
    outcomes = race(store_url, lambda own, i, who: own.create_deployment(f"same-{i}", f"app.py:From{who}"))
    for i, pair in enumerate(outcomes):
        assert sorted(pair) == ["conflict", "ok"], (i, outcomes)
        assert store.get_deployment(f"same-{i}").source == f"app.py:From{pair.index('ok')}"
        assert [event.kind for event in store.list_events(f"same-{i}")] == ["Created"]


def test_two_stores_creating_the_same_token_name_at_once_one_wins_one_conflicts(store: Store, store_url: str) -> None:
    outcomes = race(store_url, lambda own, i, who: own.create_token(f"ci-{i}", ["invoke"]))
    assert all(sorted(pair) == ["conflict", "ok"] for pair in outcomes), outcomes
    assert len(store.list_tokens()) == len(outcomes)


def test_an_event_waits_for_an_earlier_event_to_commit(store: Store, store_url: str) -> None:
    # Pollers read list_events(after_id=...): an event numbered lower but committed later would be missed.
    later: list[int] = []
    with Store(store_url) as other:
        with store._transaction() as session:
            early = store_module._add_event(session, None, "Early", "first", datetime.now(UTC))
            session.flush()
            thread = threading.Thread(target=lambda: later.append(other.add_event(None, "Later", "second").id))
            thread.start()
            thread.join(timeout=0.5)
            assert thread.is_alive()  # still waiting for this transaction
        thread.join(timeout=30)
    assert later and later[0] > early.id
    assert [event.kind for event in store.list_events(after_id=early.id - 1)] == ["Early", "Later"]


def test_values_postgresql_would_refuse_are_invalid_on_both_databases(store: Store, store_url: str) -> None:
    store.create_deployment("echo", "app.py:Echo")
    with pytest.raises(Invalid, match="event deployment name must be a non-empty string of at most 63"):
        store.add_event("x" * 64, "Scaled", "too long a name")
    with pytest.raises(Invalid, match="replica backend"):
        store.upsert_replica("echo", backend="b" * 33)
    huge = 2**40  # beyond PostgreSQL's INTEGER ids: unknown, like any other id
    with pytest.raises(NotFound, match="no token named"):
        store.revoke_token(huge)
    with pytest.raises(NotFound, match="no token named"):
        store.revoke_token(str(huge))
    with pytest.raises(NotFound, match="replica"):
        store.upsert_replica("echo", replica_id=huge, state="ready")
    store.delete_replica(huge)
    assert store.list_events(after_id=huge) == []
    with pytest.raises(Invalid, match="max_replicas is at most 1000"):  # refused before any database sees it
        store.update_deployment("echo", max_replicas=huge)
    if not is_sqlite(store_url):  # SQLite stores it; PostgreSQL's refusal is the caller's mistake, not a crash
        with pytest.raises(Invalid, match="the database refused a value"):
            store.create_deployment("nul", "app.py:Echo\x00")
    assert store.get_deployment("echo").max_replicas == 1


def test_the_sqlite_file_uses_wal_and_only_its_owner_may_read_it(data_dir: Path) -> None:
    with Store.open(data_dir) as opened:
        opened.create_deployment("echo", "app.py:Echo", env={"HF_TOKEN": "hf_secret"})
    assert raw_rows(default_url(data_dir), "pragma journal_mode") == [("wal",)]
    for path in data_dir.glob("fermion.db*"):
        assert path.stat().st_mode & 0o077 == 0, path  # it holds env secrets: owner only


# Migrations


def test_the_migrated_schema_matches_the_tables(store: Store, store_url: str) -> None:
    with raw_engine(store_url).connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert migrations.current(connection) == migrations.heads()


def test_opening_a_current_database_writes_nothing(data_dir: Path) -> None:
    Store.open(data_dir).close()
    # Another writer holds SQLite's write lock: a migration would have to wait for it, and fail.
    with sqlite3.connect(data_dir / "fermion.db", isolation_level=None) as writer:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with Store(default_url(data_dir), busy_timeout_s=0.2) as reopened:
            reopened.migrate()
            assert reopened.list_deployments() == []
        assert time.monotonic() - started < 5
        writer.execute("ROLLBACK")


def test_processes_opening_a_fresh_database_at_once_all_succeed(store_url: str) -> None:
    start_at = time.time() + 2  # after every process has imported the store: they migrate together
    code = (
        "import sys, time; from fermion.platform.store.database import Store; "
        "time.sleep(max(0, float(sys.argv[2]) - time.time())); Store.open(sys.argv[1]).close()"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, store_url, str(start_at)], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    failures = [process.communicate(timeout=120)[1] for process in processes if process.wait(timeout=120) != 0]
    assert failures == []
    assert raw_rows(store_url, "select version_num from alembic_version") == [(head,) for head in migrations.heads()]


def test_a_database_made_before_migrations_is_adopted(store_url: str) -> None:
    engine = raw_engine(store_url)
    # What Store.create_all() made before migrations existed: the baseline's tables (as 0001 makes them),
    # without the index that came with migrations and without Alembic's version table.
    migrations.upgrade(engine, migrations.BASELINE)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX uq_tokens_name_active")
        connection.exec_driver_sql("DROP TABLE alembic_version")
        baseline_tokens = sa.Table("tokens", sa.MetaData(), autoload_with=connection)
        connection.execute(
            sa.insert(baseline_tokens),
            [
                {
                    "id": 1,
                    "name": "old",
                    "prefix": "fmn_abcd",
                    "hash": "0" * 64,
                    "scopes": "invoke",
                    "created_at": datetime.now(UTC),
                }
            ],
        )
    with Store.open(store_url) as opened:
        assert [token.name for token in opened.list_tokens()] == ["old"]
    assert raw_rows(store_url, "select version_num from alembic_version") == [(head,) for head in migrations.heads()]
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_database_with_only_some_tables_is_refused_with_what_to_do(store_url: str) -> None:
    with raw_engine(store_url).begin() as connection:
        Base.metadata.tables["tokens"].create(connection)
    with pytest.raises(PlatformError, match="some of the platform's tables .tokens. but no migration history"):
        Store.open(store_url)


def test_a_migration_that_copies_a_table_keeps_the_rows_pointing_at_it(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite batch migrations copy a table, then drop the original: with foreign keys on, dropping
    # `deployments` would cascade-delete every revision and replica.
    with Store.open(data_dir) as opened:
        opened.create_deployment("echo", "app.py:Echo")
        opened.upsert_replica("echo", handle={"pid": 1})
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(migrations.__file__).parent, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0099_copy_deployments.py").write_text(
        textwrap.dedent(f"""
        from alembic import op
        revision, down_revision = "0099", {max(migrations.heads())!r}
        def upgrade():
            with op.batch_alter_table("deployments", recreate="always"):
                pass
    """)
    )
    shipped = migrations.config

    def relocated(connection: sa.Connection | None = None) -> Config:
        cfg = shipped(connection)
        cfg.set_main_option("script_location", str(scripts))
        return cfg

    monkeypatch.setattr(migrations, "config", relocated)
    migrations.heads.cache_clear()
    try:
        with Store.open(data_dir) as migrated:
            assert (len(migrated.list_revisions("echo")), len(migrated.list_replicas("echo"))) == (1, 1)
            migrated.delete_deployment("echo", purge=True)  # foreign keys are back on: this cascades
        assert raw_rows(default_url(data_dir), "select version_num from alembic_version") == [("0099",)]
        assert raw_rows(default_url(data_dir), "select count(*) from replicas") == [(0,)]
    finally:
        migrations.heads.cache_clear()


def test_migrations_downgrade_to_nothing_and_up_again(store: Store, store_url: str) -> None:
    store.create_deployment("echo", "app.py:Echo")
    with raw_engine(store_url).begin() as connection:
        command.downgrade(migrations.config(connection), "base")
    with raw_engine(store_url).connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version"}
    store.migrate()
    assert store.list_deployments() == []


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
        "import sys, fermion, fermion.platform.store.records, fermion.platform.auth, fermion.platform.errors; "
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
