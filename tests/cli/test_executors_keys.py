"""`nodeplane executors list` and `nodeplane keys create|list|revoke`."""

from typing import Any

from tests.cli.conftest import Cli
from tests.support.calls import wait_until
from tests.support.fleet import FakeExecutor, Org


def test_executors_list(cli: Cli, executor: FakeExecutor) -> None:
    listed = cli("executors", "list", "-o", "json")
    assert listed.code == 0, listed.stderr
    [only] = listed.json()
    assert (only["name"], only["kind"], only["status"], only["nodeCount"]) == (
        executor.name,
        "agent",
        "online",
        0,
    )
    assert only["capabilities"]["chains"][0]["chain"] == "litecoin"

    table = cli("executors", "list")
    assert (
        executor.name in table.stdout
        and "online" in table.stdout
        and "litecoin, ethereum" in table.stdout
    )


def test_no_executors_yet(cli: Cli) -> None:
    assert cli("executors", "list", "-o", "json").json() == []
    assert "no executors yet" in cli("executors", "list").stdout


def test_keys_create_use_list_revoke(cli: Cli, org: Org) -> None:
    created = cli("keys", "create", "ci", "--expires-at", "2999-01-01T00:00:00", "-o", "json")
    assert created.code == 0, created.stderr
    body = created.json()
    secret = body["secret"]
    assert body["apiKey"]["name"] == "ci" and body["apiKey"]["kind"] == "personal"
    assert body["apiKey"]["expiresAt"].startswith("2999-01-01T00:00:00")

    # A personal key works wherever a session does.
    as_key = cli("nodes", "list", "-o", "json", env={"NODEPLANE_TOKEN": secret})
    assert as_key.code == 0, as_key.stderr

    def listed_as_used() -> dict[str, Any] | None:
        [key] = [k for k in cli("keys", "list", "-o", "json").json() if k["name"] == "ci"]
        return key if key["lastUsedAt"] is not None else None

    # lastUsedAt is written within the server's flush interval (store/seen_times.py).
    ci = wait_until(listed_as_used, timeout=5, what="lastUsedAt written")
    assert ci["enabled"] is True
    assert secret not in cli("keys", "list").stdout

    revoked = cli("keys", "revoke", "ci", "-o", "json")
    assert revoked.code == 0, revoked.stderr
    assert revoked.json()["enabled"] is False
    assert "revoked" in cli("keys", "list").stdout

    refused = cli("nodes", "list", env={"NODEPLANE_TOKEN": secret})
    assert refused.code == 1
    assert "(unauthenticated)" in refused.stderr

    # Revoked keys no longer answer to their name, only to their id.
    assert cli("keys", "revoke", "ci").code == 1
    assert cli("keys", "revoke", ci["id"]).code == 0


def test_executor_key_shows_its_secret_once(cli: Cli) -> None:
    created = cli("keys", "create", "host-2", "--kind", "executor")
    assert created.code == 0, created.stderr
    assert "created executor key host-2" in created.stdout
    assert "shown only now" in created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("npx_")


def test_two_active_keys_with_one_name_need_the_id(cli: Cli) -> None:
    cli("keys", "create", "dup")
    cli("keys", "create", "dup")
    result = cli("keys", "revoke", "dup")
    assert result.code == 2
    assert "revoke by id" in result.stderr


def test_a_key_name_prints_as_typed(cli: Cli) -> None:
    # Rich would read "[/x]" as a closing tag and fail after the key was made, losing the secret.
    name = "ops [/x] [bold]"
    created = cli("keys", "create", name)
    assert created.code == 0, created.stderr
    assert f"created personal key {name}" in created.stdout
    assert created.stdout.strip().splitlines()[-1].startswith("npk_")
    assert name in cli("keys", "list").stdout
    revoked = cli("keys", "revoke", name)
    assert revoked.code == 0, revoked.stderr
    assert f"revoked personal key {name}" in revoked.stdout
