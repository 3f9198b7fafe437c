"""alerts: incidents, alert settings, and the sync progress marks of nodes

`incidents` holds every alert incident (issue 10, "Alerts"); its `open_key` is set while an
incident is open and unique per organization, so concurrent evaluators cannot open a second one.
`alert_settings` holds organization defaults and per-node overrides. Nodes gain `height_marks`
and `heights_since` (when each process's height last moved), both empty until the next changed
observation: existing nodes start their stall clock at the first report after the upgrade.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from nodeplane.controlplane.store.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("height_marks", JSON, nullable=True))
        batch_op.add_column(sa.Column("heights_since", UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_nodes_heights_since"), ["heights_since"], unique=False)

    op.create_table(
        "alert_settings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=True),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("updated_by", sa.String(length=320), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_alert_settings_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_settings")),
        sa.UniqueConstraint(
            "organization_id", "scope", "rule", name=op.f("uq_alert_settings_organization_id")
        ),
    )
    with op.batch_alter_table("alert_settings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_settings_node_id"), ["node_id"], unique=False)

    op.create_table(
        "incidents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("subject_name", sa.String(length=63), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=True),
        sa.Column("executor_id", sa.Uuid(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.Column("open_key", sa.String(length=100), nullable=True),
        sa.Column("opened_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_incidents_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint(
            "organization_id", "open_key", name=op.f("uq_incidents_organization_id")
        ),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_incidents_org_opened", ["organization_id", "opened_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_incidents_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incidents_node_id"))
        batch_op.drop_index("ix_incidents_org_opened")
    op.drop_table("incidents")
    with op.batch_alter_table("alert_settings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_settings_node_id"))
    op.drop_table("alert_settings")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_heights_since"))
        batch_op.drop_column("heights_since")
        batch_op.drop_column("height_marks")
