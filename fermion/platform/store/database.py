# Long on purpose: one Store class, one transaction per method, every table behind the same session handling.
"""The control plane's store: deployments, revisions, replicas, events, tokens and the audit log.

SQLAlchemy 2. The default is an SQLite file under the data dir (WAL journal, so readers never
wait for the writer); PostgreSQL by URL. Every `Store` method is one transaction and returns
frozen records from `fermion.platform.store.records`, never ORM objects. Only this module and
`fermion.platform.store.tables` import SQLAlchemy, and nothing imports them until the platform is used.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from fermion.home import default_data_dir
from fermion.platform import auth as t
from fermion.platform.errors import Conflict, Invalid, NotFound
from fermion.platform.rates import parse_rate
from fermion.platform.store import env_values, migrations
from fermion.platform.store import records as r
from fermion.platform.store.secrets import SecretBox, load_box
from fermion.platform.store.tables import (
    AuditRow,
    Base,
    DeploymentRow,
    EventRow,
    ReplicaRow,
    RevisionRow,
    TokenRow,
    default_url,
    make_engine,
    normalize_url,
)

_R = TypeVar("_R", bound=r.Record)
#: verify_token writes last_used_at at most this often, so busy tokens don't turn reads into writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: The largest row id (a 32-bit INTEGER on PostgreSQL): larger ids are unknown, not a database error.
MAX_ID = 2**31 - 1
# PostgreSQL numbers events when they are inserted, not when they commit: a poller reading
# `after_id` could skip an event whose transaction commits after a later-numbered one. Event
# writers take this advisory lock until they commit, so ids follow commit order (SQLite
# serializes writers anyway).
_EVENTS_LOCK_KEY = zlib.crc32(b"fermion.platform.events")


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """The platform's state in one database; safe to use from several threads and processes.

    Schema: `open()` migrates the database to the latest revision (`migrate()`, Alembic migrations
    in `fermion.platform.store.migrations`); a database that is already current costs one read.
    """

    def __init__(
        self, url: str, *, busy_timeout_s: float = 10.0, secrets: SecretBox | None = None, key_dir: Path | None = None
    ) -> None:
        self.url = normalize_url(url)
        # Env values are sealed with a key kept beside the SQLite file (the data dir), or where `key_dir` says.
        if secrets is None:
            sqlite_file = self.url.database if self.url.get_backend_name() == "sqlite" else None
            if key_dir is None and sqlite_file and sqlite_file != ":memory:" and not sqlite_file.startswith("file:"):
                key_dir = Path(sqlite_file).expanduser().parent
            secrets = load_box(key_dir if key_dir is not None else default_data_dir())
        self.secrets = secrets
        self._engine = make_engine(self.url, busy_timeout_s)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    @classmethod
    def open(cls, url_or_data_dir: str | Path, *, key_dir: Path | None = None) -> Store:
        """A ready store: a database URL, or a data dir for the embedded SQLite file; schema migrated,
        stored secrets checked against the key and any written in plaintext sealed."""
        text = str(url_or_data_dir)
        store = cls(text if "://" in text else default_url(text), key_dir=key_dir)
        try:
            store.migrate()
            store.seal_secrets()
        except BaseException:
            store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    def migrate(self) -> None:
        """Upgrade the schema to the latest migration (idempotent; safe while other processes do too)."""
        migrations.upgrade(self._engine)

    #: The name from before migrations existed.
    create_all = migrate

    def seal_secrets(self, *, reseal: bool = False) -> int:
        """Check that the key opens every kept env value, and move envs stored the old ways (plaintext from
        before encryption, or a whole mapping sealed as one token) into `env_values`, referred to by id;
        with `reseal`, encrypt every kept value again with the key ring's first key (rotation). One
        transaction; returns how many rows it rewrote. A key that does not fit → SecretKeyError."""
        stale: list[tuple[type[DeploymentRow | RevisionRow], int]] = []
        with self._transaction(write=False) as session:
            env_values.check_key(session, self.secrets)  # a key that does not fit fails here, at start, not mid-request
            for table in (DeploymentRow, RevisionRow):
                for row_id, env in session.execute(sa.select(table.id, table.env)):
                    if env and not env_values.is_referenced(env):
                        self.secrets.reveal(env)
                        stale.append((table, row_id))
        if not stale and not reseal:
            return 0
        with self._transaction() as session:
            count = env_values.rotate(session, self.secrets) if reseal else 0
            for table, row_id in stale:
                row = session.get(table, row_id, with_for_update=True)
                if row is not None and row.env and not env_values.is_referenced(row.env):
                    owner = row.id if isinstance(row, DeploymentRow) else row.deployment_id
                    row.env = env_values.keep(session, self.secrets, owner, self.secrets.reveal(row.env), _now())
                    count += 1
        return count

    def close(self) -> None:
        """Close every pooled connection; the store can still be used afterwards (it reconnects)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                session.connection(execution_options={"fermion_write": write})
                yield session
                session.commit()
        except sa.exc.DataError as error:
            # PostgreSQL refuses what SQLite lets through (a string too long for its column, a number out of range,
            # a NUL character); the methods check the usual cases first, this catches the rest, as the caller's mistake.
            reason = str(error.orig).strip().splitlines()[0]
            raise Invalid(f"the database refused a value: {reason}; shorten or correct it and try again") from None

    # Deployments

    def _deployment_row(self, session: Session, name: str, *, lock: bool = False) -> DeploymentRow:
        query = sa.select(DeploymentRow).where(DeploymentRow.name == name)
        row = session.scalars(query.with_for_update() if lock else query).one_or_none()
        if row is None:
            raise NotFound.named("deployment", name, session.scalars(sa.select(DeploymentRow.name)))
        return row

    def create_deployment(
        self,
        name: str,
        source: str,
        *,
        options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        min_replicas: int = 1,
        max_replicas: int = 1,
        target_in_flight: float = 2.0,
        public: bool = False,
        note: str | None = None,
    ) -> r.DeploymentRecord:
        """Create a deployment with its revision 1 and a 'Created' event; a taken name → Conflict."""
        r.check_name(name)
        source, options, env = r.check_source(source), r.check_options(options), r.check_env(env)
        r.check_scaling(min_replicas, max_replicas, target_in_flight)
        now = _now()
        try:
            with self._transaction() as session:
                if session.scalars(sa.select(DeploymentRow.id).where(DeploymentRow.name == name)).first() is not None:
                    raise _taken(name)
                row = DeploymentRow(
                    name=name,
                    source=source,
                    options=options,
                    env={},
                    min_replicas=min_replicas,
                    max_replicas=max_replicas,
                    target_in_flight=float(target_in_flight),
                    public=bool(public),
                    revision=1,
                    state="active",
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
                row.env = env_values.keep(session, self.secrets, row.id, env, now)
                session.add(
                    RevisionRow(
                        deployment_id=row.id, number=1, source=source, options=options, env=row.env, created_at=now, note=note
                    )
                )
                _add_event(session, name, "Created", f"created from {source} (revision 1)", now)
                return self._deployment(session, row)
        except sa.exc.IntegrityError:  # another writer created the same name between our check and insert
            raise _taken(name) from None

    def get_deployment(self, name: str) -> r.DeploymentRecord:
        """The named deployment; unknown → NotFound listing the known names."""
        with self._transaction(write=False) as session:
            return self._deployment(session, self._deployment_row(session, name))

    def list_deployments(self) -> list[r.DeploymentRecord]:
        """Every deployment, by name."""
        with self._transaction(write=False) as session:
            rows = session.scalars(sa.select(DeploymentRow).order_by(DeploymentRow.name)).all()
            envs = env_values.reveal(session, self.secrets, [row.env for row in rows])
            return [_record(r.DeploymentRecord, row, env=revealed.env) for row, revealed in zip(rows, envs, strict=True)]

    def update_deployment(
        self,
        name: str,
        *,
        source: str | None = None,
        options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        target_in_flight: float | None = None,
        public: bool | None = None,
        note: str | None = None,
    ) -> r.DeploymentRecord:
        """Change a deployment. A changed source, options or env makes a new revision; scaling
        and `public` apply to the current one. Arguments left as None stay as they are."""
        with self._transaction() as session:
            row = self._deployment_row(session, name, lock=True)
            if row.state == "deleting":
                raise Conflict(f"deployment {name!r} is being deleted; wait for it to go, then create it again")
            (revealed,) = env_values.reveal(session, self.secrets, [row.env])
            current = {"source": row.source, "options": row.options, "env": revealed.env}
            new = {
                "source": row.source if source is None else r.check_source(source),
                "options": row.options if options is None else r.check_options(options),
                "env": current["env"] if env is None else r.check_env(env),
            }
            scaling = (
                row.min_replicas if min_replicas is None else min_replicas,
                row.max_replicas if max_replicas is None else max_replicas,
                row.target_in_flight if target_in_flight is None else target_in_flight,
            )
            r.check_scaling(*scaling)
            now = _now()
            if new != current:
                row.revision += 1
                stored = env_values.keep(session, self.secrets, row.id, new["env"], now)
                row.source, row.options, row.env = new["source"], dict(new["options"]), stored
                session.add(
                    RevisionRow(
                        deployment_id=row.id,
                        number=row.revision,
                        source=row.source,
                        options=dict(row.options),
                        env=stored,
                        created_at=now,
                        note=note,
                    )
                )
                message = f"revision {row.revision}: {row.source}" + (f" ({note})" if note else "")
                _add_event(session, name, "Updated", message, now)
            if scaling[:2] != (row.min_replicas, row.max_replicas):
                message = f"replicas {row.min_replicas}..{row.max_replicas} → {scaling[0]}..{scaling[1]}"
                _add_event(session, name, "Scaled", message, now)
            row.min_replicas, row.max_replicas, row.target_in_flight = scaling[0], scaling[1], float(scaling[2])
            if public is not None:
                row.public = bool(public)
            row.updated_at = now
            return self._deployment(session, row)

    def delete_deployment(self, name: str, *, purge: bool = False) -> r.DeploymentRecord:
        """Mark a deployment 'deleting' (the reconciler then stops its replicas); with `purge`,
        remove it with its revisions and replica records. Events stay either way."""
        with self._transaction() as session:
            row = self._deployment_row(session, name, lock=True)
            now = _now()
            if purge:
                record = self._deployment(session, row)
                session.delete(row)
                _add_event(session, name, "Deleted", "deleted", now)
                return record
            if row.state != "deleting":
                row.state, row.updated_at = "deleting", now
                _add_event(session, name, "Deleting", "stopping replicas", now)
            return self._deployment(session, row)

    def list_revisions(self, name: str) -> list[r.RevisionRecord]:
        """A deployment's revisions, oldest first."""
        with self._transaction(write=False) as session:
            row = self._deployment_row(session, name)
            query = sa.select(RevisionRow).where(RevisionRow.deployment_id == row.id).order_by(RevisionRow.number)
            revisions = session.scalars(query).all()
            envs = env_values.reveal(session, self.secrets, [rev.env for rev in revisions])
            return [
                _record(r.RevisionRecord, rev, deployment=name, env=revealed.env, forgotten=revealed.forgotten)
                for rev, revealed in zip(revisions, envs, strict=True)
            ]

    def forget_unused_env(self, name: str) -> int:
        """Erase the deployment's env values its current revision does not use (a rotated key, say) from the
        database; older revisions that used them can then no longer be rolled back to. Returns how many."""
        with self._transaction() as session:
            row = self._deployment_row(session, name, lock=True)
            return env_values.forget_unused(session, row.id, row.env)

    def _deployment(self, session: Session, row: DeploymentRow) -> r.DeploymentRecord:
        (revealed,) = env_values.reveal(session, self.secrets, [row.env])
        return _record(r.DeploymentRecord, row, env=revealed.env)

    # Events

    def add_event(self, name: str | None, kind: str, message: str) -> r.EventRecord:
        """Record an event for deployment `name` (None: platform-wide)."""
        _check_text("event kind (e.g. 'Scaled' or 'CrashLoop')", kind, 32)
        if name is not None:
            _check_text("event deployment name", name, 63)
        with self._transaction() as session:
            row = _add_event(session, name, kind, str(message), _now())
            session.flush()
            return _event(row)

    def list_events(self, name: str | None = None, after_id: int | None = None, limit: int = 100) -> list[r.EventRecord]:
        """Events oldest first, of one deployment or (name None) all; `after_id` polls for new ones."""
        if not 1 <= limit <= 1000:
            raise Invalid(f"limit must be between 1 and 1000, got {limit}")
        query = sa.select(EventRow).order_by(EventRow.id).limit(limit)
        if name is not None:
            query = query.where(EventRow.deployment_name == name)
        if after_id is not None:
            query = query.where(EventRow.id > min(after_id, MAX_ID))
        with self._transaction(write=False) as session:
            return [_event(row) for row in session.scalars(query)]

    # Replicas

    def upsert_replica(
        self,
        name: str,
        *,
        replica_id: int | None = None,
        revision: int | None = None,
        backend: str = "local",
        handle: Mapping[str, Any] | None = None,
        state: str | None = None,
        restarts: int | None = None,
        last_error: str | None = None,
    ) -> r.ReplicaRecord:
        """Create a replica of deployment `name` (no `replica_id`), or update the given fields of one.

        A new replica defaults to the deployment's current revision, state 'starting', no restarts."""
        if state is not None:
            r.check_replica_state(state)
        _check_text("replica backend (e.g. 'local')", backend, 32)
        with self._transaction() as session:
            deployment = self._deployment_row(session, name)
            now = _now()
            if replica_id is None:
                row = ReplicaRow(
                    deployment_id=deployment.id,
                    revision=revision or deployment.revision,
                    backend=backend,
                    handle=dict(handle or {}),
                    state=state or "starting",
                    restarts=restarts or 0,
                    last_error=last_error,
                    started_at=now,
                    updated_at=now,
                )
                session.add(row)
            else:
                row = session.get(ReplicaRow, replica_id) if _is_id(replica_id) else None
                if row is None or row.deployment_id != deployment.id:
                    known = [
                        str(i) for i in session.scalars(sa.select(ReplicaRow.id).where(ReplicaRow.deployment_id == deployment.id))
                    ]
                    raise NotFound.named(f"replica of {name!r} with id", replica_id, known)
                changes = {
                    "revision": revision,
                    "handle": dict(handle) if handle is not None else None,
                    "state": state,
                    "restarts": restarts,
                    "last_error": last_error,
                }
                for field_name, value in changes.items():
                    if value is not None:
                        setattr(row, field_name, value)
                row.updated_at = now
            session.flush()
            return _record(r.ReplicaRecord, row, deployment=name)

    def list_replicas(self, name: str) -> list[r.ReplicaRecord]:
        """A deployment's replica records, oldest first."""
        with self._transaction(write=False) as session:
            deployment = self._deployment_row(session, name)
            query = sa.select(ReplicaRow).where(ReplicaRow.deployment_id == deployment.id).order_by(ReplicaRow.id)
            return [_record(r.ReplicaRecord, row, deployment=name) for row in session.scalars(query)]

    def delete_replica(self, replica_id: int) -> None:
        """Forget a replica record (after its process is gone); unknown ids are ignored."""
        if not _is_id(replica_id):
            return
        with self._transaction() as session:
            row = session.get(ReplicaRow, replica_id)
            if row is not None:
                session.delete(row)

    # Tokens

    def create_token(
        self,
        name: str,
        scopes: str | Iterable[str | t.Scope],
        expires_at: datetime | None = None,
        *,
        deployments: Iterable[str] = (),
        rate: str | None = None,
    ) -> tuple[r.TokenRecord, str]:
        """Make a token; returns its record and the plaintext, which is shown once and never stored.

        `deployments` narrows it to those deployment names (they need not exist yet: a narrowed deploy
        token may create them); `rate` limits its calls through the gateway ('10/s', see `rates`)."""
        r.check_name(name, "token")
        granted = t.parse_scopes(scopes)
        reach = r.check_reach(deployments, granted)
        rate = None if rate is None else str(parse_rate(rate))
        now = _now()
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise Invalid(f"expires_at must be a timezone-aware time in the future, got {expires_at!r}")
        plaintext = t.new_token()
        taken = Conflict(f"a token named {name!r} already exists; revoke it first or pick another name")
        try:
            with self._transaction() as session:
                active = sa.select(TokenRow.id).where(TokenRow.name == name, TokenRow.revoked_at.is_(None))
                if session.scalars(active).first() is not None:
                    raise taken
                row = TokenRow(
                    name=name,
                    prefix=plaintext[: t.DISPLAY_PREFIX_LENGTH],
                    hash=t.hash_token(plaintext),
                    scopes=t.format_scopes(granted),
                    created_at=now,
                    expires_at=expires_at,
                    deployments=sorted(reach) or None,
                    rate=rate,
                )
                session.add(row)
                session.flush()
                return _token(row), plaintext
        except sa.exc.IntegrityError:  # another writer created an active token of that name since our check
            raise taken from None

    def verify_token(self, plaintext: str) -> r.TokenRecord | None:
        """The token's record if it is known, not revoked and not expired; otherwise None."""
        if not isinstance(plaintext, str) or not plaintext:
            return None
        digest, now = t.hash_token(plaintext), _now()
        with self._transaction(write=False) as session:
            row = session.scalars(sa.select(TokenRow).where(TokenRow.hash == digest)).one_or_none()
            if row is None or not t.token_matches(plaintext, row.hash):
                return None
            record = _token(row)
        if not record.is_active(now):
            return None
        # A separate, short write transaction: upgrading the read above to a write could fail
        # at once under SQLite's WAL if another writer committed in between.
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
            with self._transaction() as session:
                session.get_one(TokenRow, record.id).last_used_at = now
            record = replace(record, last_used_at=now)
        return record

    def active_token_grants(self) -> list[tuple[str, tuple[str, ...], str | None]]:
        """(hash, deployments it is narrowed to, rate) of every token that works now, for a proxy that checks
        tokens itself (HAProxy)."""
        now = _now()
        columns = (TokenRow.hash, TokenRow.expires_at, TokenRow.deployments, TokenRow.rate)
        with self._transaction(write=False) as session:
            rows = session.execute(sa.select(*columns).where(TokenRow.revoked_at.is_(None)))
            return [
                (digest, tuple(sorted(reach or ())), rate)
                for digest, expires, reach, rate in rows
                if expires is None or expires > now
            ]

    def list_tokens(self) -> list[r.TokenRecord]:
        """Every token's metadata (never the token), oldest first."""
        with self._transaction(write=False) as session:
            return [_token(row) for row in session.scalars(sa.select(TokenRow).order_by(TokenRow.id))]

    def revoke_token(self, id_or_name: int | str) -> r.TokenRecord:
        """Revoke a token by id or by name (the active one of that name); revoking twice is harmless."""
        with self._transaction() as session:
            if isinstance(id_or_name, int) or str(id_or_name).isdecimal():
                row = session.get(TokenRow, int(id_or_name)) if _is_id(int(id_or_name)) else None
            else:
                newest = (
                    sa.select(TokenRow)
                    .where(TokenRow.name == id_or_name)
                    .order_by(TokenRow.revoked_at.is_not(None), TokenRow.id.desc())
                )
                row = session.scalars(newest).first()
            if row is None:
                raise NotFound.named("token", id_or_name, set(session.scalars(sa.select(TokenRow.name))))
            if row.revoked_at is None:
                row.revoked_at = _now()
            return _token(row)

    # Audit log

    def audit(self, actor: str, action: str, target: str, detail: Mapping[str, Any] | None = None) -> r.AuditRecord:
        """Record that `actor` did `action` to `target`; secret-looking keys in `detail` are masked."""
        for label, value, limit in (("actor", actor, 63), ("action", action, 63), ("target", target, 255)):
            _check_text(f"audit {label}", value, limit)
        with self._transaction() as session:
            row = AuditRow(actor=actor, action=action, target=target, detail=r.scrub(detail), created_at=_now())
            session.add(row)
            session.flush()
            return _audit(row)

    def list_audit(self, limit: int = 100) -> list[r.AuditRecord]:
        """The latest audit entries, newest first."""
        if not 1 <= limit <= 1000:
            raise Invalid(f"limit must be between 1 and 1000, got {limit}")
        with self._transaction(write=False) as session:
            return [_audit(row) for row in session.scalars(sa.select(AuditRow).order_by(AuditRow.id.desc()).limit(limit))]


def _add_event(session: Session, name: str | None, kind: str, message: str, created_at: datetime) -> EventRow:
    """Add an event row to the session's transaction, after any earlier event writer commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _EVENTS_LOCK_KEY})
    row = EventRow(deployment_name=name, kind=kind, message=message, created_at=created_at)
    session.add(row)
    return row


def _is_id(value: object) -> bool:
    return isinstance(value, int) and 0 < value <= MAX_ID


def _check_text(label: str, value: object, limit: int) -> None:
    # Column sizes are enforced by PostgreSQL but not by SQLite; check here so both behave alike.
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Invalid(f"{label} must be a non-empty string of at most {limit} characters, got {value!r}")


def _taken(name: str) -> Conflict:
    return Conflict(f"a deployment named {name!r} already exists; update it, delete it, or pick another name")


def _record(cls: type[_R], row: Base, **overrides: Any) -> _R:
    """Copy a row into a frozen record: fields by name, mappings copied so records share nothing."""
    values = {f.name: getattr(row, f.name) for f in fields(cls) if f.name not in overrides}  # type: ignore[arg-type]
    values = {key: dict(value) if isinstance(value, dict) else value for key, value in values.items()}
    return cls(**values, **overrides)


def _event(row: EventRow) -> r.EventRecord:
    return _record(r.EventRecord, row, deployment=row.deployment_name)


def _token(row: TokenRow) -> r.TokenRecord:
    return _record(r.TokenRecord, row, scopes=t.parse_scopes(row.scopes), deployments=frozenset(row.deployments or ()))


def _audit(row: AuditRow) -> r.AuditRecord:
    return _record(r.AuditRecord, row)
