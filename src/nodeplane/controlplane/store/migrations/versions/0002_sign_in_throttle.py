"""sign-in throttle per account, address and both; known sign-in addresses; session expiry index

The per-email lock-out table `login_throttle` becomes `sign_in_throttle`, whose keys count failures
per (account, address), per address and per account (issue 7, finding 7). Old failure counts carry
over as per-account counts, so an attack in progress keeps its count; old lock-outs do not, since
locking the account for everyone is what this change removes. No address was recorded before, so
`sign_in_addresses` starts empty and fills as people sign in.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from nodeplane.controlplane.store.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Table shapes as of this revision, independent of how the models change later.
_old_throttle = sa.table(
    "login_throttle",
    sa.column("email", sa.String(320)),
    sa.column("failures", sa.Integer()),
    sa.column("window_started_at", UTCDateTime()),
    sa.column("locked_until", UTCDateTime()),
)
_new_throttle = sa.table(
    "sign_in_throttle",
    sa.column("scope", sa.String(16)),
    sa.column("key", sa.String(400)),
    sa.column("failures", sa.Integer()),
    sa.column("last_failure_at", UTCDateTime()),
    sa.column("blocked_until", UTCDateTime()),
)


def upgrade() -> None:
    op.create_table(
        "sign_in_throttle",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_sign_in_throttle")),
    )
    with op.batch_alter_table("sign_in_throttle", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sign_in_throttle_last_failure_at"), ["last_failure_at"], unique=False
        )

    op.create_table(
        "sign_in_addresses",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("last_success_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sign_in_addresses_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "address", name=op.f("pk_sign_in_addresses")),
    )
    with op.batch_alter_table("sign_in_addresses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sign_in_addresses_last_success_at"), ["last_success_at"], unique=False
        )

    conn = op.get_bind()
    carried = [
        {
            "scope": "account",
            "key": row.email,
            "failures": row.failures,
            "last_failure_at": row.window_started_at,
            "blocked_until": None,
        }
        for row in conn.execute(
            sa.select(
                _old_throttle.c.email, _old_throttle.c.failures, _old_throttle.c.window_started_at
            ).where(_old_throttle.c.failures > 0)
        )
    ]
    if carried:
        op.bulk_insert(_new_throttle, carried)
    op.drop_table("login_throttle")

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_expires_at"))

    op.create_table(
        "login_throttle",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_until", UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_login_throttle")),
    )
    conn = op.get_bind()
    returned = [
        {
            "email": row.key,
            "failures": row.failures,
            "window_started_at": row.last_failure_at,
            "locked_until": None,
        }
        for row in conn.execute(
            sa.select(
                _new_throttle.c.key, _new_throttle.c.failures, _new_throttle.c.last_failure_at
            ).where(_new_throttle.c.scope == "account")
        )
    ]
    if returned:
        op.bulk_insert(_old_throttle, returned)

    with op.batch_alter_table("sign_in_addresses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_addresses_last_success_at"))
    op.drop_table("sign_in_addresses")
    with op.batch_alter_table("sign_in_throttle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sign_in_throttle_last_failure_at"))
    op.drop_table("sign_in_throttle")
