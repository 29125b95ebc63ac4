"""the trace of the change that asked for a lead's push, so the push to Airtable joins it

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("lead_sync", sa.Column("traceparent", sa.Text()))


def downgrade() -> None:
    op.drop_column("lead_sync", "traceparent")
