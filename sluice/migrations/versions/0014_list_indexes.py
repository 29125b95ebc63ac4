"""the App API's list filters, each an index in the list's own order: jobs by when they start
(a job with no start last) within each filter, leads by record id within each filter

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# api/jobs.py SORT_KEY: every jobs list is read in this order, then by booking id.
_JOB_KEY = "(COALESCE(start_at, 'infinity'::timestamptz)), booking_id"
_JOB_FILTERS = ("location_id", "status", "work_status", "team_member_id", "customer_id")


def upgrade() -> None:
    op.execute(f"CREATE INDEX ix_jobs_list ON jobs ({_JOB_KEY})")
    for column in _JOB_FILTERS:
        op.execute(f"CREATE INDEX ix_jobs_list_{column} ON jobs ({column}, {_JOB_KEY})")
    # Served by the list indexes' leading columns now.
    op.drop_index("ix_jobs_start_at", table_name="jobs")
    op.drop_index("ix_jobs_customer_id", table_name="jobs")
    op.drop_index("ix_leads_claimed_by", table_name="leads")
    op.create_index("ix_leads_list_claimed_by", "leads", ["claimed_by", "record_id"])
    op.create_index("ix_leads_list_lead_status", "leads", ["lead_status", "record_id"])
    op.create_index("ix_lead_sync_status", "lead_sync", ["status", "record_id"])


def downgrade() -> None:
    op.drop_index("ix_lead_sync_status", table_name="lead_sync")
    op.drop_index("ix_leads_list_lead_status", table_name="leads")
    op.drop_index("ix_leads_list_claimed_by", table_name="leads")
    op.create_index("ix_leads_claimed_by", "leads", ["claimed_by"])
    op.create_index("ix_jobs_customer_id", "jobs", ["customer_id"])
    op.create_index("ix_jobs_start_at", "jobs", ["start_at"])
    for column in _JOB_FILTERS:
        op.drop_index(f"ix_jobs_list_{column}", table_name="jobs")
    op.drop_index("ix_jobs_list", table_name="jobs")
