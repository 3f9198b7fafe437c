"""Each client's level words normalize to one LogLevel (pure table tests)."""

import pytest

from nodeplane.chains.log_levels import level_parser, line_level
from nodeplane.protocol.logs import LogLevel

D, INF, W, E = LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR

CASES = [
    # Litecoin Core 0.21 / Bitcoin Core: plain lines are info (None here), prefixes and tags.
    ("litecoind", "2026-12-03T17:57:41Z UpdateTip: new best=abc height=1", None),
    ("litecoind", "2026-12-03T17:57:41Z Warning: unknown new rules activated", W),
    ("litecoind", "2026-12-03T17:57:41Z ERROR: ReadBlockFromDisk: failed", E),
    ("bitcoind", "2026-12-03T17:57:41Z [warning] Disk space is low", W),
    ("bitcoind", "2026-12-03T17:57:41Z [error] Unable to bind", E),
    ("bitcoind", "2026-12-03T17:57:41Z [net] connection from peer=3", D),
    ("bitcoind", "2026-12-03T17:57:41.123456Z [mempool:debug] AcceptToMemoryPool", D),
    ("bitcoind", "2026-12-03T17:57:41Z [net:info] something", INF),
    ("bitcoind", "2026-12-03T17:57:41Z [net:warning] something", W),
    ("bitcoind", "[net] no timestamp", D),
    ("bitcoind", "2026-12-03T17:57:41Z [msghand] unknown thread name tag", None),
    # geth and erigon.
    ("geth", "WARN [12-03|17:57:41.123] Snapshot extension registration failed", W),
    ("geth", "INFO [12-03|17:57:41.123] Starting Geth on Ethereum mainnet...", INF),
    ("geth", "DEBUG[12-03|17:57:41.123] Served eth_blockNumber", None),
    ("geth", "DEBUG [12-03|17:57:41.123] Served eth_blockNumber", D),
    ("geth", "TRACE [12-03|17:57:41.123] x", D),
    ("geth", "ERROR [12-03|17:57:41.123] Beacon backfilling failed", E),
    ("geth", "CRIT [12-03|17:57:41.123] Failed to start", E),
    ("geth", 't=2026-12-03T17:57:41+0000 lvl=warn msg="Low disk"', W),
    ("erigon", "[WARN] [12-03|17:57:41.123] [1/15 Snapshots] slow", W),
    ("erigon", "[DBUG] [12-03|17:57:41.123] x", D),
    # lighthouse (slog's four-letter words).
    ("lighthouse", "Dec 03 17:57:41.123 WARN Low peer count, peer_count: 1", W),
    ("lighthouse", "Dec 03 17:57:41.123 INFO Synced, slot: 1", INF),
    ("lighthouse", "Dec 03 17:57:41.123 DEBG Processed HTTP API request", D),
    ("lighthouse", "Dec 03 17:57:41.123 ERRO Error connecting to eth1 node", E),
    ("lighthouse", "Dec 03 17:57:41.123 CRIT Beacon block processing error", E),
    # tracing (reth, anvil).
    ("reth", "2026-12-03T17:57:41.123456Z  WARN reth::cli: low disk", W),
    ("reth", "2026-12-03T17:57:41.123456Z TRACE net: x", D),
    ("anvil", "2026-12-03T17:57:41.123456Z  INFO anvil: listening", INF),
    # prysm, nethermind, lodestar.
    ("prysm", 'time="2026-12-03 17:57:41" level=warning msg="No peers" prefix=p2p', W),
    ("prysm", 'time="2026-12-03 17:57:41" level=error msg="x"', E),
    ("prysm", "[2026-12-03 17:57:41] DEBUG sync: x", D),
    ("nethermind", "2026-12-03 17:57:41.1234|WARN|Synchronizer|slow", W),
    ("nethermind", "2026-12-03 17:57:41.1234|INFO|Init|Started", INF),
    ("lodestar", "Dec-03 17:57:41.123[] warn: Low peer count", W),
    ("lodestar", "Dec-03 17:57:41.123[chain] verbose: x", D),
    ("lodestar", "Dec-03 17:57:41.123[] error: x", E),
    # an unknown client: a level word near the start, or logfmt.
    ("someclient", "12:00 [ERROR] boom", E),
    ("someclient", "level=debug msg=x", D),
    ("someclient", "no level at all here", None),
]


@pytest.mark.parametrize(("client", "line", "level"), CASES)
def test_each_clients_level_words_normalize(client: str, line: str, level: LogLevel | None) -> None:
    assert level_parser(client)(line) == level


def test_a_line_without_a_level_is_info_or_continues_the_previous_one() -> None:
    parse = level_parser("geth")
    assert line_level(parse, "plain text", None) is INF
    assert line_level(parse, "plain text", E) is INF
    assert line_level(parse, "    at frame 3", E) is E
    assert line_level(parse, "\tat frame 3", W) is W
    assert line_level(parse, "WARN [12-03|17:57:41.123] x", E) is W
