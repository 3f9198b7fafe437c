"""one live agent process per executor: its instance id and last sync; refused instances

Executors gain `instance_id` and `instance_seen_at`, the agent process that acts for the
executor and when it last synced (issue 12, "one instance"). Both start empty: the first sync of
an agent that sends an instance id records it, and agents that send none are not checked, so
every executor keeps working through the upgrade. `executor_instance_refusals` remembers which
instances were refused, so the refusal event is written once per instance.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from nodeplane.controlplane.store.types import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("instance_seen_at", UTCDateTime(timezone=True), nullable=True)
        )

    op.create_table(
        "executor_instance_refusals",
        sa.Column("executor_id", sa.Uuid(), nullable=False),
        sa.Column("instance_id", sa.Uuid(), nullable=False),
        sa.Column("first_refused_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_refused_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["executor_id"],
            ["executors.id"],
            name=op.f("fk_executor_instance_refusals_executor_id_executors"),
        ),
        sa.PrimaryKeyConstraint(
            "executor_id", "instance_id", name=op.f("pk_executor_instance_refusals")
        ),
    )
    with op.batch_alter_table("executor_instance_refusals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_executor_instance_refusals_last_refused_at"),
            ["last_refused_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("executor_instance_refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executor_instance_refusals_last_refused_at"))
    op.drop_table("executor_instance_refusals")
    with op.batch_alter_table("executors", schema=None) as batch_op:
        batch_op.drop_column("instance_seen_at")
        batch_op.drop_column("instance_id")
