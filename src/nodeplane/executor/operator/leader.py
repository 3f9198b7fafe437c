"""Leader election on a coordination.k8s.io/v1 Lease, in the shape of client-go's.

Several operator replicas may run; only the holder of the Lease acts (runs the executor runtime
and the controller). The holder renews the Lease every `retry_period`; a replica that cannot
renew within `renew_deadline` stops acting (LeadershipLost), so two never act at once as long as
`renew_deadline < duration`. A candidate takes an expired Lease over.

Expiry is judged as client-go judges it, by the candidate's own clock: a Lease counts as
expired when its record (holder, renew time, transitions) has not changed for `duration` seconds
*since the candidate first saw it that way*, never by comparing the holder's timestamps with the
local clock, so clock skew between machines cannot hand the Lease to two replicas.

The holder identity is the operator process's instance id (a UUID): a new leader names the
previous holder to the control plane as its predecessor, which lets it take over the executor at
once instead of waiting out the heartbeat timeout. A leader that stops cleanly releases the
Lease (cut to one second), so a follower takes over without waiting for it to expire.
"""

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = structlog.get_logger(__name__)

DEFAULT_LEASE_NAME = "nodeplane-operator"


@dataclass(frozen=True)
class LeaseConfig:
    """The Lease and its timing, in seconds (client-go's defaults)."""

    name: str = DEFAULT_LEASE_NAME
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError("lease timing needs 0 < retry period < renew deadline < duration")


class LeadershipLost(Exception):
    """This replica could not renew the Lease in time, or another replica holds it now."""


def micro_now() -> datetime:
    """Now, for a MicroTime field: the API server parses MicroTime with exactly six fraction
    digits, and the client writes none for a zero fraction, so the fraction is never zero."""
    now = datetime.now(UTC)
    return now if now.microsecond else now.replace(microsecond=1)


class LeaderElector:
    """Acquires, renews and releases one Lease for one identity."""

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        identity: str,
        config: LeaseConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.identity = identity
        self.config = config or LeaseConfig()
        self.clock = clock
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    def _observe(self, spec: LeaseSpec) -> None:
        record = (spec.holderIdentity, spec.renewTime, spec.leaseTransitions)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()

    def _spec(self, previous: LeaseSpec | None) -> LeaseSpec:
        now = micro_now()
        duration = math.ceil(self.config.duration)
        if previous is not None and previous.holderIdentity == self.identity:
            return LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=duration,
                acquireTime=previous.acquireTime or now,
                renewTime=now,
                leaseTransitions=previous.leaseTransitions or 0,
            )
        transitions = (previous.leaseTransitions or 0) + 1 if previous is not None else 0
        return LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=duration,
            acquireTime=now,
            renewTime=now,
            leaseTransitions=transitions,
        )

    async def try_acquire_or_renew(self) -> tuple[bool, str | None]:
        """One attempt (client-go's tryAcquireOrRenew): (whether we hold the Lease now, the
        holder we took it from, if any)."""
        try:
            lease = await self.client.get(Lease, self.config.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            created = Lease(
                metadata=ObjectMeta(name=self.config.name, namespace=self.namespace),
                spec=self._spec(None),
            )
            try:
                await self.client.create(created)
            except ApiError as create_exc:
                if create_exc.status.code == 409:  # another candidate was faster
                    return False, None
                raise
            self._observe(self._spec(None) if created.spec is None else created.spec)
            return True, None
        spec = lease.spec or LeaseSpec()
        self._observe(spec)
        holder = spec.holderIdentity or None
        if holder is not None and holder != self.identity:
            duration = spec.leaseDurationSeconds or self.config.duration
            if self.clock() < self._observed_at + duration:
                return False, None
        lease.spec = self._spec(spec)
        try:
            await self.client.replace(lease)
        except ApiError as exc:
            if exc.status.code == 409:  # written meanwhile (renewed, or taken): look again
                return False, None
            raise
        self._observe(lease.spec)
        return True, holder if holder != self.identity else None

    async def acquire(self) -> str | None:
        """Wait until this identity holds the Lease; the holder it was taken from, if any."""
        log.info("leader.candidate", lease=self.config.name, identity=self.identity)
        while True:
            try:
                acquired, previous = await self.try_acquire_or_renew()
            except (ApiError, httpx.HTTPError) as exc:
                log.warning("leader.acquire_failed", error=str(exc))
                acquired, previous = False, None
            if acquired:
                self.is_leader = True
                log.info("leader.acquired", lease=self.config.name, previous=previous)
                return previous
            # Jittered like client-go's wait.JitterUntil, so candidates do not knock in step.
            await asyncio.sleep(self.config.retry_period * (1 + 0.2 * random.random()))

    async def hold(self) -> None:
        """Renew the Lease until cancelled; LeadershipLost when a renewal is not made in time."""
        last_renewal = self.clock()
        while True:
            await asyncio.sleep(self.config.retry_period)
            try:
                renewed, _ = await self.try_acquire_or_renew()
            except (ApiError, httpx.HTTPError) as exc:
                log.warning("leader.renew_failed", error=str(exc))
                renewed = False
            if renewed:
                last_renewal = self.clock()
                continue
            if self._observed is not None and self._observed[0] not in (None, "", self.identity):
                self.is_leader = False
                raise LeadershipLost(f"the Lease is held by {self._observed[0]} now")
            if self.clock() - last_renewal >= self.config.renew_deadline:
                self.is_leader = False
                raise LeadershipLost(
                    f"the Lease was not renewed for {self.config.renew_deadline:g} s"
                )

    async def release(self) -> None:
        """Give the Lease up so a follower takes over within a second; only if held.

        Unlike client-go, the holder identity stays (with a one-second duration): the follower
        then names this instance to the control plane as its predecessor and is accepted at once.
        """
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.client.get(Lease, self.config.name, namespace=self.namespace)
            if lease.spec is None or lease.spec.holderIdentity != self.identity:
                return
            lease.spec.renewTime = micro_now()
            lease.spec.leaseDurationSeconds = 1
            await self.client.replace(lease)
            log.info("leader.released", lease=self.config.name)
        except (ApiError, httpx.HTTPError) as exc:  # it expires on its own then
            log.warning("leader.release_failed", error=str(exc))
