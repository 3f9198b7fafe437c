"""Sign-in throttling with growing delays, kept in the database so every replica agrees.

Failures are counted under three keys, each with its own allowance before delays start:

- an account at one client address: the attacker's address is slowed, not the account;
- a client address across accounts: credential stuffing from one address;
- an account across addresses, with a much larger allowance, and never for an address that has
  signed in to that account before: a distributed attacker is slowed, while the real user keeps
  signing in from where they usually do.

Past its allowance a key is blocked for a delay that doubles with every further failure, up to a
cap, counted from the moment the failure is answered; a blocked attempt is refused before any
password work. An attempt is counted as a failure when it is admitted (so parallel guesses cannot
slip past the count) and given back when the password turns out right.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from nodeplane.controlplane.config import AccountLimits
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.store.database import dialect_insert
from nodeplane.controlplane.store.models import SignInAddress, SignInThrottle, User

UNKNOWN_ADDRESS = "unknown"
MAX_ADDRESS_LENGTH = 64


class Scope(StrEnum):
    """What a throttle key counts failures of."""

    ACCOUNT_ADDRESS = "account_address"
    ADDRESS = "address"
    ACCOUNT = "account"


def client_address(host: str | None) -> str:
    """The throttle's name for a client host (the ASGI scope's client, or `unknown`)."""
    return host[:MAX_ADDRESS_LENGTH] if host else UNKNOWN_ADDRESS


def free_failures(limits: AccountLimits, scope: Scope) -> int:
    """Failures a key may have before delays start."""
    return {
        Scope.ACCOUNT_ADDRESS: limits.signin_free_failures,
        Scope.ADDRESS: limits.signin_address_free_failures,
        Scope.ACCOUNT: limits.signin_account_free_failures,
    }[scope]


def delay_after(limits: AccountLimits, scope: Scope, failures: int) -> float | None:
    """Seconds a key is blocked after its `failures`-th failure, or None while still free."""
    over = failures - free_failures(limits, scope)
    if over <= 0:
        return None
    doubling = limits.signin_first_delay_seconds * 2.0 ** min(over - 1, 40)
    return min(limits.signin_max_delay_seconds, doubling)


@dataclass(frozen=True)
class Attempt:
    """A sign-in attempt the throttle admitted, already counted as a failure under `keys`."""

    keys: tuple[tuple[Scope, str], ...]
    address: str


async def _known_address(
    session: AsyncSession, limits: AccountLimits, email: str, address: str, now: datetime
) -> bool:
    since = now - timedelta(days=limits.signin_known_address_days)
    found = await session.scalar(
        select(SignInAddress.user_id)
        .join(User, User.id == SignInAddress.user_id)
        .where(
            User.email == email,
            SignInAddress.address == address,
            SignInAddress.last_success_at > since,
        )
    )
    return found is not None


async def _locked_rows(
    session: AsyncSession, keys: list[tuple[Scope, str]], now: datetime
) -> list[SignInThrottle]:
    # Create missing rows without racing other replicas, then lock all of them in one fixed
    # order, so two replicas locking overlapping keys cannot deadlock.
    await session.execute(
        dialect_insert(session, SignInThrottle)
        .values(
            [{"scope": s.value, "key": k, "failures": 0, "last_failure_at": now} for s, k in keys]
        )
        .on_conflict_do_nothing()
    )
    rows = await session.scalars(
        select(SignInThrottle)
        .where(or_(*(and_(SignInThrottle.scope == s, SignInThrottle.key == k) for s, k in keys)))
        .order_by(SignInThrottle.scope, SignInThrottle.key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


def _retry_after(seconds: float) -> DomainError:
    retry = max(1, math.ceil(seconds))
    return DomainError(
        ErrorCode.RATE_LIMITED,
        f"too many failed sign-ins; try again in {retry} s",
        details={"retryAfterSeconds": retry},
    )


async def admit(
    session: AsyncSession, limits: AccountLimits, email: str, address: str, now: datetime
) -> Attempt:
    """Count a sign-in attempt as a failure, or raise `rate_limited` if one of its keys waits."""
    keys = [(Scope.ACCOUNT_ADDRESS, f"{email} {address}"), (Scope.ADDRESS, address)]
    if not await _known_address(session, limits, email, address, now):
        keys.append((Scope.ACCOUNT, email))
    # One order for every statement that locks these rows (the same as the SELECT's ORDER BY).
    keys.sort(key=lambda k: (k[0].value, k[1]))
    rows = await _locked_rows(session, keys, now)
    window = timedelta(seconds=limits.signin_window_seconds)
    for row in rows:
        if now - row.last_failure_at > window and not (
            row.blocked_until and row.blocked_until > now
        ):
            row.failures = 0
            row.blocked_until = None
    waits = [
        (r.blocked_until - now).total_seconds()
        for r in rows
        if r.blocked_until and r.blocked_until > now
    ]
    if waits:
        raise _retry_after(max(waits))
    for row in rows:
        row.failures += 1
        row.last_failure_at = now
        delay = delay_after(limits, Scope(row.scope), row.failures)
        row.blocked_until = now + timedelta(seconds=delay) if delay is not None else None
    return Attempt(tuple(keys), address)


async def record_failure(
    session: AsyncSession, limits: AccountLimits, attempt: Attempt, now: datetime
) -> None:
    """The password was wrong: the attempt stays counted, and its delays run from now.

    Admission already blocked the keys that went past their allowance; starting the delay again
    once the answer is known keeps the time spent verifying from eating into it.
    """
    for scope, key in attempt.keys:
        row = await session.get(SignInThrottle, (scope.value, key), with_for_update=True)
        if row is None:
            continue
        delay = delay_after(limits, scope, row.failures)
        if delay is not None:
            until = now + timedelta(seconds=delay)
            row.blocked_until = max(row.blocked_until or until, until)


async def record_success(
    session: AsyncSession, limits: AccountLimits, attempt: Attempt, user_id: UUID, now: datetime
) -> None:
    """The password was right: give back the attempt's failure and remember the address."""
    for scope, key in attempt.keys:
        if scope is Scope.ACCOUNT_ADDRESS:
            await session.execute(
                delete(SignInThrottle).where(
                    SignInThrottle.scope == scope.value, SignInThrottle.key == key
                )
            )
            continue
        row = await session.get(SignInThrottle, (scope.value, key), with_for_update=True)
        if row is not None:
            row.failures = max(0, row.failures - 1)
            if delay_after(limits, scope, row.failures) is None:
                row.blocked_until = None
    await remember_address(session, user_id, attempt.address, now)


async def remember_address(
    session: AsyncSession, user_id: UUID, address: str, now: datetime
) -> None:
    """Record that `user_id` signed in from `address` (the per-account throttle spares it)."""
    await session.execute(
        dialect_insert(session, SignInAddress)
        .values(user_id=user_id, address=address, last_success_at=now)
        .on_conflict_do_update(
            index_elements=[SignInAddress.user_id, SignInAddress.address],
            set_={"last_success_at": now},
        )
    )
