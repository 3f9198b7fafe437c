"""Failures a user runs into read as one clear line with a stable exit code, never a traceback."""

from pathlib import Path

import pytest

from tests.cli.conftest import Cli, deploy
from tests.support.fleet import FakeExecutor, Org
from tests.support.server import free_port


def test_nothing_listening_is_a_connection_failure(cli: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("nodes", "list", "--url", url)
    assert result.code == 3
    assert result.stderr.startswith(f"error: could not connect to {url}")
    assert "is the control plane running" in result.stderr


def test_a_url_that_is_not_a_control_plane(cli: Cli, org: Org) -> None:
    result = cli("executors", "list", "--url", org.base_url + "/somewhere/else")
    assert result.code == 3
    assert "is this the URL of a nodeplane control plane?" in result.stderr


def test_https_against_plain_http_is_a_tls_failure(cli: Cli, org: Org) -> None:
    url = org.base_url.replace("http://", "https://")
    result = cli("nodes", "list", "--url", url)
    assert result.code == 3
    assert "TLS handshake" in result.stderr
    assert "http:// versus https://" in result.stderr


def test_a_malformed_url(cli: Cli) -> None:
    result = cli("nodes", "list", "--url", "localhost:8080")
    assert result.code == 3
    assert "invalid control-plane URL 'localhost:8080'" in result.stderr


def test_a_bad_key_is_unauthenticated(cli: Cli) -> None:
    result = cli("nodes", "list", "--token", "npk_not-a-real-key", "-o", "json")
    assert result.code == 1
    assert result.stdout == ""
    assert "error: sign in or send a valid API key (unauthenticated)" in result.stderr
    assert "hint:" in result.stderr


def test_an_unknown_node(cli: Cli, executor: FakeExecutor) -> None:
    for args in (
        ("nodes", "get", "nope"),
        ("nodes", "stop", "nope", "--wait"),
        ("nodes", "get", "00000000-0000-4000-8000-000000000000"),
    ):
        result = cli(*args)
        assert result.code == 1, args
        assert (
            result.stderr.startswith("error: node '") and "not found (not_found)" in result.stderr
        )

    on_executor = cli("nodes", "get", "nope", "--executor", executor.name)
    assert f"node 'nope' not found on executor '{executor.name}' (not_found)" in on_executor.stderr
    unknown_executor = cli("nodes", "get", "nope", "--executor", "elsewhere")
    assert unknown_executor.code == 1
    assert "executor 'elsewhere' not found" in unknown_executor.stderr


def test_a_node_name_is_matched_exactly(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    deploy(org, executor, "ltc-10")
    # The API's name filter matches substrings; "ltc-1" must not pick up "ltc-10".
    result = cli("nodes", "get", "ltc-1")
    assert result.code == 1
    assert "node 'ltc-1' not found" in result.stderr


def test_api_refusals_carry_their_code(cli: Cli, executor: FakeExecutor) -> None:
    result = cli(
        "nodes",
        "deploy",
        "btc-1",
        "--chain",
        "bitcoin",
        "--network",
        "mainnet",
        "--client",
        "node=bitcoind:27.0",
    )
    assert result.code == 1
    assert "(chain_not_supported_by_executor)" in result.stderr

    managed = cli(
        "nodes",
        "deploy",
        "ltc-1",
        "--chain",
        "litecoin",
        "--network",
        "regtest",
        "--client",
        "node=litecoind:0.21.4",
        "--override-arg",
        "node=-datadir=/etc",
    )
    assert managed.code == 1
    assert "(invalid_node_config)" in managed.stderr
    assert "datadir" in managed.stderr


def test_usage_errors_exit_2(cli: Cli, executor: FakeExecutor, tmp_path: Path) -> None:
    bad_client = cli(
        "nodes",
        "deploy",
        "x",
        "--chain",
        "litecoin",
        "--network",
        "regtest",
        "--client",
        "litecoind",
    )
    assert bad_client.code == 2
    assert "role=name:version" in bad_client.stderr

    missing = cli("nodes", "deploy", "x", "--chain", "litecoin")
    assert missing.code == 2
    assert "--network" in missing.stderr

    spec = tmp_path / "spec.json"
    spec.write_text("{not json")
    assert cli("nodes", "deploy", "x", "--spec-file", str(spec)).code == 2

    assert cli("nodes", "list", "--output", "yaml").code == 2


@pytest.mark.process
def test_an_agent_error_naming_a_long_path_is_one_line_and_not_markup(
    bare_cli: Cli, tmp_path: Path
) -> None:
    """Found when the suite ran in xdist workers (longer temp paths): the agent's errors were
    wrapped at 80 columns, cutting the data directory's path in two, and `[...]` in a path
    would have been taken for Rich markup."""
    config = tmp_path / ("a-long-directory-name-" * 4 + "[red]kept[/red]") / "agent.toml"
    result = bare_cli("agent", "run", "--config", str(config))
    assert result.code == 2
    assert result.stderr == f"error: {config}: no such file\n"
