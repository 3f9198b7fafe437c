"""Periodic clean-up of account records nobody will use again.

Expired sessions, invites used or expired longer ago than the retention period, throttle rows
whose window has passed and addresses not signed in from for a long time. Every delete is a
condition on time, so running it on several replicas at once is harmless; on PostgreSQL an
advisory lock lets one replica do it while the others skip that round.
"""

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, text

from nodeplane.controlplane.config import AccountLimits
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.models import Invite, Session, SignInAddress, SignInThrottle
from nodeplane.controlplane.store.types import utcnow

# Any constant works; it only has to be the same on every replica and differ from the others.
_SWEEP_LOCK_KEY = 7_272_740_302


@dataclass(frozen=True)
class AccountSweep:
    """How many rows of each kind one round deleted."""

    sessions: int
    invites: int
    throttle_rows: int
    known_addresses: int


def _count(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


async def sweep_account_records(db: Database, limits: AccountLimits) -> AccountSweep | None:
    """Delete what has expired; returns None if another replica is sweeping right now."""
    now = utcnow()
    invites_before = now - timedelta(days=limits.invite_retention_days)
    throttle_before = now - timedelta(seconds=limits.signin_window_seconds)
    addresses_before = now - timedelta(days=limits.signin_known_address_days)
    async with db.write() as uow:
        session = uow.session
        if db.is_postgresql:
            got = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _SWEEP_LOCK_KEY}
            )
            if not got:
                return None
        sessions = await session.execute(delete(Session).where(Session.expires_at <= now))
        invites = await session.execute(
            delete(Invite).where(
                or_(Invite.accepted_at < invites_before, Invite.expires_at < invites_before)
            )
        )
        throttle_rows = await session.execute(
            delete(SignInThrottle).where(
                SignInThrottle.last_failure_at < throttle_before,
                or_(SignInThrottle.blocked_until.is_(None), SignInThrottle.blocked_until <= now),
            )
        )
        addresses = await session.execute(
            delete(SignInAddress).where(SignInAddress.last_success_at < addresses_before)
        )
    return AccountSweep(_count(sessions), _count(invites), _count(throttle_rows), _count(addresses))
