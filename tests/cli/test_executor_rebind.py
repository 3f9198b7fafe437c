"""`nodeplane keys create --executor` and `nodeplane executors rebind`: giving a host a new key.

Checked by what a host with each key can then do, over the real executor protocol: which key
syncs as the executor, which is refused, and which was revoked.
"""

import uuid
from pathlib import Path
from typing import Any

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from tests.cli.conftest import Cli
from tests.support.calls import all_events
from tests.support.fleet import FakeExecutor, Org


def refusal(host: FakeExecutor) -> str:
    """The code the control plane refuses `host`'s sync with."""
    with pytest.raises(ControlPlaneError) as refused:
        host.sync()
    return refused.value.code


def executor_key(cli: Cli, name: str, *extra: str) -> dict[str, Any]:
    """`keys create NAME --kind executor ...` as JSON: {apiKey, secret}."""
    created = cli("keys", "create", name, "--kind", "executor", *extra, "-o", "json")
    assert created.code == 0, created.stderr
    body: dict[str, Any] = created.json()
    return body


def key_ids_of(org: Org, executor: FakeExecutor) -> list[str]:
    """Ids of the enabled keys bound to `executor`, as the API lists them."""
    keys = org.owner("{ apiKeys { id enabled executorId createdAt } }")["apiKeys"]
    return [
        k["id"]
        for k in sorted(keys, key=lambda k: k["createdAt"])
        if k["executorId"] == executor.id and k["enabled"]
    ]


def test_a_key_made_for_an_executor_syncs_as_it(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    body = executor_key(cli, "rotated", "--executor", executor.name)
    key = body["apiKey"]
    assert (key["kind"], key["executorId"], key["enabled"]) == ("executor", executor.id, True)

    rotated = FakeExecutor(org.base_url, body["secret"], name=executor.name)
    assert rotated.sync()["executor"]["id"] == executor.id
    # Rotation: the old key works until someone revokes it.
    assert executor.sync()["executor"]["id"] == executor.id
    assert key_ids_of(org, executor)[-1] == key["id"]
    # The bound key speaks for that executor only...
    assert refusal(FakeExecutor(org.base_url, body["secret"])) == "forbidden"
    # ...and a fresh key cannot speak for it at all.
    fresh = executor_key(cli, "fresh")
    assert fresh["apiKey"]["executorId"] is None
    assert refusal(FakeExecutor(org.base_url, fresh["secret"], name=executor.name)) == "forbidden"

    by_id = cli("keys", "create", "by-id", "--kind", "executor", "--executor", executor.id)
    assert by_id.code == 0, by_id.stderr
    assert f"created executor key by-id for executor {executor.name}" in by_id.stdout
    [key_id] = [
        k["id"] for k in org.owner("{ apiKeys { id name } }")["apiKeys"] if k["name"] == "by-id"
    ]
    assert f"`nodeplane executors rebind {executor.name} --key {key_id}` revokes them all" in (
        by_id.said
    )
    secret = by_id.stdout.strip().splitlines()[-1]
    assert FakeExecutor(org.base_url, secret, name=executor.name).sync()["executor"]["id"] == (
        executor.id
    )


def test_a_key_for_an_executor_refusals(
    cli: Cli, org: Org, executor: FakeExecutor, tmp_path: Path
) -> None:
    unknown = cli("keys", "create", "k", "--kind", "executor", "--executor", "elsewhere")
    assert unknown.code == 1
    assert "executor 'elsewhere' not found" in unknown.said and "(not_found)" in unknown.said

    personal = cli("keys", "create", "k", "--executor", executor.name)
    assert personal.code == 2 and "--kind executor" in personal.stderr

    member = Cli(org.base_url, org.add_member("MEMBER").token, tmp_path / "member")
    forbidden = member(
        "keys", "create", "k", "--kind", "executor", "--executor", executor.name, "-o", "json"
    )
    assert forbidden.code == 1 and forbidden.stdout == ""
    assert "(forbidden)" in forbidden.stderr
    assert len(key_ids_of(org, executor)) == 1


def test_rebind_moves_the_executor_to_the_new_key(
    cli: Cli, org: Org, executor: FakeExecutor
) -> None:
    [old_key] = key_ids_of(org, executor)
    rebuilt = executor_key(cli, "rebuilt-host")
    newcomer = FakeExecutor(org.base_url, rebuilt["secret"], name=executor.name)
    assert refusal(newcomer) == "forbidden"

    declined = cli("executors", "rebind", executor.name, "--key", "rebuilt-host", input="n\n")
    assert declined.code == 1
    assert f"Bind executor {executor.name} to key 'rebuilt-host'?" in declined.said
    assert f"These keys are revoked at once: 'executor' ({old_key})." in declined.said
    assert "not rebound" in declined.said
    assert executor.sync()["executor"]["id"] == executor.id

    rebound = cli(
        "executors",
        "rebind",
        executor.name,
        "--key",
        rebuilt["apiKey"]["id"],
        "--yes",
        "-o",
        "json",
    )
    assert rebound.code == 0, rebound.stderr
    body = rebound.json()
    assert (body["executor"]["id"], body["apiKey"]["id"]) == (executor.id, rebuilt["apiKey"]["id"])
    assert body["apiKey"]["executorId"] == executor.id
    assert [(k["id"], k["enabled"]) for k in body["revokedKeys"]] == [(old_key, False)]

    # The new key is the executor now; the old one is refused outright.
    assert newcomer.sync()["executor"]["id"] == executor.id
    assert refusal(executor) == "unauthenticated"
    assert key_ids_of(org, executor) == [rebuilt["apiKey"]["id"]]
    [event] = all_events(org.owner, type="executor.rebound")
    assert event["payload"]["revokedKeyIds"] == [old_key]

    # Rebinding the key it already has revokes nothing, and says so.
    again = cli("executors", "rebind", executor.id, "--key", "rebuilt-host", input="y\n")
    assert again.code == 0, again.stderr
    assert "Any other key bound to it is revoked at once." in again.said
    assert f"bound executor {executor.name} to key rebuilt-host" in again.stdout
    assert "no other key was bound to it" in again.stdout

    # The table form names what it revoked.
    third = executor_key(cli, "third-host")
    table = cli("executors", "rebind", executor.name, "--key", "third-host", "--yes")
    assert table.code == 0, table.stderr
    assert f"revoked key rebuilt-host ({rebuilt['apiKey']['id']})" in table.stdout
    assert refusal(newcomer) == "unauthenticated"
    assert FakeExecutor(org.base_url, third["secret"], name=executor.name).sync()["executor"][
        "id"
    ] == (executor.id)


def test_rebind_refusals(cli: Cli, org: Org, executor: FakeExecutor, tmp_path: Path) -> None:
    spare = executor_key(cli, "spare")["apiKey"]["id"]
    personal = cli("keys", "create", "mine", "-o", "json").json()["apiKey"]["id"]
    member = Cli(org.base_url, org.add_member("MEMBER").token, tmp_path / "member")
    before = key_ids_of(org, executor)

    for runner, args, code in (
        (cli, ("nowhere", "--key", spare), "not_found"),
        (cli, (str(uuid.uuid4()), "--key", spare), "not_found"),
        (cli, (executor.name, "--key", str(uuid.uuid4())), "not_found"),
        (cli, (executor.name, "--key", "no-such-key"), "not_found"),
        (cli, (executor.name, "--key", personal), "invalid_input"),
        (member, (executor.name, "--key", spare), "forbidden"),
    ):
        result = runner("executors", "rebind", *args, "--yes", "-o", "json")
        assert result.code == 1, args
        assert result.stdout == "" and f"({code})" in result.stderr, (args, result.stderr)
    assert key_ids_of(org, executor) == before
    assert executor.sync()["executor"]["id"] == executor.id
    assert cli("executors", "rebind", executor.name, "--yes").code == 2  # --key is required
