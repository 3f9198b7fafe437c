"""Signed webhooks against real servers on SQLite and PostgreSQL and real HTTP receivers on
loopback: the signature verifies with the documented recipe, failures are retried with backoff,
redelivery starts a new series, a receiver that never answers slows neither the API nor other
endpoints, plain HTTP off loopback is refused, and roles and organizations are respected."""

import asyncio
import itertools
import json
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from nodeplane.controlplane.services.actors import Actor
from nodeplane.controlplane.services.events import record_event
from nodeplane.controlplane.services.webhooks import enqueue_webhook_deliveries, prune_deliveries
from nodeplane.controlplane.store import models
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.models import WebhookDelivery
from nodeplane.protocol import EventLevel
from tests.conftest import new_database_url
from tests.support.db import cells_containing, connect
from tests.support.fleet import Org, make_org
from tests.support.gql import Client, GraphQLError
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerProcess,
    admin_token,
    create_pg_database,
    drop_pg_database,
)
from tests.support.webhook_receiver import (
    ReceiverCertificates,
    make_certificates,
    webhook_receiver,
)
from tests.support.webhooks import (
    CREATE,
    DELETE,
    DELIVERIES,
    DELIVERY,
    ENDPOINT,
    ENDPOINTS,
    REDELIVER,
    ROTATE,
    TEST,
    UPDATE,
    create_endpoint,
    verify,
    wait_delivery,
)

pytestmark = pytest.mark.server

# Short enough for retries to happen in seconds; the schedule's shape is the real one.
BACKOFF_BASE = 0.5
ATTEMPT_TIMEOUT = 3.0
RETRY_WINDOW = 4.0
SERVER_ENV = {
    "NODEPLANE_WEBHOOK_BACKOFF_BASE": str(BACKOFF_BASE),
    "NODEPLANE_WEBHOOK_RETRY_WINDOW": str(RETRY_WINDOW),
    "NODEPLANE_WEBHOOK_POLL_INTERVAL": "0.2",
    "NODEPLANE_WEBHOOK_TIMEOUT": str(ATTEMPT_TIMEOUT),
}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> ReceiverCertificates:
    """A CA of the tests' own, and a certificate it signed for `localhost`."""
    return make_certificates(tmp_path_factory.mktemp("webhook-tls"))


@pytest.fixture(scope="module")
def webhook_server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, certificates: ReceiverCertificates
) -> Iterator[ServerProcess]:
    """A control plane whose webhook retries come in seconds, trusting the tests' CA (as a
    control plane trusts an organization's own CA: through OpenSSL's SSL_CERT_FILE)."""
    workdir = tmp_path_factory.mktemp(f"webhooks-{backend}")
    url = new_database_url(backend, workdir)
    server = ServerProcess(
        database_url=url,
        workdir=workdir,
        extra_env={**SERVER_ENV, "SSL_CERT_FILE": str(certificates.ca)},
    )
    server.start()
    yield server
    server.stop()
    if backend == "postgresql":
        drop_pg_database(url)


@pytest.fixture(scope="module")
def admin(webhook_server: ServerProcess) -> Client:
    data = Client(webhook_server.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )
    return Client(webhook_server.url, data["login"]["token"])


@pytest.fixture
def wh_org(webhook_server: ServerProcess, admin: Client) -> Org:
    return make_org(webhook_server.url, admin)


def test_a_test_delivery_arrives_signed_and_redeliver_sends_it_again(
    wh_org: Org, webhook_server: ServerProcess
) -> None:
    with webhook_receiver() as receiver:
        endpoint_id, secret = create_endpoint(
            wh_org.owner, receiver.url, description="on-call relay"
        )
        assert secret.startswith("whsec_") and len(secret) > 40
        delivery = wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]
        assert (delivery["eventType"], delivery["status"]) == ("webhook.test", "PENDING")
        (request,) = receiver.wait_for(1)
        assert request.path == "/hook"
        assert verify(secret, request.headers, request.body)
        assert not verify(secret + "x", request.headers, request.body)
        assert not verify(secret, request.headers, request.body + b" ")
        body = json.loads(request.body)
        assert request.headers["nodeplane-delivery"] == body["id"] == delivery["id"]
        assert request.headers["nodeplane-event"] == body["type"] == "webhook.test"
        assert request.headers["content-type"] == "application/json"
        assert body["organization"] == {"id": wh_org.id, "name": wh_org.name}
        assert body["event"]["type"] == "webhook.test" and body["event"]["payload"]["test"]
        assert body["createdAt"]

        done = wait_delivery(wh_org.owner, delivery["id"], "SUCCEEDED")
        assert done["attemptCount"] == 1 and done["lastStatusCode"] == 200
        (attempt,) = done["attempts"]
        assert attempt["succeeded"] and attempt["statusCode"] == 200 and attempt["error"] is None
        assert json.loads(attempt["responseExcerpt"]) == {"ok": True, "status": 200}
        assert done["body"] == body

        again = wh_org.owner(REDELIVER, {"id": delivery["id"]})["redeliverWebhook"]
        assert (again["status"], again["series"]) == ("PENDING", 2)
        first, second = receiver.wait_for(2)
        assert second.headers["nodeplane-delivery"] == delivery["id"]
        assert second.body == first.body and verify(secret, second.headers, second.body)
        done = wait_delivery(wh_org.owner, delivery["id"], "SUCCEEDED")
        assert [(a["series"], a["number"]) for a in done["attempts"]] == [(1, 1), (2, 1)]

        # A rotated secret signs from then on; the old one no longer verifies.
        rotated = wh_org.owner(ROTATE, {"id": endpoint_id})["rotateWebhookSecret"]
        assert rotated["secret"] != secret
        assert rotated["endpoint"]["secretPrefix"] == rotated["secret"][:12]
        wh_org.owner(REDELIVER, {"id": delivery["id"]})
        third = receiver.wait_for(3)[2]
        assert verify(rotated["secret"], third.headers, third.body)
        assert not verify(secret, third.headers, third.body)

    # The secret is stored where signing needs it and nowhere else: not in the events feed, a
    # delivery's body or an attempt, and never in the server's log.
    new_secret = rotated["secret"]
    assert cells_containing(webhook_server.database_url, new_secret) == [
        ("webhook_endpoints", "secret")
    ]
    assert cells_containing(webhook_server.database_url, secret) == []
    for log in webhook_server.workdir.glob("server-*.log"):
        text = log.read_text(errors="replace")
        assert new_secret not in text and secret not in text


def test_an_https_receiver_is_verified_under_the_name_in_its_url(
    wh_org: Org, certificates: ReceiverCertificates
) -> None:
    with webhook_receiver(tls=certificates) as receiver:
        assert receiver.url.startswith("https://localhost:")
        endpoint_id, secret = create_endpoint(wh_org.owner, receiver.url)
        sent = wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]["id"]
        (request,) = receiver.wait_for(1)
        assert verify(secret, request.headers, request.body)
        port = receiver.url.split(":")[2].split("/")[0]
        assert request.headers["host"] == f"localhost:{port}"
        wait_delivery(wh_org.owner, sent, "SUCCEEDED")

        # The same receiver by its address: the certificate names localhost, not 127.0.0.1, so
        # the attempt fails in the handshake and nothing reaches the receiver.
        by_address, _ = create_endpoint(wh_org.owner, f"https://127.0.0.1:{port}/hook")
        refused = wh_org.owner(TEST, {"id": by_address})["testWebhook"]["id"]
        deadline = time.monotonic() + 10
        attempts: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not attempts:
            attempts = wh_org.owner(DELIVERY, {"id": refused})["webhookDelivery"]["attempts"]
            time.sleep(0.1)
        assert attempts and "CERTIFICATE_VERIFY_FAILED" in attempts[0]["error"], attempts
        assert attempts[0]["statusCode"] is None
        assert len(receiver.requests()) == 1


def test_a_pending_delivery_cannot_be_redelivered(wh_org: Org) -> None:
    with webhook_receiver(hang=True) as receiver:
        endpoint_id, _ = create_endpoint(wh_org.owner, receiver.url)
        delivery = wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]
        receiver.wait_for(1)
        with pytest.raises(GraphQLError) as refused:
            wh_org.owner(REDELIVER, {"id": delivery["id"]})
        assert refused.value.code == "invalid_action"
        # Disabling the endpoint ends what is pending as failed.
        wh_org.owner(UPDATE, {"input": {"id": endpoint_id, "enabled": False}})
        failed = wait_delivery(wh_org.owner, delivery["id"], "FAILED", timeout=5)
        assert failed["lastError"] == "endpoint disabled"


def test_a_receiver_failing_twice_gets_the_delivery_on_the_third_try(wh_org: Org) -> None:
    with webhook_receiver(statuses=[500, 503, 200]) as receiver:
        endpoint_id, secret = create_endpoint(wh_org.owner, receiver.url)
        delivery = wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]
        requests = receiver.wait_for(3)
        assert {r.headers["nodeplane-delivery"] for r in requests} == {delivery["id"]}
        assert all(verify(secret, r.headers, r.body) for r in requests)
        # Backoff: at least half the base after the first failure, half twice it after the second.
        gaps = [b.at - a.at for a, b in itertools.pairwise(requests)]
        assert gaps[0] >= BACKOFF_BASE * 0.5 - 0.05
        assert gaps[1] >= BACKOFF_BASE - 0.05
        done = wait_delivery(wh_org.owner, delivery["id"], "SUCCEEDED")
        assert [(a["number"], a["statusCode"], a["succeeded"]) for a in done["attempts"]] == [
            (1, 500, False),
            (2, 503, False),
            (3, 200, True),
        ]
        assert done["attempts"][0]["error"] == "the receiver answered 500"
        assert json.loads(done["attempts"][1]["responseExcerpt"])["status"] == 503
        time.sleep(1.0)
        assert len(receiver.requests()) == 3  # nothing more once it succeeded


def test_a_receiver_failing_past_the_window_fails_the_delivery_and_redeliver_retries_it(
    wh_org: Org,
) -> None:
    with webhook_receiver(statuses=[503]) as receiver:
        endpoint_id, secret = create_endpoint(wh_org.owner, receiver.url)
        delivery = wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]
        failed = wait_delivery(wh_org.owner, delivery["id"], "FAILED", timeout=RETRY_WINDOW + 10)
        tried = len(failed["attempts"])
        # 0.25-0.5 s, then 0.5-1 s, 1-2 s, 2-4 s: three to five attempts fit in the window.
        assert 3 <= tried <= 5, failed["attempts"]
        assert all(a["statusCode"] == 503 and not a["succeeded"] for a in failed["attempts"])
        assert failed["lastStatusCode"] == 503
        time.sleep(1.0)
        assert len(receiver.requests()) == tried  # no attempt after the delivery failed

        receiver.statuses = [200]
        again = wh_org.owner(REDELIVER, {"id": delivery["id"]})["redeliverWebhook"]
        assert (again["status"], again["series"]) == ("PENDING", 2)
        done = wait_delivery(wh_org.owner, delivery["id"], "SUCCEEDED")
        assert [(a["series"], a["number"]) for a in done["attempts"]][-1] == (2, 1)
        last = receiver.requests()[-1]
        assert last.headers["nodeplane-delivery"] == delivery["id"]
        assert verify(secret, last.headers, last.body)


def test_a_receiver_that_never_answers_slows_neither_the_api_nor_other_endpoints(
    wh_org: Org,
) -> None:
    with webhook_receiver(hang=True) as dead, webhook_receiver() as alive:
        dead_id, _ = create_endpoint(wh_org.owner, dead.url)
        alive_id, _ = create_endpoint(wh_org.owner, alive.url)
        stuck = [wh_org.owner(TEST, {"id": dead_id})["testWebhook"]["id"] for _ in range(6)]
        dead.wait_for(2)  # the dead endpoint's in-flight limit is taken

        timings = []
        for _ in range(8):
            started = time.monotonic()
            wh_org.owner(ENDPOINTS)
            wh_org.owner("{ me { email } }")
            timings.append(time.monotonic() - started)
        assert max(timings) < 2.0, timings
        assert statistics.median(timings) < 0.5, timings

        started = time.monotonic()
        sent = wh_org.owner(TEST, {"id": alive_id})["testWebhook"]["id"]
        (request,) = alive.wait_for(1, timeout=ATTEMPT_TIMEOUT)
        assert request.headers["nodeplane-delivery"] == sent
        assert time.monotonic() - started < ATTEMPT_TIMEOUT
        wait_delivery(wh_org.owner, sent, "SUCCEEDED", timeout=ATTEMPT_TIMEOUT)

        # The dead receiver's attempts end at the timeout and are retried, not lost.
        deadline = time.monotonic() + 4 * ATTEMPT_TIMEOUT
        attempts: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not attempts:
            attempts = wh_org.owner(DELIVERY, {"id": stuck[0]})["webhookDelivery"]["attempts"]
            time.sleep(0.2)
        assert (
            attempts and attempts[0]["error"] == f"no complete answer within {ATTEMPT_TIMEOUT:g} s"
        )
        assert attempts[0]["statusCode"] is None
        assert (
            ATTEMPT_TIMEOUT * 1000 * 0.9
            <= attempts[0]["durationMs"]
            < ATTEMPT_TIMEOUT * 1000 + 2000
        )


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://example.com/hook", "insecure_webhook_url"),
        ("http://10.0.0.8/hook", "insecure_webhook_url"),
        ("http://localhost.example.com/hook", "insecure_webhook_url"),
        ("http://192.168.1.1:8080/", "insecure_webhook_url"),
        ("https://169.254.169.254/latest/meta-data", "webhook_address_refused"),
        ("https://[fe80::1]/hook", "webhook_address_refused"),
        ("https://0.0.0.0/hook", "webhook_address_refused"),
        ("https://user:pw@example.com/hook", "invalid_input"),
        ("ftp://example.com/hook", "invalid_input"),
        ("https:///nohost", "invalid_input"),
        ("https://example.com/hook#frag", "invalid_input"),
        ("https://exa mple.com/", "invalid_input"),
        ("https://example.com:99999/", "invalid_input"),
        ("https://" + "a" * 2100 + ".com/", "invalid_input"),
    ],
)
def test_unsafe_or_malformed_urls_are_refused_with_typed_errors(
    wh_org: Org, url: str, code: str
) -> None:
    with pytest.raises(GraphQLError) as refused:
        wh_org.owner(CREATE, {"input": {"url": url}})
    assert refused.value.code == code
    assert refused.value.extensions.get("field") == "url"


def test_loopback_http_and_https_urls_are_accepted_and_updates_are_checked_too(
    wh_org: Org,
) -> None:
    for url in (
        "http://127.0.0.1:9/x",
        "http://localhost:8080/relay",
        "http://[::1]:9/",
        "https://hooks.example.com/nodeplane?team=ops",
    ):
        endpoint_id, _ = create_endpoint(wh_org.owner, url)
        with pytest.raises(GraphQLError) as refused:
            wh_org.owner(UPDATE, {"input": {"id": endpoint_id, "url": "http://hooks.example.com/"}})
        assert refused.value.code == "insecure_webhook_url"
    # `localhost` may resolve to ::1 first: the attempt goes on to 127.0.0.1, where this listens.
    with webhook_receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        endpoint_id, secret = create_endpoint(wh_org.owner, f"http://localhost:{port}/hook")
        sent = wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]["id"]
        (request,) = receiver.wait_for(1)
        assert verify(secret, request.headers, request.body)
        assert request.headers["host"] == f"localhost:{port}"
        wait_delivery(wh_org.owner, sent, "SUCCEEDED")
    with pytest.raises(GraphQLError) as refused:
        wh_org.owner(
            CREATE, {"input": {"url": "https://a.example/", "eventTypes": ["node.deleted"]}}
        )
    assert (refused.value.code, refused.value.extensions["field"]) == (
        "invalid_input",
        "eventTypes",
    )


def test_members_read_without_the_secret_and_only_owners_and_admins_change(
    wh_org: Org, admin: Client
) -> None:
    member = wh_org.add_member("MEMBER")
    org_admin = wh_org.add_member("ADMIN")
    endpoint_id, _ = create_endpoint(org_admin, "https://hooks.example.com/a")
    delivery_id = org_admin(TEST, {"id": endpoint_id})["testWebhook"]["id"]

    (seen,) = member(ENDPOINTS)["webhookEndpoints"]
    assert seen["id"] == endpoint_id and seen["url"] == "https://hooks.example.com/a"
    assert member(DELIVERY, {"id": delivery_id})["webhookDelivery"]["id"] == delivery_id
    with pytest.raises(GraphQLError) as no_field:
        member("{ webhookEndpoints { secret } }")
    assert no_field.value.code == "bad_request"
    for document, variables in [
        (CREATE, {"input": {"url": "https://hooks.example.com/b"}}),
        (UPDATE, {"input": {"id": endpoint_id, "enabled": False}}),
        (ROTATE, {"id": endpoint_id}),
        (TEST, {"id": endpoint_id}),
        (REDELIVER, {"id": delivery_id}),
        (DELETE, {"id": endpoint_id}),
    ]:
        with pytest.raises(GraphQLError) as refused:
            member(document, variables)
        assert refused.value.code == "forbidden", document

    # Another organization sees nothing of it and can change nothing.
    other = make_org(wh_org.base_url, admin)
    assert other.owner(ENDPOINTS)["webhookEndpoints"] == []
    assert other.owner(ENDPOINT, {"id": endpoint_id})["webhookEndpoint"] is None
    assert other.owner(DELIVERY, {"id": delivery_id})["webhookDelivery"] is None
    page = other.owner(DELIVERIES, {"e": endpoint_id, "first": 10, "after": None})
    assert page["webhookDeliveries"]["items"] == []
    for document, variables in [
        (UPDATE, {"input": {"id": endpoint_id, "enabled": False}}),
        (ROTATE, {"id": endpoint_id}),
        (TEST, {"id": endpoint_id}),
        (REDELIVER, {"id": delivery_id}),
        (DELETE, {"id": endpoint_id}),
    ]:
        with pytest.raises(GraphQLError) as hidden:
            other.owner(document, variables)
        assert hidden.value.code == "not_found", document
    # An executor key reads no webhooks.
    key = Client(wh_org.base_url, wh_org.executor_key())
    with pytest.raises(GraphQLError) as executor_refused:
        key(ENDPOINTS)
    assert executor_refused.value.code == "forbidden"

    assert org_admin(DELETE, {"id": endpoint_id})["deleteWebhookEndpoint"] is True
    assert wh_org.owner(DELIVERY, {"id": delivery_id})["webhookDelivery"] is None


def test_deliveries_page_newest_first(wh_org: Org) -> None:
    endpoint_id, _ = create_endpoint(wh_org.owner, "https://hooks.example.com/paged")
    made = [wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]["id"] for _ in range(3)]
    first = wh_org.owner(DELIVERIES, {"e": endpoint_id, "first": 2, "after": None})
    page = first["webhookDeliveries"]
    assert [d["id"] for d in page["items"]] == made[::-1][:2]
    assert page["pageInfo"]["hasNextPage"]
    rest = wh_org.owner(
        DELIVERIES, {"e": endpoint_id, "first": 2, "after": page["pageInfo"]["endCursor"]}
    )["webhookDeliveries"]
    assert [d["id"] for d in rest["items"]] == [made[0]]
    assert not rest["pageInfo"]["hasNextPage"]
    garbage = wh_org.owner(DELIVERIES, {"e": endpoint_id, "first": 2, "after": "nonsense"})
    assert garbage["webhookDeliveries"]["items"] == []


def test_alert_events_enqueued_in_the_callers_transaction_reach_subscribed_endpoints(
    wh_org: Org, webhook_server: ServerProcess
) -> None:
    """The call the alert code makes: record the notification event and enqueue it, in one
    transaction; the server's dispatcher sends it to the endpoints subscribed to its type."""
    with webhook_receiver() as both, webhook_receiver() as resolved_only, webhook_receiver() as off:
        both_id, both_secret = create_endpoint(wh_org.owner, both.url)
        create_endpoint(wh_org.owner, resolved_only.url, eventTypes=["notification.alert.resolved"])
        off_id, _ = create_endpoint(wh_org.owner, off.url)
        wh_org.owner(UPDATE, {"input": {"id": off_id, "enabled": False}})

        async def open_incident() -> list[str]:
            db = Database(webhook_server.database_url)
            try:
                async with db.write() as uow:
                    event = await record_event(
                        uow.session,
                        organization_id=uuid.UUID(wh_org.id),
                        type="notification.alert.opened",
                        message="node_down opened for node n1",
                        actor=Actor("system", None, "alerts"),
                        level=EventLevel.ERROR,
                        payload={"rule": "node_down", "subject": "n1"},
                    )
                    queued = await enqueue_webhook_deliveries(
                        uow.session, organization_id=uuid.UUID(wh_org.id), event=event
                    )
                return [str(d.id) for d in queued]
            finally:
                await db.close()

        (queued,) = asyncio.run(open_incident())
        (request,) = both.wait_for(1)
        assert verify(both_secret, request.headers, request.body)
        body = json.loads(request.body)
        assert body["id"] == queued and body["type"] == "notification.alert.opened"
        assert body["event"]["payload"] == {"rule": "node_down", "subject": "n1"}
        assert body["event"]["level"] == "error"
        wait_delivery(wh_org.owner, queued, "SUCCEEDED")
        time.sleep(0.6)
        assert resolved_only.requests() == [] and off.requests() == []
        page = wh_org.owner(DELIVERIES, {"e": both_id, "first": 5, "after": None})
        assert [d["eventType"] for d in page["webhookDeliveries"]["items"]] == [
            "notification.alert.opened"
        ]


def test_two_workers_on_postgresql_send_each_delivery_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Both worker processes claim from the one outbox (FOR UPDATE SKIP LOCKED and a lease):
    every delivery reaches the receiver once, none twice."""
    url = create_pg_database()
    server = ServerProcess(
        database_url=url,
        workdir=tmp_path_factory.mktemp("webhook-workers"),
        extra_env={**SERVER_ENV, "NODEPLANE_WEBHOOK_POLL_INTERVAL": "0.05"},
        extra_args=["--workers", "2"],
    )
    server.start()
    try:
        owner = make_org(server.url, Client(server.url, admin_token(server.url))).owner
        with webhook_receiver() as receiver:
            endpoints = [create_endpoint(owner, receiver.url)[0] for _ in range(3)]
            sent = [owner(TEST, {"id": endpoints[i % 3]})["testWebhook"]["id"] for i in range(30)]
            receiver.wait_for(30)
            time.sleep(1.5)  # room for a duplicate to show up
            got = [r.headers["nodeplane-delivery"] for r in receiver.requests()]
            assert sorted(got) == sorted(sent)
            for delivery_id in sent:
                done = wait_delivery(owner, delivery_id, "SUCCEEDED")
                assert done["attemptCount"] == 1 and len(done["attempts"]) == 1
    finally:
        server.stop()
        drop_pg_database(url)


def test_finished_deliveries_past_their_retention_are_pruned_with_their_attempts(
    wh_org: Org, webhook_server: ServerProcess
) -> None:
    with webhook_receiver() as receiver:
        endpoint_id, _ = create_endpoint(wh_org.owner, receiver.url)
        old, recent = (wh_org.owner(TEST, {"id": endpoint_id})["testWebhook"]["id"] for _ in "ab")
        for delivery_id in (old, recent):
            wait_delivery(wh_org.owner, delivery_id, "SUCCEEDED")
    with webhook_receiver(hang=True) as hanging:
        stuck_endpoint, _ = create_endpoint(wh_org.owner, hanging.url)
        stuck = wh_org.owner(TEST, {"id": stuck_endpoint})["testWebhook"]["id"]
        hanging.wait_for(1)

        async def age_and_prune() -> int:
            db = Database(webhook_server.database_url)
            try:
                async with db.write() as uow:
                    # A month old: one finished delivery, and the pending one (still trying).
                    long_ago = datetime.now(UTC) - timedelta(days=31)
                    await uow.session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id == uuid.UUID(old))
                        .values(completed_at=long_ago, created_at=long_ago)
                    )
                    await uow.session.execute(
                        update(WebhookDelivery)
                        .where(WebhookDelivery.id == uuid.UUID(stuck))
                        .values(created_at=long_ago, series_started_at=long_ago)
                    )
                async with db.write() as uow:
                    return await prune_deliveries(uow.session, older_than_days=30)
            finally:
                await db.close()

        assert asyncio.run(age_and_prune()) >= 1
        assert wh_org.owner(DELIVERY, {"id": old})["webhookDelivery"] is None
        assert wh_org.owner(DELIVERY, {"id": recent})["webhookDelivery"]["status"] == "SUCCEEDED"
        assert wh_org.owner(DELIVERY, {"id": stuck})["webhookDelivery"]["status"] == "PENDING"
        with connect(webhook_server.database_url) as conn:
            attempts = models.WebhookAttempt.__table__
            left = conn.execute(
                select(attempts.c.id).where(attempts.c.delivery_id == uuid.UUID(old))
            ).all()
        assert left == []


def test_a_server_stops_promptly_while_a_receiver_hangs(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("webhook-stop")
    server = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}",
        workdir=workdir,
        extra_env={**SERVER_ENV, "NODEPLANE_WEBHOOK_TIMEOUT": "60"},
    )
    server.start()
    try:
        owner = make_org(server.url, Client(server.url, admin_token(server.url))).owner
        with webhook_receiver(hang=True) as receiver:
            endpoint_id, _ = create_endpoint(owner, receiver.url)
            owner(TEST, {"id": endpoint_id})
            receiver.wait_for(1)
            process = server.process
            assert process is not None
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 10
            # Stopped by its own shutdown (uvicorn re-raises SIGTERM afterwards), not killed.
            assert process.returncode == -signal.SIGTERM
            log = "".join(p.read_text() for p in workdir.glob("server-*.log"))
            assert "Application shutdown complete." in log
    finally:
        server.stop()
