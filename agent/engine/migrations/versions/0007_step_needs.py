"""step needs: the steps each step waits for, so the runner schedules by dependencies

A JSON list of the ordinals of the steps of the same operation that must have finished before
the step starts. Steps journalled before this revision have NULL: the stage barrier (every step
of the previous stage), so an operation created by an older agent resumes exactly as it would
have.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('steps') as batch:
        batch.add_column(sa.Column('needs', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('steps') as batch:
        batch.drop_column('needs')
