"""audit key: a change an operation's step makes is audited once, however often the step runs

The audit row of each outside change is written before the call and completed after it; the
key (step and call) finds that row again when the step is retried or resumed.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit') as batch:
        batch.add_column(sa.Column('key', sa.String(length=400), nullable=True))
        batch.create_index('ix_audit_change', ['operation_id', 'key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('audit') as batch:
        batch.drop_index('ix_audit_change')
        batch.drop_column('key')
