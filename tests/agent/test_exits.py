"""Exit texts, exit lines and log tails (pure: strings and a temp file)."""

from pathlib import Path

import pytest

from nodeplane.executor.agent.backend import exit_message
from nodeplane.executor.agent.driver import ActiveState, UnitStatus
from nodeplane.executor.agent.exits import (
    TAIL_BYTES,
    ProcessExit,
    exit_line,
    exit_text,
    last_run,
    output_excerpt,
    parse_exit_line,
    read_tail,
)

# What litecoind 0.21 printed on a 40 MiB tmpfs (abridged), then the exit line systemd wrote.
DISK_FULL_RUN = """\
2026-12-02T11:21:36Z Litecoin Core version v0.21.2.1 (release build)
2026-12-02T11:21:36Z ERROR: DeserializeFileDB: Failed to open file /n/data/regtest/banlist.dat
2026-12-02T11:21:36Z Using at most 125 automatic connections (1024 file descriptors available)
2026-12-02T11:21:36Z *** Disk space is too low!
2026-12-02T11:21:36Z Error: Disk space is too low!
Error: Disk space is too low!
2026-12-02T11:21:36Z ERROR: SaveBlockToDisk: FindBlockPos failed
2026-12-02T11:21:36Z ERROR: LoadGenesisBlock: writing genesis block to disk failed
2026-12-02T11:21:36Z Shutdown: In progress...
2026-12-02T11:21:36Z scheduler thread exit
2026-12-02T11:21:36Z Shutdown: done
nodeplane: exit result=exit-code code=exited status=1
"""


@pytest.mark.parametrize(
    ("exit", "text"),
    [
        (ProcessExit("signal", None, 9), "exited (killed by SIGKILL)"),
        (ProcessExit(None, None, 9), "exited (killed by SIGKILL)"),
        (
            ProcessExit("core-dump", None, 11, core_dumped=True),
            "exited (killed by SIGSEGV, core dumped)",
        ),
        (ProcessExit("exit-code", 1, None), "exited with code 1"),
        (ProcessExit("success", 0, None), "exited with code 0"),
        (ProcessExit("timeout"), "exited (timed out)"),
        (ProcessExit("unknown"), "exited (unknown)"),
        (ProcessExit(None), "exited (unknown)"),
        (None, "exited (unknown)"),
        (ProcessExit(None, None, 200), "exited (killed by signal 200)"),
    ],
)
def test_exit_text(exit: ProcessExit | None, text: str) -> None:
    assert exit_text(exit) == text


@pytest.mark.parametrize(
    ("line", "exit"),
    [
        # As systemd's ExecStopPost= writes them.
        ("nodeplane: exit result=signal code=killed status=KILL", ProcessExit("signal", None, 9)),
        (
            "nodeplane: exit result=core-dump code=dumped status=SEGV",
            ProcessExit("core-dump", None, 11, core_dumped=True),
        ),
        ("nodeplane: exit result=exit-code code=exited status=1", ProcessExit("exit-code", 1)),
        ("nodeplane: exit result=success code= status=", ProcessExit("success")),
        ("nodeplane: exit result= code= status=", ProcessExit()),
        ("litecoind: exit result=maybe", None),
    ],
)
def test_parse_exit_line(line: str, exit: ProcessExit | None) -> None:
    assert parse_exit_line(line) == exit


@pytest.mark.parametrize(
    ("result", "code", "sig"),
    [("signal", None, 9), ("exit-code", 3, None), ("unknown", None, None)],
)
def test_exit_lines_of_the_process_driver_read_back(
    result: str, code: int | None, sig: int | None
) -> None:
    assert parse_exit_line(exit_line(result, code, sig)) == ProcessExit(result, code, sig)


def test_the_tail_is_bounded_and_cleaned(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    with log.open("w") as f:
        for i in range(20000):
            f.write(f"line {i} " + "x" * 40 + "\n")
        f.write("\x1b[31mred\x1b[0m and\ttab\x07 bell\r\n\n   \n")
    lines = read_tail(log)
    assert sum(len(line) + 1 for line in lines) <= TAIL_BYTES
    assert lines[0].startswith("line ") and lines[0].endswith("x" * 40)  # no cut line
    assert lines[-1] == "red and tab bell"
    assert read_tail(tmp_path / "missing.log") == []


def test_the_last_run_is_between_the_last_two_exit_lines() -> None:
    lines = ["old run", "nodeplane: exit result=signal code=killed status=KILL"]
    lines += [line for line in DISK_FULL_RUN.splitlines() if line]
    run = last_run(lines)
    assert run.exit == ProcessExit("exit-code", 1)
    assert run.output[0].endswith("Litecoin Core version v0.21.2.1 (release build)")
    assert "old run" not in run.output
    # A run still going: the exit is the one before it, the output is what it printed so far.
    running = last_run([*lines, "2026-12-02T11:22:00Z Litecoin Core version v0.21.2.1"])
    assert running.exit == ProcessExit("exit-code", 1)
    assert last_run(["no exit line yet"]) == last_run(["no exit line yet"])
    assert last_run(["no exit line yet"]).exit is None


def test_the_excerpt_shows_the_error_lines() -> None:
    run = last_run([line for line in DISK_FULL_RUN.splitlines() if line])
    excerpt = output_excerpt(run.output)
    assert excerpt.split(" | ") == [
        "ERROR: DeserializeFileDB: Failed to open file /n/data/regtest/banlist.dat",
        "*** Disk space is too low!",
        "Error: Disk space is too low!",
        "ERROR: SaveBlockToDisk: FindBlockPos failed",
        "ERROR: LoadGenesisBlock: writing genesis block to disk failed",
    ]
    # Without error lines, the last lines.
    assert output_excerpt([f"l{i}" for i in range(9)]) == "l4 | l5 | l6 | l7 | l8"


def test_the_message_of_a_crash_loop_explains_itself() -> None:
    run = last_run([line for line in DISK_FULL_RUN.splitlines() if line])
    given_up = UnitStatus(
        exists=True, active_state=ActiveState.FAILED, restarts=4, result="exit-code"
    )
    message = exit_message(given_up, run, ["port 19444 (node.p2p) is held by nc pid 7"])
    assert message.startswith(
        "exited with code 1; gave up after 4 restarts in a row (a crash loop): "
        "start or restart the node to try again; port 19444 (node.p2p) is held by nc pid 7. "
        "Last output: "
    )
    assert "Error: Disk space is too low!" in message
    # systemd after a restart: no status any more (Result=success), the exit line tells.
    restarting = UnitStatus(
        exists=True, active_state=ActiveState.ACTIVATING, sub_state="auto-restart", result="success"
    )
    assert exit_message(restarting, run).startswith("exited with code 1; restarting. Last output:")
    # The driver's own status wins over the log.
    killed = UnitStatus(exists=True, active_state=ActiveState.FAILED, exit_signal=9)
    assert exit_message(killed, None) == "exited (killed by SIGKILL)"
