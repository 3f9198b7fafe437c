"""Leader election on a real Lease: one holder at a time, a follower takes over once the holder
stops renewing (after the lease duration) or at once when it released the Lease, and a holder
that finds the Lease taken stops acting."""

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.resources.coordination_v1 import Lease

from nodeplane.executor.operator.leader import LeaderElector, LeadershipLost, LeaseConfig
from tests.support.kube import KubeTestCluster

TIMING = LeaseConfig("test-lease", duration=3.0, renew_deadline=2.0, retry_period=0.2)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def electors(
    cluster: KubeTestCluster, namespace: str, loop: asyncio.AbstractEventLoop
) -> tuple[LeaderElector, LeaderElector]:
    config = KubeConfig.from_file(cluster.kubeconfig)

    async def make() -> tuple[LeaderElector, LeaderElector]:
        return (
            LeaderElector(AsyncClient(config=config), namespace, str(uuid.uuid4()), TIMING),
            LeaderElector(AsyncClient(config=config), namespace, str(uuid.uuid4()), TIMING),
        )

    return loop.run_until_complete(make())


def holder(kube: Client, namespace: str) -> str | None:
    spec = kube.get(Lease, TIMING.name, namespace=namespace).spec
    return spec.holderIdentity if spec else None


def test_follower_takes_over_after_the_lease_expires(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    a, b = electors(kube_cluster, namespace, loop)

    async def scenario() -> tuple[str | None, float]:
        assert await a.acquire() is None
        holding = asyncio.create_task(a.hold())
        # While a renews, b never gets it.
        for _ in range(10):
            assert await b.try_acquire_or_renew() == (False, None)
            await asyncio.sleep(0.2)
        holding.cancel()  # a is killed: no release, its renewals just stop
        stopped = time.monotonic()
        previous = await b.acquire()
        return previous, time.monotonic() - stopped

    previous, waited = loop.run_until_complete(scenario())
    assert previous == a.identity
    # It waited for the Lease to expire (renewals stop up to a retry period before the kill).
    assert waited >= TIMING.duration - 1.0
    assert holder(kube, namespace) == b.identity
    lease = kube.get(Lease, TIMING.name, namespace=namespace)
    assert lease.spec.leaseTransitions == 1


def test_a_released_lease_is_taken_at_once(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    a, b = electors(kube_cluster, namespace, loop)

    async def scenario() -> float:
        await a.acquire()
        assert await b.try_acquire_or_renew() == (False, None)
        await a.release()
        released = time.monotonic()
        # The released Lease still names a, so b names a as the instance it succeeds.
        assert await b.acquire() == a.identity
        return time.monotonic() - released

    assert loop.run_until_complete(scenario()) < TIMING.duration
    assert holder(kube, namespace) == b.identity


def test_a_holder_that_finds_the_lease_taken_stops(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    a, b = electors(kube_cluster, namespace, loop)

    async def scenario() -> None:
        await a.acquire()
        # a stalls (a long pause) past the lease duration; b takes the Lease meanwhile.
        await b.acquire()
        with pytest.raises(LeadershipLost, match=b.identity):
            await a.hold()

    loop.run_until_complete(scenario())
    assert not a.is_leader and b.is_leader
