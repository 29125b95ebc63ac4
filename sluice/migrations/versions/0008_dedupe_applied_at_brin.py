"""a BRIN index on consumer_dedupe.applied_at, for pruning old dedupe records

Records are appended in applied_at order, so a block-range index finds the old ones at almost no
cost to the insert on every consumed event (a b-tree would add a second index write there).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_consumer_dedupe_applied_at ON consumer_dedupe USING brin (applied_at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_consumer_dedupe_applied_at")
