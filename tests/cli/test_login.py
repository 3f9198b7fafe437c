"""`nodeplane login` and how commands choose their URL and token."""

import json
import stat

from tests.cli.conftest import Cli
from tests.support.fleet import Org

OWNER_PASSWORD = "owner-password-1"  # what tests.support.fleet.make_org sets


def owner_email(org: Org) -> str:
    email: str = org.owner("{ me { email } }")["me"]["email"]
    return email


def test_login_with_password_stdin_stores_a_private_session(bare_cli: Cli, org: Org) -> None:
    result = bare_cli(
        "login",
        "--url",
        org.base_url + "/",
        "--email",
        owner_email(org),
        "--password-stdin",
        input=OWNER_PASSWORD + "\n",
    )
    assert result.code == 0, result.stderr
    assert "logged in" in result.stdout

    path = bare_cli.config_home / "nodeplane" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["url"] == org.base_url  # normalized: no trailing slash
    assert stored["token"].startswith("nps_")
    assert stored["organization"] == org.name

    listed = bare_cli("nodes", "list", "-o", "json")
    assert listed.code == 0, listed.stderr
    assert listed.json() == []


def test_login_prompts_for_the_password(bare_cli: Cli, org: Org) -> None:
    result = bare_cli(
        "login",
        "--url",
        org.base_url,
        "--email",
        owner_email(org),
        "-o",
        "json",
        input=OWNER_PASSWORD + "\n",
    )
    assert result.code == 0, result.stderr
    assert "Password" in result.stderr
    assert OWNER_PASSWORD not in result.stdout
    assert result.json()["organization"] == org.name


def test_wrong_password_is_an_api_error(bare_cli: Cli, org: Org) -> None:
    result = bare_cli(
        "login",
        "--url",
        org.base_url,
        "--email",
        owner_email(org),
        "--password-stdin",
        input="not-the-password",
    )
    assert result.code == 1
    assert "error: wrong email or password (unauthenticated)" in result.stderr
    assert not (bare_cli.config_home / "nodeplane" / "credentials.json").exists()


def test_login_with_an_api_key(bare_cli: Cli, cli: Cli, org: Org) -> None:
    secret = cli("keys", "create", "laptop", "-o", "json").json()["secret"]
    result = bare_cli("login", "--url", org.base_url, "--token", secret)
    assert result.code == 0, result.stderr
    assert bare_cli("executors", "list", "-o", "json").code == 0

    bad = bare_cli("login", "--url", org.base_url, "--token", "npk_nope")
    assert bad.code == 1
    assert "(unauthenticated)" in bad.stderr


def test_environment_and_flags_override_the_stored_session(
    bare_cli: Cli, cli: Cli, org: Org
) -> None:
    assert (
        bare_cli(
            "login",
            "--url",
            org.base_url,
            "--email",
            owner_email(org),
            "--password-stdin",
            input=OWNER_PASSWORD,
        ).code
        == 0
    )
    secret = cli("keys", "create", "ci", "-o", "json").json()["secret"]

    bad_env = bare_cli("nodes", "list", env={"NODEPLANE_TOKEN": "nps_expired"})
    assert bad_env.code == 1
    assert "error: sign in or send a valid API key (unauthenticated)" in bad_env.stderr

    key_env = bare_cli("nodes", "list", env={"NODEPLANE_TOKEN": secret})
    assert key_env.code == 0, key_env.stderr

    # --token beats NODEPLANE_TOKEN; --url beats NODEPLANE_URL.
    flag = bare_cli(
        "nodes",
        "list",
        "--token",
        secret,
        "--url",
        org.base_url,
        env={"NODEPLANE_TOKEN": "nps_expired", "NODEPLANE_URL": "http://127.0.0.1:9"},
    )
    assert flag.code == 0, flag.stderr


def test_without_login_commands_say_what_to_do(bare_cli: Cli, org: Org) -> None:
    no_url = bare_cli("nodes", "list")
    assert no_url.code == 2
    assert "nodeplane login" in no_url.stderr

    no_token = bare_cli("nodes", "list", "--url", org.base_url)
    assert no_token.code == 2
    assert f"not logged in to {org.base_url}" in no_token.stderr
