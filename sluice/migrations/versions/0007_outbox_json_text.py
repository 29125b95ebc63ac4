"""outbox payload and headers as json (text kept as written) instead of jsonb

The outbox is a queue: a payload is written once, read once as text and published. jsonb parsed
and rebuilt every payload on the way in and serialised it again on the way out; json only checks
it and keeps the text, byte for byte what the writer encoded.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json, "
        "ALTER COLUMN headers TYPE json USING headers::json"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE outbox ALTER COLUMN payload TYPE jsonb USING payload::jsonb, "
        "ALTER COLUMN headers TYPE jsonb USING headers::jsonb"
    )
