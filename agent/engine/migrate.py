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


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the store to ``revision``. A store already at the newest revision is left alone
    without loading the migration scripts (every command opens the store)."""
    with engine.begin() as connection:
        if revision == "head" and MigrationContext.configure(connection).get_current_revision() == head_revision():
            return
        command.upgrade(_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def head_revision() -> str:
    head = ScriptDirectory.from_config(_config(None)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}: the installation is incomplete")
    return head
