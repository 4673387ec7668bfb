"""The platform's tables (SQLAlchemy 2, typed declarative) and how to connect to the database.

Portable SQL only: the same schema runs on the embedded SQLite file and on PostgreSQL. The
schema is created and upgraded by the Alembic migrations in `fermion.platform.store.migrations`: a
change here needs a new revision there (tests check that the two agree).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fermion.platform import auth as t
from fermion.platform.errors import Invalid

DB_FILENAME = "fermion.db"
#: Named constraints: migrations can only drop or alter a constraint by name (SQLite batch mode too).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite stores them naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise Invalid(f"datetime {value.isoformat()} has no timezone; pass an aware one, e.g. datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the platform's tables; Python types map to portable column types."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON, dict[str, str]: sa.JSON, str: sa.Text}


def _fk() -> Mapped[int]:
    return mapped_column(sa.ForeignKey("deployments.id", ondelete="CASCADE"), index=True)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), unique=True)
    source: Mapped[str]
    options: Mapped[dict[str, Any]]
    env: Mapped[dict[str, str]]
    min_replicas: Mapped[int]
    max_replicas: Mapped[int]
    target_in_flight: Mapped[float] = mapped_column(default=2.0)
    public: Mapped[bool] = mapped_column(default=False)
    revision: Mapped[int]
    state: Mapped[str] = mapped_column(sa.String(16), default="active")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RevisionRow(Base):
    __tablename__ = "revisions"
    __table_args__ = (sa.UniqueConstraint("deployment_id", "number"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = _fk()
    number: Mapped[int]
    source: Mapped[str]
    options: Mapped[dict[str, Any]]
    env: Mapped[dict[str, str]]
    created_at: Mapped[datetime]
    note: Mapped[str | None]


class EnvValueRow(Base):
    """One env value of a deployment, encrypted (a Fernet token); the deployment and its revisions refer to it
    by id (`env_values`), so a value is kept once however many revisions use it, and can be forgotten."""

    __tablename__ = "env_values"
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = _fk()
    name: Mapped[str] = mapped_column(sa.String(255))
    value: Mapped[str]
    created_at: Mapped[datetime]


class ReplicaRow(Base):
    __tablename__ = "replicas"
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = _fk()
    revision: Mapped[int]
    backend: Mapped[str] = mapped_column(sa.String(32), default="local")
    handle: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(sa.String(16))
    restarts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None]
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (sa.Index("ix_events_deployment_name_id", "deployment_name", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    # A name, not a foreign key: a deployment's events outlive it.
    deployment_name: Mapped[str | None] = mapped_column(sa.String(63))
    kind: Mapped[str] = mapped_column(sa.String(32))
    message: Mapped[str]
    created_at: Mapped[datetime]


#: At most one active (unrevoked) token per name; a partial index, which SQLite and PostgreSQL both have.
ACTIVE_TOKEN_NAME = sa.text("revoked_at IS NULL")


class TokenRow(Base):
    __tablename__ = "tokens"
    # The store checks this too, but only the index holds when two writers create a name at once.
    __table_args__ = (
        sa.Index(
            "uq_tokens_name_active", "name", unique=True, sqlite_where=ACTIVE_TOKEN_NAME, postgresql_where=ACTIVE_TOKEN_NAME
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(63), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(t.DISPLAY_PREFIX_LENGTH))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scopes: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # The deployment names it may reach (a JSON list; None: every one) and its rate ('10/s'; None: no limit).
    deployments: Mapped[list[str] | None] = mapped_column(sa.JSON)
    rate: Mapped[str | None] = mapped_column(sa.String(32))


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(sa.String(63))
    action: Mapped[str] = mapped_column(sa.String(63))
    target: Mapped[str] = mapped_column(sa.String(255))
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


def default_url(data_dir: str | Path) -> str:
    """The embedded store of a data dir: `sqlite:///<data_dir>/fermion.db`."""
    return f"sqlite:///{Path(data_dir).expanduser().resolve() / DB_FILENAME}"


def normalize_url(url: str) -> URL:
    """Parse a database URL; plain `postgresql://` (or `postgres://`) gets the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise Invalid(
            f"invalid database URL {url!r}: use sqlite:///PATH/fermion.db or postgresql://USER:PASSWORD@HOST/DB"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise Invalid(f"unsupported database {parsed.get_backend_name()!r} in {parsed!r}: use SQLite or PostgreSQL")
    return parsed


def make_engine(url: URL, busy_timeout_s: float = 10.0) -> sa.Engine:
    """An engine for `url`: SQLite with WAL, foreign keys and busy_timeout; PostgreSQL as it comes."""
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching a fresh file to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # The file holds deployment secrets (env values): only its owner may read it.
        for suffix in ("", "-wal", "-shm"):
            # Another process closing the database may remove its -wal and -shm files between the check and the chmod.
            with contextlib.suppress(FileNotFoundError):
                if database and Path(database + suffix).is_file():
                    Path(database + suffix).chmod(0o600)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A write transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one
        # that reads, then writes, fails at once with "database is locked" if another writer
        # got in between, and busy_timeout cannot help it. Reads stay deferred and never wait.
        write = connection.get_execution_options().get("fermion_write", True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
