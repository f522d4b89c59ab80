"""Schema migrations: Alembic, run in-process when the store opens, so an upgraded agent
opens an older store without an operator step."""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: Connection | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


MIGRATION_LOCK = 0x6661696C6F766572
"""PostgreSQL advisory lock key held while migrating ("failover" in ASCII)."""


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the store to ``revision``, once, whatever starts at the same moment.

    The check and the migration run under a store-wide lock, so of two agents or commands
    opening an empty store together one creates the schema and the other, blocked meanwhile,
    finds it at the newest revision (without the lock both created the tables and one failed
    with "table audit already exists"). A store already at the newest revision is left alone
    without loading the migration scripts (every command opens the store)."""
    with engine.connect() as connection, connection.begin():
        _lock_for_migration(connection)
        if revision == "head" and MigrationContext.configure(connection).get_current_revision() == head_revision():
            return
        command.upgrade(_config(connection), revision)


def _lock_for_migration(connection: Connection) -> None:
    """Take, in the migration's transaction, the lock that serialises migrations.

    SQLite: ``BEGIN EXCLUSIVE`` -- pysqlite opens no transaction before DDL by itself, and a
    deferred one would let both processes read "no schema" before either writes. The lock
    waits up to the connection's busy timeout. PostgreSQL: a transaction-scoped advisory lock,
    released by the commit. Other databases rely on their transactional DDL."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.exec_driver_sql("BEGIN EXCLUSIVE")
    elif dialect == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(_config(None)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}: the installation is incomplete")
    return head
