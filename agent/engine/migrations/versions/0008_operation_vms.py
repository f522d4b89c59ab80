"""operation VMs: the names of an operation's VMs beside its plan

The operation's view lists the VMs that succeeded; it read them from the plan, the largest value
in the journal (over 15 MB of JSON at 10,000 VMs), decoding all of it to take one name per VM.
The names are written with the operation; an operation created before this revision has none
(NULL) and is read from its plan as before.

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.add_column(sa.Column('vms', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('operations') as batch:
        batch.drop_column('vms')
