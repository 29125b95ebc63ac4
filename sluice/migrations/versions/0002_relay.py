"""relay: key buckets on outbox, bucket leases, live relays, wake-up trigger

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Fixed forever: a row's bucket is stored, and the relay's ordering relies on every row of a key
# living in one bucket. `& 63` rather than abs()/mod(): abs(hashtext) overflows for -2^31.
BUCKETS = 64
BUCKET_EXPRESSION = "hashtext(key) & 63"


def upgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column(
            "bucket",
            sa.SmallInteger(),
            sa.Computed(BUCKET_EXPRESSION, persisted=True),
            nullable=False,
        ),
    )
    op.create_index("ix_outbox_bucket_id", "outbox", ["bucket", "id"])
    # A queue table: every row is deleted soon after insert. Vacuum it after a fixed number of
    # dead rows rather than a fraction of the table, so the relay's index scans stay short.
    op.execute(
        "ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, "
        "autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0)"
    )

    op.create_table(
        "outbox_leases",
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("token", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("bucket", name="pk_outbox_leases"),
    )
    op.execute(f"INSERT INTO outbox_leases (bucket) SELECT generate_series(0, {BUCKETS - 1})")

    op.create_table(
        "outbox_relays",
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("alive_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_outbox_relays"),
    )

    # Statement-level, so a batch insert sends one notification; NOTIFY is delivered on commit.
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sluice_outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION outbox_notify()")
    op.drop_table("outbox_relays")
    op.drop_table("outbox_leases")
    op.execute(
        "ALTER TABLE outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, "
        "autovacuum_vacuum_cost_delay)"
    )
    op.drop_index("ix_outbox_bucket_id", table_name="outbox")
    op.drop_column("outbox", "bucket")
