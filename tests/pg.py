"""A PostgreSQL server for the tests: $FERMION_TEST_PG_URL, or Debian's local cluster 15/main, started for the session.

`server()` yields a URL to a database the tests may fill; `fresh_schema(url)` yields a URL whose
connections see an empty schema of their own (dropped afterwards), so each test starts clean.
Test sessions share the local cluster: the one that started it stops it, when the last one ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy as sa

ENV = "FERMION_TEST_PG_URL"
VERSION, CLUSTER = "15", "main"
ROLE = PASSWORD = "fermion"
DATABASE = "fermion_test"
#: A session time zone away from UTC (and not a whole hour), so timezone mistakes show.
TIMEZONE = "Asia/Kolkata"
HOW = (
    f"to run the PostgreSQL tests, set {ENV}=postgresql://USER:PASSWORD@HOST:PORT/DB "
    "(a database that user may create schemas in), or run them as root on Debian/Ubuntu with the "
    "`postgresql` package installed (apt-get install postgresql), so they can start the local cluster"
)
# Which test sessions use the local cluster, and whether one of them started it (see _local_cluster).
_STATE = Path(tempfile.gettempdir()) / "fermion-test-pg.json"


class Unavailable(RuntimeError):
    """No PostgreSQL server for the tests; the message says how to provide one."""


@contextlib.contextmanager
def server() -> Iterator[str]:
    """A URL to a PostgreSQL database for the tests (see the module docstring for where from)."""
    url = os.environ.get(ENV)
    if url:
        yield url
        return
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        raise Unavailable(f"no PostgreSQL server (pg_ctlcluster is missing, or this is not root); {HOW}")
    with _local_cluster() as port:
        yield f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """`url` with its search_path set to a new, empty schema; the schema is dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with _admin(url) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    options = f"-csearch_path={schema} -ctimezone={TIMEZONE}"
    try:
        yield sa.make_url(url).update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        with _admin(url) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def restart() -> None:
    """Restart the local cluster (for chaos tests: the platform must reconnect). A server given by
    $FERMION_TEST_PG_URL is not ours to restart: Unavailable says so."""
    if os.environ.get(ENV):
        raise Unavailable(f"the tests cannot restart the PostgreSQL server of {ENV}; unset it to use the local cluster")
    cluster = _cluster()
    _run(["pg_ctlcluster", str(cluster["version"]), CLUSTER, "restart", "--force"])


def _admin(url: str) -> psycopg.Connection:
    plain = sa.make_url(url).set(drivername="postgresql")  # psycopg takes postgresql://, not postgresql+psycopg://
    return psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True, connect_timeout=10)


def _cluster() -> dict:
    """Cluster 15/main, or else the newest 'main' cluster (a newer Debian installs a newer PostgreSQL)."""
    mains = [cluster for cluster in json.loads(_run(["pg_lsclusters", "--json"])) if cluster["cluster"] == CLUSTER]
    preferred = [cluster for cluster in mains if str(cluster["version"]) == VERSION]
    if not mains:
        raise Unavailable(f"pg_lsclusters lists no '{CLUSTER}' cluster: create one (pg_createcluster {VERSION} {CLUSTER}); {HOW}")
    return (preferred or sorted(mains, key=lambda cluster: float(cluster["version"])))[-1]


@contextlib.contextmanager
def _local_cluster() -> Iterator[int]:
    """Start the local cluster (see _cluster) if it is down; stop it afterwards if a test session
    started it and no other session still uses it. The bookkeeping lives in a small JSON file, under a file lock."""
    try:
        with _state() as state:
            state["users"].append(os.getpid())  # first: the `finally` below takes it out again
            cluster = _cluster()
            if not cluster["running"]:
                _run(["pg_ctlcluster", str(cluster["version"]), CLUSTER, "start"])
                state["started"] = cluster["version"]
            _ensure_database(int(cluster["port"]))
        yield int(cluster["port"])
    finally:
        with _state() as state:
            state["users"] = [pid for pid in state["users"] if pid != os.getpid()]
            if state["started"] and not state["users"]:
                version, state["started"] = state["started"], None
                _run(["pg_ctlcluster", str(version), CLUSTER, "stop"])


@contextlib.contextmanager
def _state() -> Iterator[dict]:
    with open(_STATE.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(_STATE.read_text())
        except (OSError, ValueError):
            state = {}
        # started: the version of the cluster a test session started (None: none did).
        state = {"started": state.get("started") or None, "users": [pid for pid in state.get("users", []) if _alive(pid)]}
        try:
            yield state
        finally:
            _STATE.write_text(json.dumps(state))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def _ensure_database(port: int) -> None:
    """Create the role and the database if missing, as the postgres superuser (peer auth)."""
    role = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'; END IF; END $$"
    )
    _psql(port, role)
    if _psql(port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'").strip() != "1":
        _psql(port, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def _psql(port: int, sql: str) -> str:
    command = ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-p", str(port), "-d", "postgres", "-c", sql]
    return _run(["su", "postgres", "-c", shlex.join(command)])


def _run(command: list[str]) -> str:
    # cwd="/": the postgres user may not be allowed into the current directory.
    done = subprocess.run(command, cwd="/", capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise Unavailable(f"`{shlex.join(command)}` failed ({done.returncode}): {(done.stderr or done.stdout).strip()}\n{HOW}")
    return done.stdout
