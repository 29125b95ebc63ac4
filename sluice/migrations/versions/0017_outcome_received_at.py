"""each outcome row keeps its event's received_at, so the console's outcome lists read one partition

The event store is partitioned by received_at (0016); an outcome row names its event by id only,
so finding the event probed every partition's id index. With the event's received_at beside the
id the lookup is pruned to the one partition that holds it. Rows written before this revision
keep NULL and are found as before, by id in every partition, until their retention ends.

Adding a nullable column without a default changes only the catalogue: no table is rewritten.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TABLES = ("consumer_dedupe", "event_outcomes")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("received_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    for table in _TABLES:
        op.drop_column(table, "received_at")
