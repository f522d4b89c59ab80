"""site views: the last good read of each part of a site, for unplanned failovers

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'site_views',
        sa.Column('site', sa.String(length=128), nullable=False),
        sa.Column('part', sa.String(length=200), nullable=False),
        sa.Column('data', sa.Text(), nullable=True),
        sa.Column('read_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('site', 'part'),
    )


def downgrade() -> None:
    op.drop_table('site_views')
