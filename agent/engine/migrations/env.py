"""Alembic environment: always driven in-process by ``agent.engine.migrate`` with a connection."""

from alembic import context

from agent.engine.store import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
