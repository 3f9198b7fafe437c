"""When the operator applies an object again: a new rendering, or a live object that lost a field."""

import copy
import uuid
from typing import Any

from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.chains.ethereum.adapter import ETHEREUM
from nodeplane.executor.operator.drift import APPLIED_HASH_ANNOTATION, covers, needs_apply, stamped
from nodeplane.executor.operator.probe import PLAN_FILE
from nodeplane.executor.operator.render import Owner, render_node
from nodeplane.executor.operator.resource import NodeResource
from nodeplane.protocol import NodeSpec

NODE = NodeResource(
    uuid.uuid4(),
    "ltc-1",
    1,
    NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
            "resources": {"memoryLimit": "4831838208"},
        }
    ),
)


def live_copy(body: dict[str, Any]) -> dict[str, Any]:
    """What the API server gives back: the body plus defaults, status and canonical quantities."""
    live = copy.deepcopy(body)
    live["metadata"].update(uid="u", resourceVersion="7", managedFields=[{"manager": "x"}])
    live["status"] = {"replicas": 1}
    spec = live["spec"]
    spec["podManagementPolicy"] = "OrderedReady"
    container = spec["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    container["resources"]["limits"]["memory"] = "4608Mi"
    return live


def sts_body() -> dict[str, Any]:
    rendered = render_node(NODE, LITECOIN, Owner("ltc-1", "uid-1"), "ns")
    return stamped(rendered.stateful_set)


def test_an_unchanged_object_is_not_applied_again() -> None:
    body = sts_body()
    assert not needs_apply(live_copy(body), body)


def test_a_missing_object_or_a_new_rendering_is_applied() -> None:
    body = sts_body()
    assert needs_apply(None, body)
    live = live_copy(body)
    changed = copy.deepcopy(body)
    del changed["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    changed["spec"]["replicas"] = 0
    assert needs_apply(live, stamped(changed))
    # Even a rendering that only drops a field: the hash differs, so the apply removes it.
    fewer = copy.deepcopy(body)
    del fewer["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    del fewer["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert covers(live["spec"], stamped(fewer)["spec"])  # the live object holds it all...
    assert needs_apply(live, stamped(fewer))


def test_a_field_edited_by_hand_is_applied_again() -> None:
    body = sts_body()
    live = live_copy(body)
    live["spec"]["replicas"] = 3
    assert needs_apply(live, body)
    live = live_copy(body)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert needs_apply(live, body)
    live = live_copy(body)
    del live["metadata"]["labels"]["nodeplane.dev/node"]
    assert needs_apply(live, body)


def test_named_lists_match_by_name_and_order() -> None:
    want = [{"name": "a", "x": 1}, {"name": "b"}]
    assert covers([{"name": "a", "x": 1, "y": 2}, {"name": "sidecar"}, {"name": "b"}], want)
    assert not covers([{"name": "b"}, {"name": "a", "x": 1}], want)
    assert not covers([{"name": "a", "x": 2}, {"name": "b"}], want)
    assert covers(["-a", "-b"], ["-a", "-b"]) and not covers(["-a"], ["-a", "-b"])
    assert covers({"n": 1.0}, {"n": 1}) and not covers({"n": True}, {"n": 1})


def test_an_empty_config_map_the_server_gave_back_without_data_is_not_applied_again() -> None:
    """An Ethereum node has no config files: its ConfigMap rendered `data: {}`, which the API
    server drops; every resync re-applied it (and bumped it) before. (Every ConfigMap now holds
    the probe plan, so the map is emptied here to keep the rule tested.)"""
    ethereum = NodeResource(
        uuid.uuid4(),
        "eth-1",
        1,
        NodeSpec.model_validate(
            {
                "chain": "ethereum",
                "network": "sepolia",
                "clients": {
                    "execution": {"name": "geth", "version": "1.14.12"},
                    "consensus": {"name": "lighthouse", "version": "5.3.0"},
                },
            }
        ),
    )
    rendered = render_node(ethereum, ETHEREUM, Owner("eth-1", "uid-1"), "ns").config_map
    assert set(rendered["data"]) == {PLAN_FILE}
    body = stamped({**rendered, "data": {}})
    live = copy.deepcopy(body)
    del live["data"]
    live["metadata"].update(uid="u", resourceVersion="7")
    assert not needs_apply(live, body)
    # A map the rendering fills is still missed when the live object lacks it.
    assert not covers({"metadata": {}}, {"metadata": {}, "data": {"a": "1"}})
