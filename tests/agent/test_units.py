"""Rendering unit files: quoting tables and refusals (pure; systemd reads them back elsewhere)."""

from pathlib import Path

import pytest

from nodeplane.chains.base import ProcessPlan
from nodeplane.executor.agent.driver import UnitSpec
from nodeplane.executor.agent.units import (
    UnitRenderError,
    quote_env_assignment,
    quote_exec_word,
    render_unit,
    signal_name,
)
from nodeplane.protocol import RestartPolicy

# Words a user could get into a command line through overrides, and how they must be written.
EXEC_WORDS = [
    ("plain", '"plain"'),
    ("", '""'),
    ("two words", '"two words"'),
    ("$(rm -rf /)", '"$$(rm -rf /)"'),
    ("`id`", '"`id`"'),
    ('"; rm -rf / #', '"\\"; rm -rf / #"'),
    (";", '";"'),
    ("%h", '"%%h"'),
    ("%%", '"%%%%"'),
    ("${HOME}", '"$${HOME}"'),
    ("$HOME", '"$$HOME"'),
    ("back\\slash", '"back\\\\slash"'),
    ("ends\\", '"ends\\\\"'),
    ("\\n", '"\\\\n"'),
    ("it's", '"it\'s"'),
    ("-flag=a b", '"-flag=a b"'),
    ("ünïcödé → 漢字 🚀", '"ünïcödé → 漢字 🚀"'),
]

REFUSED_TEXT = [
    "line\nbreak",
    "carriage\rreturn",
    "nul\x00",
    "tab\t",
    "escape\x1b[31m",
    "c1\x85",
    "del\x7f",
    "separator\u2028",
    "surrogate\ud800",
]


@pytest.mark.parametrize(("word", "quoted"), EXEC_WORDS)
def test_exec_word_quoting(word: str, quoted: str) -> None:
    assert quote_exec_word(word) == quoted


@pytest.mark.parametrize("word", REFUSED_TEXT)
def test_exec_word_refuses_control_characters(word: str) -> None:
    with pytest.raises(UnitRenderError):
        quote_exec_word(word)


@pytest.mark.parametrize(
    ("key", "value", "quoted"),
    [
        ("A", "plain", '"A=plain"'),
        ("A", "$HOME", '"A=$HOME"'),  # no $ expansion in Environment=: written as is
        ("A", '"x"', '"A=\\"x\\""'),
        ("A", "100%", '"A=100%%"'),
        ("A", "a\\b", '"A=a\\\\b"'),
        ("_B1", "x y", '"_B1=x y"'),
    ],
)
def test_env_quoting(key: str, value: str, quoted: str) -> None:
    assert quote_env_assignment(key, value) == quoted


@pytest.mark.parametrize("key", ["", "1A", "A=B", "A B", "A-B", "A\n"])
def test_env_refuses_bad_names(key: str) -> None:
    with pytest.raises(UnitRenderError):
        quote_env_assignment(key, "x")


@pytest.mark.parametrize("value", REFUSED_TEXT)
def test_env_refuses_control_characters(value: str) -> None:
    with pytest.raises(UnitRenderError):
        quote_env_assignment("A", value)


@pytest.mark.parametrize(
    ("given", "name"),
    [("SIGTERM", "SIGTERM"), ("INT", "SIGINT"), ("sigkill", "SIGKILL"), ("2", "SIGINT")],
)
def test_signal_names(given: str, name: str) -> None:
    assert signal_name(given) == name


@pytest.mark.parametrize("given", ["SIGFOO", "", "99999", "TERM\n"])
def test_signal_names_refused(given: str) -> None:
    with pytest.raises(UnitRenderError):
        signal_name(given)


def spec(**changes: object) -> UnitSpec:
    """A unit spec with sane defaults; `changes` replace UnitSpec or ProcessPlan fields."""
    plan_fields = {
        "role": "node",
        "client": "litecoind",
        "version": "0.21",
        "argv": ("/usr/bin/litecoind", "-datadir=/var/lib/nodeplane/nodes/ltc/data"),
        "working_dir": Path("/var/lib/nodeplane/nodes/ltc/data"),
        "env": {},
        "stop_signal": "SIGINT",
        "stop_timeout_s": 600,
    }
    unit_fields: dict[str, object] = {
        "name": "nodeplane-ltc-node.service",
        "node": "ltc",
        "role": "node",
        "restart_policy": RestartPolicy.ON_FAILURE,
    }
    for key, value in changes.items():
        (plan_fields if key in plan_fields else unit_fields)[key] = value
    return UnitSpec(process=ProcessPlan(**plan_fields), **unit_fields)  # type: ignore[arg-type]


def settings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def test_render_full_unit() -> None:
    text = render_unit(
        spec(
            env={"B": "2", "A": "1"},
            cpu_limit=1.5,
            memory_limit_bytes=2 * 1024**3,
            log_file=Path("/var/lib/nodeplane/nodes/ltc/logs/node.log"),
            restart_delay_s=2.5,
        )
    )
    assert settings(text) == [
        "Description=nodeplane ltc node (litecoind 0.21)",
        # Five quick runs of up to 30 s plus the 2.5 s restart delay: a crash loop, given up.
        "StartLimitIntervalSec=162500ms",
        "StartLimitBurst=5",
        "Type=simple",
        'ExecStart="/usr/bin/litecoind" "-datadir=/var/lib/nodeplane/nodes/ltc/data"',
        "WorkingDirectory=/var/lib/nodeplane/nodes/ltc/data",
        'Environment="A=1"',
        'Environment="B=2"',
        "Restart=on-failure",
        "RestartSec=2500ms",
        "KillSignal=SIGINT",
        "TimeoutStopSec=600s",
        'ExecStopPost=-/bin/echo "nodeplane: exit result=${SERVICE_RESULT} code=${EXIT_CODE} '
        'status=${EXIT_STATUS}"',
        "CPUAccounting=yes",
        "MemoryAccounting=yes",
        "CPUQuota=150%",
        "MemoryMax=2147483648",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "StandardOutput=append:/var/lib/nodeplane/nodes/ltc/logs/node.log",
        "StandardError=append:/var/lib/nodeplane/nodes/ltc/logs/node.log",
        "WantedBy=multi-user.target",
    ]
    assert text.index("[Unit]") < text.index("[Service]") < text.index("[Install]")


@pytest.mark.parametrize(
    ("policy", "line"),
    [
        (RestartPolicy.ALWAYS, "Restart=always"),
        (RestartPolicy.ON_FAILURE, "Restart=on-failure"),
        (RestartPolicy.NO, "Restart=no"),
    ],
)
def test_restart_policy(policy: RestartPolicy, line: str) -> None:
    assert line in settings(render_unit(spec(restart_policy=policy)))


def test_start_limit_follows_restart_delay_and_stable_window() -> None:
    lines = settings(render_unit(spec(restart_delay_s=0.2, stable_after_s=1.0)))
    assert "StartLimitIntervalSec=6s" in lines and "StartLimitBurst=5" in lines


def test_journal_by_default_and_no_limits() -> None:
    lines = settings(render_unit(spec()))
    assert "StandardOutput=journal" in lines and "StandardError=journal" in lines
    assert not [line for line in lines if line.startswith(("CPUQuota=", "MemoryMax="))]


def test_tiny_cpu_limit_rounds_up_to_one_percent() -> None:
    assert "CPUQuota=1%" in settings(render_unit(spec(cpu_limit=0.001)))


def test_private_tmp_yields_to_paths_under_tmp() -> None:
    """PrivateTmp=yes would hide a node that lives under /tmp (as test nodes do) from itself."""
    under_tmp = spec(working_dir=Path("/tmp/x/data"))
    assert "PrivateTmp=yes" not in settings(render_unit(under_tmp))
    arg_under_tmp = spec(argv=("/usr/bin/x", "-datadir=/var/tmp/x"))
    assert "PrivateTmp=yes" not in settings(render_unit(arg_under_tmp))
    assert "PrivateTmp=yes" in settings(render_unit(spec(argv=("/usr/bin/x", "-tmp=tmp"))))


def test_percent_in_plain_values_is_doubled() -> None:
    text = render_unit(
        spec(working_dir=Path("/srv/100%/data"), log_file=Path("/srv/%h/node.log"), version="1%")
    )
    lines = settings(text)
    assert "WorkingDirectory=/srv/100%%/data" in lines
    assert "StandardOutput=append:/srv/%%h/node.log" in lines
    assert "Description=nodeplane ltc node (litecoind 1%%)" in lines


@pytest.mark.parametrize(
    "changes",
    [
        {"argv": ()},
        {"argv": ("litecoind",)},  # not absolute
        {"argv": ("-/usr/bin/litecoind",)},  # would be read as a prefix flag
        {"argv": ("/usr/bin/litecoind", "-rpcpassword=a\nExecStartPre=/bin/sh")},
        {"working_dir": Path("relative/dir")},
        {"working_dir": Path("/srv/a\nb")},
        {"working_dir": Path("/srv/ends/with\\")},
        {"working_dir": Path("/srv/trailing ")},
        {"working_dir": Path("/srv/../etc")},
        {"log_file": Path("logs/node.log")},
        {"log_file": Path("/srv/x\n.log")},
        {"env": {"BAD NAME": "x"}},
        {"env": {"A": "x\ny"}},
        {"stop_signal": "SIGNOPE"},
        {"stop_timeout_s": 0},
        {"cpu_limit": 0.0},
        {"cpu_limit": float("nan")},
        {"memory_limit_bytes": 0},
        {"restart_delay_s": -1.0},
        {"restart_policy": "sometimes"},
        {"name": "nodeplane-../../etc/passwd.service"},
        {"name": "other.service"},
        {"node": "Bad Node"},
        {"version": "1\n[Service]"},
    ],
)
def test_refuses_unsafe_values(changes: dict[str, object]) -> None:
    with pytest.raises(UnitRenderError):
        render_unit(spec(**changes))
