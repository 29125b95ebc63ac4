"""how far each recovery pass has looked: the Square events searched and customers swept up to

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One row per pass ("square:events", "square:customers"): everything the provider had up
    # to `watermark` is committed here. It moves in the transaction that commits the last of it.
    op.create_table(
        "recovery_watermarks",
        sa.Column("pass", sa.Text(), nullable=False),
        sa.Column("watermark", _TS, nullable=False),
        sa.Column("updated_at", _TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("pass", name="pk_recovery_watermarks"),
    )


def downgrade() -> None:
    op.drop_table("recovery_watermarks")
