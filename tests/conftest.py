"""Shared fixtures: a PostgreSQL server for the tests that need one (see tests/pg.py); the skip summary plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pg
import pytest

#: After the run, one line per group of skipped tests and what to install (tests/skip_summary.py).
pytest_plugins = ["skip_summary"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A PostgreSQL URL for the whole session: $FERMION_TEST_PG_URL, or the local cluster, started."""
    failure = None
    try:
        with pg.server() as url:
            yield url
    except pg.Unavailable as error:
        failure = str(error)
    if failure:  # outside the `except`, so the report shows the message once
        pytest.fail(failure, pytrace=False)


@pytest.fixture
def pg_url(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A PostgreSQL URL whose connections see an empty schema of their own; its secret key comes from
    FERMION_SECRET_KEY, as for control planes sharing one database (none lands in the user's data dir)."""
    from fermion.platform.store.secrets import KEY_VARIABLE, new_key

    monkeypatch.setenv(KEY_VARIABLE, new_key())
    with pg.fresh_schema(pg_server) as url:
        yield url
