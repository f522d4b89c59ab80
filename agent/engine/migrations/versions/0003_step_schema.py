"""step schema: each step's stage and the schema version of its journalled arguments

Steps journalled before this revision kept their stage inside their arguments and had no
version: they are version 1 (agent.engine.steps reads them).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('steps') as batch:
        batch.add_column(sa.Column('stage', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('spec_version', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    with op.batch_alter_table('steps') as batch:
        batch.drop_column('spec_version')
        batch.drop_column('stage')
