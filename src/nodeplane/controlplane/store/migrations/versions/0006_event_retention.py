"""events: indexes for the retention pruner

The pruner (services/event_retention.py) deletes, oldest first, the events no person caused: past
an age over all organizations, past a count per organization. Two partial indexes hold exactly
those rows in those orders, so a round that finds nothing old reads next to nothing, however long
the audit trail beside them has grown. No data changes.

Revision ID: 0006
Revises: 0005
Create Date: 2027-02-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    where = sa.text("actor_type <> 'user'")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_prunable_age",
            ["created_at", "id"],
            unique=False,
            postgresql_where=where,
            sqlite_where=where,
        )
        batch_op.create_index(
            "ix_events_prunable_org",
            ["organization_id", "created_at", "id"],
            unique=False,
            postgresql_where=where,
            sqlite_where=where,
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_prunable_org")
        batch_op.drop_index("ix_events_prunable_age")
