"""leases: one agent process at a time executes a store's operations

A row per lease: who holds it (a process-unique holder id, its host and pid), until when, and
a fencing token that grows by one at every change of holder and is never reset, so a write
that carries an older token is known to come from a process that lost the lease.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'leases',
        sa.Column('name', sa.String(length=64), primary_key=True),
        sa.Column('holder', sa.String(length=64), nullable=True),
        sa.Column('host', sa.String(length=255), nullable=True),
        sa.Column('pid', sa.Integer(), nullable=True),
        sa.Column('acquired_at', sa.DateTime(), nullable=True),
        sa.Column('renewed_at', sa.DateTime(), nullable=True),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.Column('token', sa.Integer(), nullable=False, server_default='0'),
    )


def downgrade() -> None:
    op.drop_table('leases')
