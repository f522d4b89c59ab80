"""The stores the suite runs on: a SQLite file, and a fresh database on a real PostgreSQL server.

``FA_TEST_PG_URL`` names a PostgreSQL server the tests may create databases on (an SQLAlchemy
URL of its maintenance database); by default the local server's socket, as the user running the
tests (``.ci/run`` installs and starts the server and creates that role). Without a server the
PostgreSQL tests skip and say why -- except under ``CI=true``, where they fail: in CI they must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG_URL = "postgresql+psycopg:///postgres?host=/var/run/postgresql"
STORE_KINDS = ("sqlite", "postgresql")


def pg_admin_url() -> str:
    return os.environ.get("FA_TEST_PG_URL", DEFAULT_PG_URL)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL tests must run in CI, but {reason}")
    pytest.skip(f"no PostgreSQL server to test against ({reason}); set FA_TEST_PG_URL or run .ci/run")


def new_pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards): its URL."""
    admin_url = make_url(pg_admin_url())
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # any failure to reach the server: the driver's or the network's
        _unavailable(f"{admin_url.render_as_string(hide_password=True)} does not answer: {exc}")
    name = f"fa_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'create database "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'drop database if exists "{name}" with (force)'))
        admin.dispose()


def store_url_for(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        yield from new_pg_database()


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store's SQLAlchemy URL, once on SQLite and once on PostgreSQL."""
    yield from store_url_for(request.param, tmp_path)
