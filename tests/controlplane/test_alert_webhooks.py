"""Alerts and webhooks together (issue 10: "stopping a running node opens node_down; starting it
resolves it; a real HTTP receiver on loopback gets both deliveries with valid signatures").

`open_incident` and `resolve_incident` (services/alerts.py) call `enqueue_webhook_deliveries` right
after recording their event, in the same transaction."""

import json
from typing import Any

from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import deploy
from tests.support.fleet import FakeExecutor, Org, unique
from tests.support.webhook_receiver import webhook_receiver
from tests.support.webhooks import DELIVERIES, create_endpoint, verify, wait_delivery


def observed(status: ProcessStatus, height: int = 5) -> ObservedNodeState:
    return ObservedNodeState(
        revision=1, processes=[ObservedProcess(role="node", status=status, height=height)]
    )


def test_node_down_opened_and_resolved_reach_a_receiver_signed(
    org: Org, executor: FakeExecutor
) -> None:
    with webhook_receiver() as receiver:
        endpoint_id, secret = create_endpoint(org.owner, receiver.url)
        node = deploy(org.owner, executor, unique("hooked"))
        executor.sync({node["id"]: observed(ProcessStatus.RUNNING)})
        executor.sync({node["id"]: observed(ProcessStatus.STOPPED)})
        executor.sync({node["id"]: observed(ProcessStatus.RUNNING, height=6)})

        # Deliveries are not ordered (they are sent side by side and retried apart): the
        # event's id, which grows, puts them in order.
        requests = sorted(receiver.wait_for(2), key=lambda r: json.loads(r.body)["event"]["id"])
        bodies: list[dict[str, Any]] = []
        for request, kind in zip(requests, ("opened", "resolved"), strict=True):
            assert verify(secret, request.headers, request.body)
            body = json.loads(request.body)
            assert body["type"] == request.headers["nodeplane-event"]
            assert body["type"] == f"notification.alert.{kind}"
            payload = body["event"]["payload"]
            assert payload["rule"] == "node_down" and payload["subject"]["id"] == node["id"]
            assert payload["state"] == ("open" if kind == "opened" else "resolved")
            assert body["organization"]["id"] == org.id
            bodies.append(body)
        incident_ids = {b["event"]["payload"]["incidentId"] for b in bodies}
        assert len(incident_ids) == 1
        page = org.owner(DELIVERIES, {"e": endpoint_id, "first": 10, "after": None})
        delivered = page["webhookDeliveries"]["items"]
        assert {d["id"] for d in delivered} == {b["id"] for b in bodies}
        for delivery in delivered:
            wait_delivery(org.owner, delivery["id"], "SUCCEEDED")
