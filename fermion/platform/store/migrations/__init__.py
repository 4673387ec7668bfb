"""The platform schema's Alembic migrations, run in code: `upgrade(engine)` brings a database to head.

No alembic.ini: `config()` builds the configuration around this package, and env.py migrates the
connection handed to it in `config.attributes["connection"]`. `Store.open()` calls `upgrade`.

A schema change: edit `fermion.platform.store.tables`, then add a revision next to versions/0001_initial.py:
`command.revision(config(connection), "add x", rev_id="0002", autogenerate=True)`, with `connection`
open on a database at the previous head; review what it wrote (the tests compare the result with
the tables, on SQLite and PostgreSQL).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from fermion.platform.errors import PlatformError

#: The first revision: the schema `Base.metadata.create_all()` made before migrations existed, and one index.
BASELINE = "0001"
BASELINE_TABLES = frozenset({"deployments", "revisions", "replicas", "events", "tokens", "audit_log"})
# PostgreSQL: one migrator per database at a time (a transaction-scoped advisory lock).
_PG_LOCK_KEY = zlib.crc32(b"fermion.platform.migrations")  # the name it had when the lock was first taken: keep it
# Alembic's `context` proxy in env.py is module-global: two threads must not migrate at once.
_lock = threading.Lock()


def config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for this package's migrations, migrating `connection` if given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def heads() -> frozenset[str]:
    """The head revision(s) of the migrations shipped with this version of Fermion."""
    return frozenset(ScriptDirectory.from_config(config()).get_heads())


def current(connection: sa.Connection) -> frozenset[str]:
    """The revision(s) the database is at; empty when it has never been migrated."""
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Migrate the database to `revision` (default: head). A database already at head costs one
    read; concurrent callers (threads or processes) wait for each other instead of failing."""
    if revision == "head":
        with engine.connect() as connection:
            connection.execution_options(fermion_write=False)  # SQLite: a plain read, takes no write lock
            if current(connection) == heads():
                return
    with _lock, engine.connect() as connection, _sqlite_foreign_keys_off(connection), connection.begin():
        # SQLite: the engine began this with BEGIN IMMEDIATE, so it holds the write lock and a
        # second process waits here (busy_timeout), then finds the schema already migrated.
        # The DDL is transactional on both databases, so a failed migration leaves nothing half done.
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        cfg = config(connection)
        if not current(connection):
            _adopt_unversioned(connection, cfg)
        command.upgrade(cfg, revision)
        if connection.dialect.name == "sqlite" and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
            raise PlatformError(
                f"the migration to {revision} would leave rows whose deployment is missing ({broken[:5]}), so nothing "
                "was changed: report this as a bug in Fermion's migrations"
            )


@contextlib.contextmanager
def _sqlite_foreign_keys_off(connection: sa.Connection) -> Iterator[None]:
    """SQLite: no foreign key actions while migrating. Batch migrations copy a table and drop the
    original, and dropping `deployments` with foreign keys on would cascade-delete every revision
    and replica. The pragma is ignored inside a transaction, so it is set on the raw connection first."""
    if connection.dialect.name != "sqlite":
        yield
        return
    raw = connection.connection.dbapi_connection
    assert raw is not None and not connection.in_transaction()
    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def _adopt_unversioned(connection: sa.Connection, cfg: Config) -> None:
    """A database made by `create_all()` before migrations existed has the baseline's tables but
    no alembic_version: mark it as at the baseline instead of failing to create them again."""
    existing = BASELINE_TABLES & set(sa.inspect(connection).get_table_names())
    if existing == BASELINE_TABLES:
        # The one part of the baseline that create_all() did not make yet.
        connection.exec_driver_sql(
            "CREATE UNIQUE INDEX IF NOT EXISTS uq_tokens_name_active ON tokens (name) WHERE revoked_at IS NULL"
        )
        command.stamp(cfg, BASELINE)
    elif existing:
        raise PlatformError(
            f"the database has some of the platform's tables ({', '.join(sorted(existing))}) but no migration "
            "history, so it cannot be upgraded safely: point the platform at a fresh database (or a new data dir)"
        )
