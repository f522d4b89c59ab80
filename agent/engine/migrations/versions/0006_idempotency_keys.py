"""idempotency keys: a retried API request starts no second operation

A row per (token name, Idempotency-Key header): the hash of the request it came with and the
operation it created. The same key again with the same request answers with that operation;
with a different request it is refused.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idempotency_keys',
        sa.Column('caller', sa.String(length=64), primary_key=True),
        sa.Column('key', sa.String(length=200), primary_key=True),
        sa.Column('request_hash', sa.String(length=64), nullable=False),
        sa.Column('operation_id', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('idempotency_keys')
