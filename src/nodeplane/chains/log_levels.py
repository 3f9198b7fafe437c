"""Each client's log level words, normalized to `LogLevel` (issue 10, live logs).

Pure: a line in, a level (or None) out. The executor applies a session's minimum level with
these, so `warning` (Bitcoin Core), `WARN` (geth, lighthouse, reth) and `level=warning` (prysm)
all filter as `warn`. A line that names no level is None; the tailer then gives it the level of
the line it continues (an indented line under an error) or `info`.
"""

import re
from collections.abc import Callable, Mapping

from nodeplane.protocol.logs import LogLevel, level_from_word

LevelParser = Callable[[str], LogLevel | None]

# Bitcoin Core's debug categories (`-debug=<category>`): since v26 a debug message carries its
# category in brackets, `[net] …`; v25 wrote `[net:debug] …`. Litecoin Core 0.21 writes neither,
# only `Warning:` / `ERROR:` prefixes for its warnings and errors.
BITCOIN_CATEGORIES = frozenset(
    {
        "net", "tor", "mempool", "http", "bench", "zmq", "walletdb", "rpc", "estimatefee",
        "addrman", "selectcoins", "reindex", "cmpctblock", "rand", "prune", "proxy",
        "mempoolrej", "libevent", "coindb", "qt", "leveldb", "validation", "i2p", "ipc", "lock",
        "util", "blockstorage", "txreconciliation", "scan", "txpackages", "kernel", "mweb",
    }
)  # fmt: skip
_BITCOIN_TIME = r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\s+)?"
_BITCOIN_TAG = re.compile(_BITCOIN_TIME + r"\[([a-z0-9_.]+)(?::([a-z]+))?\]\s")
_BITCOIN_PREFIX = re.compile(_BITCOIN_TIME + r"(warning|error)\b:?", re.IGNORECASE)

_LEVEL_WORDS = (
    r"TRACE|TRCE|DEBUG|DEBG|DBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERRO|EROR|CRIT|CRITICAL|FATAL"
)
# geth `INFO [12-03|17:57:41.123] …`, erigon `[INFO] [12-03|17:57:41.123] …`.
_GETH = re.compile(rf"^\s*\[?({_LEVEL_WORDS})\]?\s+\[")
# Any `lvl=` / `level=` field (geth's logfmt, prysm's default format).
_LOGFMT = re.compile(r'(?:^|\s)(?:lvl|level)="?([A-Za-z]+)"?(?:\s|$)')
# lighthouse `Dec 03 17:57:41.123 WARN …`; tracing (reth, anvil) `2026-12-03T17:57:41.123Z  WARN
# target: …`; prysm's text format `[2026-12-03 17:57:41] WARN p2p: …`: a level word after the time.
_AFTER_TIME = re.compile(
    rf"^(?:\w{{3}}[ -]\d\d \d\d:\d\d:\d\d(?:\.\d+)?|\d{{4}}-\d\d-\d\d[T ][\d:.]+Z?"
    rf"|\[\d{{4}}-\d\d-\d\d [\d:.]+\])\s+({_LEVEL_WORDS})\b"
)
# nethermind `2026-12-03 17:57:41.1234|INFO|Source|…`.
_PIPES = re.compile(rf"\|\s*({_LEVEL_WORDS})\s*\|")
# lodestar `Dec-03 17:57:41.123[] info: …` (lower-case, after the module's brackets).
_LODESTAR = re.compile(r"^\w{3}-\d\d [\d:.]+\[[^\]]*\]\s+(error|warn|info|verbose|debug|trace):")
# Anything else: a bracketed or upper-case level word near the start.
_GENERIC = re.compile(rf"^.{{0,48}}?(?:\[({_LEVEL_WORDS})\]|\b({_LEVEL_WORDS})\b)")


def _first(patterns: tuple[re.Pattern[str], ...]) -> LevelParser:
    def parse(line: str) -> LogLevel | None:
        for pattern in patterns:
            match = pattern.search(line)
            if match is not None:
                word = next((g for g in match.groups() if g), None)
                if word is not None and (level := level_from_word(word)) is not None:
                    return level
        return None

    return parse


def bitcoin_level(line: str) -> LogLevel | None:
    """Bitcoin Core and descendants: `[warning]`/`[error]`, `[cat:level]`, `[cat]` (a debug
    category), `Warning:`/`ERROR:` prefixes; None for a plain line (Bitcoin Core's info)."""
    tag = _BITCOIN_TAG.match(line)
    if tag is not None:
        name, level = tag.group(1), tag.group(2)
        if level is not None:
            return level_from_word(level)
        if name in BITCOIN_CATEGORIES:
            return LogLevel.DEBUG
        named = level_from_word(name)
        if named is not None:
            return named
    prefix = _BITCOIN_PREFIX.match(line)
    if prefix is not None:
        return level_from_word(prefix.group(1))
    return None


generic_level = _first((_LOGFMT, _GENERIC))

_BY_CLIENT: Mapping[str, LevelParser] = {
    "bitcoind": bitcoin_level,
    "litecoind": bitcoin_level,
    "geth": _first((_GETH, _LOGFMT)),
    "erigon": _first((_GETH, _LOGFMT)),
    "lighthouse": _first((_AFTER_TIME,)),
    "reth": _first((_AFTER_TIME,)),
    "anvil": _first((_AFTER_TIME,)),
    "prysm": _first((_LOGFMT, _AFTER_TIME)),
    "nethermind": _first((_PIPES, _AFTER_TIME)),
    "lodestar": _first((_LODESTAR,)),
}


def level_parser(client: str) -> LevelParser:
    """How `client` (a ClientDef name) marks its levels; a generic reader for any other."""
    return _BY_CLIENT.get(client, generic_level)


def line_level(parser: LevelParser, line: str, previous: LogLevel | None) -> LogLevel:
    """The level of `line`: what it names, else its predecessor's for an indented continuation
    line (a stack trace under an error), else info."""
    found = parser(line)
    if found is not None:
        return found
    if previous is not None and line[:1] in (" ", "\t"):
        return previous
    return LogLevel.INFO
