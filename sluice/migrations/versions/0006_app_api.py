"""app api: idempotency keys, the projection change log, lead write-back state and conflicts

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_PROJECTIONS = {"jobs": "booking_id", "leads": "record_id"}


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, _TS, server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", JSONB(), nullable=False),
        _now("created_at"),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    # txid: the writing transaction. Readers deliver rows in (txid, id) order and only from
    # transactions older than every one still running, so a late commit is never skipped.
    op.execute(
        """
        CREATE TABLE projection_changes (
            id bigint GENERATED ALWAYS AS IDENTITY,
            txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            entity text NOT NULL,
            entity_id text NOT NULL,
            op text NOT NULL,
            data jsonb NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_projection_changes PRIMARY KEY (id)
        )
        """
    )
    op.create_index("ix_projection_changes_txid_id", "projection_changes", ["txid", "id"])
    op.create_index("ix_projection_changes_changed_at", "projection_changes", ["changed_at"])
    # One statement-level trigger per table and event (transition tables allow only one event):
    # every writer (consumers, the API, anything later) logs its changes in its own transaction.
    for table, key in _PROJECTIONS.items():
        # Table and key names are the constants above.
        op.execute(
            f"""
            CREATE FUNCTION {table}_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO projection_changes (entity, entity_id, op, data)
                SELECT '{table}', n.{key}, lower(TG_OP), to_jsonb(n) FROM new_rows AS n;
                IF FOUND THEN
                    PERFORM pg_notify('sluice_projection_changes', '');
                END IF;
                RETURN NULL;
            END $$
            """  # noqa: S608
        )
        for event in ("INSERT", "UPDATE"):
            op.execute(
                f"""
                CREATE TRIGGER {table}_log_{event.lower()} AFTER {event} ON {table}
                REFERENCING NEW TABLE AS new_rows
                FOR EACH STATEMENT EXECUTE FUNCTION {table}_log_changes()
                """
            )

    op.create_table(
        "lead_sync",
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("claimed_until", _TS, nullable=True),
        sa.Column("synced_at", _TS, nullable=True),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("record_id", name="pk_lead_sync"),
        sa.CheckConstraint(
            "status IN ('pending', 'synced', 'failed')", name="ck_lead_sync_status_known"
        ),
    )
    op.create_index(
        "ix_lead_sync_status_next_attempt_at", "lead_sync", ["status", "next_attempt_at"]
    )
    op.create_table(
        "lead_sync_fields",
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=False),
        sa.Column("app_changed_at", _TS, nullable=True),
        sa.Column("pushed_app_changed_at", _TS, nullable=True),
        sa.Column("airtable_changed_at", _TS, nullable=True),
        sa.Column("airtable_value", JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("record_id", "column_name", name="pk_lead_sync_fields"),
    )
    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("column_name", sa.Text(), nullable=False),
        sa.Column("app_value", JSONB(), nullable=True),
        sa.Column("app_changed_at", _TS, nullable=False),
        sa.Column("airtable_value", JSONB(), nullable=True),
        sa.Column("airtable_changed_at", _TS, nullable=False),
        _now("detected_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sync_conflicts"),
    )
    op.create_index("ix_sync_conflicts_record_id", "sync_conflicts", ["record_id"])
    op.execute(
        """
        CREATE FUNCTION lead_sync_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sluice_writeback', '');
            RETURN NULL;
        END $$
        """
    )
    # Wakes the write-back pusher when a record needs pushing; NOTIFY is delivered on commit and
    # repeats within one transaction are folded into one.
    op.execute(
        """
        CREATE TRIGGER lead_sync_notify AFTER INSERT OR UPDATE ON lead_sync
        FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION lead_sync_notify()
        """
    )


def downgrade() -> None:
    op.drop_table("sync_conflicts")
    op.drop_table("lead_sync_fields")
    op.drop_table("lead_sync")  # drops its trigger
    op.execute("DROP FUNCTION lead_sync_notify()")
    for table in _PROJECTIONS:
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER {table}_log_{event} ON {table}")
        op.execute(f"DROP FUNCTION {table}_log_changes()")
    op.drop_table("projection_changes")
    op.drop_table("idempotency_keys")
