"""The dispatcher: a background task of each server process that sends due webhook deliveries.

It never runs inside a request and holds no transaction while a receiver is being waited for:

1. Claim (one short write transaction): due pending rows, oldest first, at most as many as it
   has free slots, skipping endpoints already at their in-flight limit. On PostgreSQL the rows
   are selected `FOR UPDATE SKIP LOCKED`, so several processes or replicas never claim the same
   row; SQLite serves one process, whose writes are serialized anyway. A claimed row gets a
   claim id and its `next_attempt_at` moved past the attempt's deadline: a lease. Should this
   process die mid-attempt, the row falls due again when the lease ends and another process
   sends it (at least once; receivers deduplicate on the delivery id).
2. Send, on a task of its own: resolve and check the destination (webhooks/urls.py), sign and
   POST with one deadline over the whole exchange (`attempt_timeout_seconds`), keep the status
   and at most RESPONSE_EXCERPT_BYTES of the answer.
3. Record (another short transaction): the attempt row, and the delivery succeeded, failed, or
   due again after a backoff (webhooks/retry.py); only if the claim is still ours.

A slow or dead receiver holds at most `per_endpoint_concurrency` of the `concurrency` slots,
each for at most the attempt timeout: other endpoints, alert evaluation and API requests go on.
"""

import asyncio
import contextlib
import ssl
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy import select, update

from nodeplane import __version__
from nodeplane.controlplane.config import WebhookSettings
from nodeplane.controlplane.services.webhooks import DeliveryStatus, prune_deliveries
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from nodeplane.controlplane.store.types import utcnow
from nodeplane.controlplane.webhooks.retry import RetryPolicy
from nodeplane.controlplane.webhooks.signing import signed_headers
from nodeplane.controlplane.webhooks.urls import (
    DestinationRefused,
    WebhookUrlError,
    check_webhook_url,
    pinned_url,
    resolve_destination,
)

log = structlog.get_logger(__name__)

RESPONSE_EXCERPT_BYTES = 1024
MAX_ERROR_CHARS = 500
# A claim outlives the attempt's deadline by this much before another process may take it.
LEASE_MARGIN_SECONDS = 30.0
USER_AGENT = f"nodeplane-webhooks/{__version__}"
# Threads for DNS lookups of receivers' names (a lookup cannot be cancelled once started).
RESOLVER_THREADS = 4
# How often finished deliveries past their retention are deleted.
PRUNE_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery this process has claimed, with what sending it needs."""

    delivery_id: uuid.UUID
    claim_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secret: str
    event_type: str
    body: str


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to."""

    started_at: datetime
    duration_ms: int
    status_code: int | None
    response_excerpt: str
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def _storable(text: str, limit: int) -> str:
    # PostgreSQL text holds no NUL; a receiver's answer may.
    return text.replace("\x00", "\ufffd")[:limit]


class WebhookDispatcher:
    """Claims due deliveries and sends them, within the process's slots (see the module)."""

    def __init__(
        self,
        db: Database,
        settings: WebhookSettings,
    ) -> None:
        self.db = db
        self.settings = settings
        self.policy = RetryPolicy(
            base_seconds=settings.backoff_base_seconds,
            max_delay_seconds=settings.max_delay_seconds,
            window_seconds=settings.retry_window_seconds,
        )
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            # The environment's proxies would undo the pinned address (urls.py).
            trust_env=False,
            # The system's trust store (and SSL_CERT_FILE / SSL_CERT_DIR, as OpenSSL reads
            # them), so receivers behind an organization's own CA verify as they do elsewhere.
            verify=ssl.create_default_context(),
            timeout=httpx.Timeout(settings.attempt_timeout_seconds),
            limits=httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=4),
            headers={"user-agent": USER_AGENT},
        )
        self._resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="webhook-dns")
        # Keyed by (delivery, claim): a delivery whose lease ended may be claimed again.
        self._in_flight: dict[tuple[uuid.UUID, uuid.UUID], asyncio.Task[None]] = {}
        self._per_endpoint: Counter[uuid.UUID] = Counter()
        self._slot_freed = asyncio.Event()

    async def run(self) -> None:
        """Claim and send until cancelled; a failing claim is logged and retried next round."""
        next_prune = 0.0
        while True:
            # Cleared before looking, so an attempt ending meanwhile wakes the wait below.
            self._slot_freed.clear()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
                await self.prune()
            free = self.settings.concurrency - len(self._in_flight)
            if free > 0:
                try:
                    for claimed in await self.claim(free):
                        self._start(claimed)
                except Exception as error:
                    log.warning("webhooks.claim_failed", error=repr(error)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), self.settings.poll_interval_seconds)

    async def prune(self) -> int:
        """Delete finished deliveries past their retention, a batch per transaction; the
        deletes are conditions on time, so several processes doing it at once is harmless."""
        pruned = 0
        try:
            while True:
                async with self.db.write() as uow:
                    batch = await prune_deliveries(
                        uow.session, older_than_days=self.settings.retention_days
                    )
                pruned += batch
                if batch == 0:
                    break
        except Exception as error:
            log.warning("webhooks.prune_failed", error=repr(error)[:300])
        if pruned:
            log.info("webhooks.pruned", deliveries=pruned)
        return pruned

    async def close(self) -> None:
        """Stop the attempts in flight (their leases end and they are retried) and the client."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._client.aclose()
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def _start(self, claimed: ClaimedDelivery) -> None:
        self._per_endpoint[claimed.endpoint_id] += 1
        task = asyncio.create_task(
            self._deliver(claimed), name=f"nodeplane-webhook-{claimed.delivery_id}"
        )
        key = (claimed.delivery_id, claimed.claim_id)
        self._in_flight[key] = task

        def done(_task: "asyncio.Task[None]") -> None:
            self._in_flight.pop(key, None)
            self._per_endpoint[claimed.endpoint_id] -= 1
            if self._per_endpoint[claimed.endpoint_id] <= 0:
                del self._per_endpoint[claimed.endpoint_id]
            self._slot_freed.set()

        task.add_done_callback(done)

    async def claim(self, free: int) -> list[ClaimedDelivery]:
        """Take up to `free` due deliveries for this process (see the module's step 1)."""
        limit = max(1, self.settings.per_endpoint_concurrency)
        busy = [e for e, n in self._per_endpoint.items() if n >= limit]
        now = utcnow()
        # Most rounds find nothing due: a plain read says so without taking SQLite's one write
        # lock (or a PostgreSQL transaction) every poll interval.
        async with self.db.quick_read() as session:
            due = await session.scalar(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                )
                .limit(1)
            )
        if due is None:
            return []
        query = (
            select(
                WebhookDelivery.id,
                WebhookDelivery.endpoint_id,
                WebhookDelivery.event_type,
                WebhookDelivery.body,
                WebhookEndpoint.url,
                WebhookEndpoint.secret,
            )
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(free)
        )
        if busy:
            query = query.where(WebhookDelivery.endpoint_id.not_in(busy))
        if self.db.is_postgresql:
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        claim_id = uuid.uuid4()
        lease_until = now + timedelta(
            seconds=self.settings.attempt_timeout_seconds + LEASE_MARGIN_SECONDS
        )
        async with self.db.write() as uow:
            rows = (await uow.session.execute(query)).all()
            taken: list[ClaimedDelivery] = []
            counts = Counter(self._per_endpoint)
            for row in rows:
                if counts[row.endpoint_id] >= limit:
                    continue  # stays due, for a later round
                counts[row.endpoint_id] += 1
                taken.append(
                    ClaimedDelivery(
                        row.id,
                        claim_id,
                        row.endpoint_id,
                        row.url,
                        row.secret,
                        row.event_type,
                        row.body,
                    )
                )
            if taken:
                await uow.session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_([t.delivery_id for t in taken]))
                    .values(claim_id=claim_id, next_attempt_at=lease_until)
                )
        return taken

    async def attempt(self, claimed: ClaimedDelivery) -> AttemptResult:
        """Send one claimed delivery once; never raises for what the receiver or network did."""
        started_at = utcnow()
        clock = time.monotonic()
        status_code: int | None = None
        excerpt = ""
        error: str | None = None
        timeout = self.settings.attempt_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                target = check_webhook_url(claimed.url)
                addresses = await resolve_destination(target, self._resolver)
                body = claimed.body.encode()
                headers = signed_headers(
                    claimed.secret,
                    delivery_id=str(claimed.delivery_id),
                    event_type=claimed.event_type,
                    timestamp=int(time.time()),
                    body=body,
                )
                headers["host"] = urlsplit(target.url).netloc
                extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
                for index, address in enumerate(addresses):
                    try:
                        status_code, excerpt = await self._post(
                            pinned_url(target, address), body, headers, extensions
                        )
                        break
                    except httpx.ConnectError:
                        if index == len(addresses) - 1:
                            raise
                assert status_code is not None
                if not 200 <= status_code < 300:
                    error = f"the receiver answered {status_code}"
        except TimeoutError:
            error = f"no complete answer within {timeout:g} s"
        except (WebhookUrlError, DestinationRefused) as refused:
            error = f"refused: {refused}"
        except httpx.HTTPError as failure:
            error = (
                f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
            )
        except OSError as failure:
            error = f"{type(failure).__name__}: {failure}"
        return AttemptResult(
            started_at=started_at,
            duration_ms=int((time.monotonic() - clock) * 1000),
            status_code=status_code,
            response_excerpt=_storable(excerpt, RESPONSE_EXCERPT_BYTES),
            error=_storable(error, MAX_ERROR_CHARS) if error is not None else None,
        )

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], extensions: dict[str, str]
    ) -> tuple[int, str]:
        """POST once; the status and the first RESPONSE_EXCERPT_BYTES of the answer."""
        async with self._client.stream(
            "POST", url, content=body, headers=headers, extensions=extensions
        ) as response:
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= RESPONSE_EXCERPT_BYTES:
                    break
            excerpt = bytes(received[:RESPONSE_EXCERPT_BYTES]).decode("utf-8", errors="replace")
            return response.status_code, excerpt

    async def _deliver(self, claimed: ClaimedDelivery) -> None:
        try:
            result = await self.attempt(claimed)
            outcome = await self.record(claimed, result)
        except Exception as error:
            # The lease ends and the delivery is tried again: at least once, never lost.
            log.warning(
                "webhooks.delivery_failed",
                delivery_id=str(claimed.delivery_id),
                error=repr(error)[:300],
            )
            return
        log.info(
            "webhooks.attempt",
            delivery_id=str(claimed.delivery_id),
            endpoint_id=str(claimed.endpoint_id),
            event_type=claimed.event_type,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=result.error,
            outcome=outcome,
        )

    async def record(self, claimed: ClaimedDelivery, result: AttemptResult) -> str | None:
        """Store the attempt and move the delivery on; None when the claim is no longer ours
        (the delivery was deleted with its endpoint, or its lease ended and another took it)."""
        async with self.db.write() as uow:
            query = select(WebhookDelivery).where(
                WebhookDelivery.id == claimed.delivery_id,
                WebhookDelivery.claim_id == claimed.claim_id,
            )
            if self.db.is_postgresql:
                query = query.with_for_update()
            delivery = await uow.session.scalar(query)
            if delivery is None or delivery.status != DeliveryStatus.PENDING:
                return None
            delivery.attempt_count += 1
            delivery.claim_id = None
            delivery.last_status_code = result.status_code
            delivery.last_error = result.error
            uow.session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    series=delivery.series,
                    number=delivery.attempt_count,
                    started_at=result.started_at,
                    duration_ms=result.duration_ms,
                    status_code=result.status_code,
                    response_excerpt=result.response_excerpt,
                    error=result.error,
                    succeeded=result.succeeded,
                )
            )
            now = utcnow()
            if result.succeeded:
                delivery.status = DeliveryStatus.SUCCEEDED
                delivery.next_attempt_at = None
                delivery.completed_at = now
            else:
                retry_at = self.policy.next_attempt(
                    delivery.attempt_count, delivery.series_started_at, now
                )
                if retry_at is None:
                    delivery.status = DeliveryStatus.FAILED
                    delivery.next_attempt_at = None
                    delivery.completed_at = now
                else:
                    delivery.next_attempt_at = retry_at
            return delivery.status
